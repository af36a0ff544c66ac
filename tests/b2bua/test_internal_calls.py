"""Internal calls: the routing decision, on real loopback sockets with a fake directory.

Two organisations (acme, beta) each with users; phones and the trunk are raw UDP
sockets. A user dialling an extension (or a device's username) of their own
organisation rings that user's registered devices through callrec, with the caller's
identity asserted; anything else goes to the trunk as before. Also `fork_targets`,
the one function that turns bindings into branches for calls in and internal calls.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from b2bua.call import Call
from b2bua.digest import build_authorization, compute_ha1, preferred_challenge
from b2bua.message import NameAddr, SipRequest
from b2bua.peer import Peer
from b2bua.server import B2bua, fork_targets
from testkit.waiting import wait_until_async
from tests.b2bua.fakes import (
    HOST,
    FakeCredentials,
    FakeMediaFactory,
    FakeOrganisation,
    FakeUser,
    NoCallsDirectory,
    UdpPeer,
    running_b2bua,
    udp_peer,
)

ACME = FakeOrganisation(1, "acme.example")
BETA = FakeOrganisation(2, "beta.example")
ORGS = {org.domain: org for org in (ACME, BETA)}
SDP = (
    f"v=0\r\no=ph 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


@dataclass(frozen=True)
class Binding:
    contact: str
    received: str
    expires_at: float = 4e9
    call_id: str = "reg"
    cseq: int = 1


class TwoOrgDirectory(NoCallsDirectory):
    """Users by (org, extension), device usernames, bindings by (org, extension)."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[tuple[int, str], FakeUser] = {}
        self.devices: dict[tuple[int, str], FakeUser] = {}
        self.registered: dict[tuple[int, str], list[Binding]] = {}
        self.cdrs: list[tuple[int, dict[str, Any]]] = []

    def add(
        self, org: FakeOrganisation, user_id: int, extension: str, name: str, mode: str
    ) -> None:
        self.users[(org.id, extension)] = FakeUser(user_id, extension, name, mode, org.id)

    async def organisation_for_domain(self, domain: str | None) -> FakeOrganisation | None:
        return ORGS.get(domain or "")

    async def find_credentials(self, org_id: int, username: str) -> FakeCredentials | None:
        user = self.users.get((org_id, username)) or self.devices.get((org_id, username))
        if user is None:
            return None
        realm = next(org.domain for org in ORGS.values() if org.id == org_id)
        password = f"pw-{username}"
        return FakeCredentials(
            user,
            realm,
            compute_ha1("MD5", username, realm, password),
            compute_ha1("SHA-256", username, realm, password),
        )

    async def get_user(self, org_id: int, extension: str) -> FakeUser | None:
        return self.users.get((org_id, extension))

    async def bindings(self, org_id: int, extension: str, now: float) -> list[Binding]:
        return list(self.registered.get((org_id, extension), []))

    async def create_call(self, org_id: int, **fields: Any) -> int:
        self.cdrs.append((org_id, fields))
        return len(self.cdrs)


@dataclass
class Rig:
    b2bua: B2bua
    directory: TwoOrgDirectory
    trunk: UdpPeer
    tasks: list[asyncio.Task[Any]]
    peers: list[UdpPeer] = field(default_factory=list)

    async def phone(self, org: FakeOrganisation, extension: str) -> UdpPeer:
        """A phone of `extension` registered (in the directory) from a fresh UDP port."""
        peer = await udp_peer()
        self.peers.append(peer)
        self.directory.registered.setdefault((org.id, extension), []).append(
            Binding(f"sip:{extension}@{HOST}:{peer.port}", f"{HOST}:{peer.port};transport=udp")
        )
        return peer

    async def dial(
        self,
        phone: UdpPeer,
        org: FakeOrganisation,
        caller: str,
        dialled: str,
        *,
        username: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> str:
        """Send an authenticated INVITE from `phone`; its Call-ID."""
        username = username or caller
        call_id = f"int-{uuid.uuid4().hex}"
        uri = f"sip:{dialled}@{org.domain}"

        def invite(cseq: int, auth: str | None) -> bytes:
            lines = [
                f"INVITE {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {HOST}:{phone.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                "Max-Forwards: 70",
                f'From: "Claimed Name" <sip:{caller}@{org.domain}>;tag=ph-{call_id[:12]}',
                f"To: <sip:{dialled}@{org.domain}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} INVITE",
                f"Contact: <sip:{caller}@{HOST}:{phone.port}>",
                "P-Asserted-Identity: <sip:999@acme.example>",
                *extra,
                "Content-Type: application/sdp",
            ]
            if auth is not None:
                lines.append(f"Proxy-Authorization: {auth}")
            body = SDP.encode()
            head = "\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""]).encode()
            return head + body

        phone.send(invite(1, None), self.b2bua.port)
        _, challenge = await phone.response(407)
        offered = preferred_challenge(challenge.headers.get_all("Proxy-Authenticate"))
        auth = build_authorization(offered, "INVITE", uri, username, f"pw-{username}")
        phone.send(invite(2, auth), self.b2bua.port)
        return call_id

    def call(self, call_id: str) -> Call:
        return next(c for c in self.b2bua.calls if c.call_id == call_id)


async def next_invite(peer: UdpPeer, timeout: float = 5.0) -> SipRequest:
    while True:
        _, message = await peer.next(timeout)
        if isinstance(message, SipRequest) and message.method == "INVITE":
            return message


def answer(invite: SipRequest, status: int, reason: str, *, sdp: bool = False) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"{name}: {invite.headers.get(name)}" for name in ("Via", "From", "Call-ID", "CSeq")]
    lines += [f"To: {invite.headers.get('To')};tag=callee", "Contact: <sip:201@127.0.0.1>"]
    body = SDP.encode() if sdp else b""
    if sdp:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""]).encode() + body


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    trunk = await udp_peer()
    tasks: list[asyncio.Task[Any]] = []
    directory = TwoOrgDirectory()
    directory.add(ACME, 1, "201", "Anna Acme", "never")
    directory.add(ACME, 2, "202", "Bob Acme", "on-demand")
    directory.add(ACME, 3, "203", "Cora Acme", "always")
    directory.add(BETA, 11, "202", "Bert Beta", "never")
    directory.devices[(ACME.id, "201-mobile")] = directory.users[(ACME.id, "201")]
    sip_extra = 'realm = "acme.example"\n'
    rig = None
    try:
        async with running_b2bua(
            tmp_path, directory, FakeMediaFactory(), trunk, tasks, sip_extra=sip_extra
        ) as b2bua:
            rig = Rig(b2bua, directory, trunk, tasks)
            yield rig
    finally:
        for peer in (trunk, *(rig.peers if rig else [])):
            peer.close()


# -- the fork ---------------------------------------------------------------------------


def test_fork_targets_keeps_the_order_skips_the_calling_device_and_caps() -> None:
    bindings = [
        Binding("sip:a@h", "127.0.0.1:5001;transport=udp"),
        Binding("sip:bad@h", "not an address"),
        Binding("sip:b@h", "127.0.0.1:5002;transport=udp"),
        Binding("sip:c@h", "127.0.0.1:5003;transport=tcp"),
    ]
    all_ = fork_targets(bindings, limit=10)
    assert [t.request_uri for t in all_] == ["sip:a@h", "sip:b@h", "sip:c@h"]
    assert all_[2].peer == Peer("127.0.0.1", 5003, "tcp")
    calling = Peer("127.0.0.1", 5002, "udp")
    assert [t.request_uri for t in fork_targets(bindings, limit=10, exclude=calling)] == [
        "sip:a@h",
        "sip:c@h",
    ]
    # The same address over the other transport is another binding.
    assert len(fork_targets(bindings, limit=10, exclude=Peer("127.0.0.1", 5003, "udp"))) == 3
    assert [t.request_uri for t in fork_targets(bindings, limit=1, exclude=calling)] == ["sip:a@h"]
    assert fork_targets([], limit=5) == []


# -- routing ----------------------------------------------------------------------------


async def test_a_user_calling_a_colleague_rings_every_device_of_theirs(rig: Rig) -> None:
    desk, mobile = await rig.phone(ACME, "201"), await rig.phone(ACME, "201")
    caller = await rig.phone(ACME, "202")
    call_id = await rig.dial(caller, ACME, "202", "201")
    rung = [await next_invite(desk), await next_invite(mobile)]
    assert rig.trunk.received.empty()
    for invite in rung:
        # The caller's extension and name, as the directory has them, not the phone's.
        from_ = NameAddr.parse(invite.headers.get("From") or "")
        assert (from_.display, from_.uri) == ("Bob Acme", "sip:202@acme.example")
        assert invite.headers.get("P-Asserted-Identity") is None
        assert invite.uri.startswith("sip:201@127.0.0.1:")
        assert invite.headers.get("Call-ID") != call_id  # leg B is callrec's own dialog
    call = rig.call(call_id)
    assert call.direction == "internal" and call.org_id == ACME.id
    # 201 never, 202 on-demand: on demand, 202's leg (a) watched, filed under 202.
    assert (call.recording_mode, call.owner_ext, call.internal_leg) == ("on-demand", "202", "a")
    assert call.feature_code_legs == ("a",)
    # The desk answers; the mobile is cancelled; the caller gets the 200.
    desk.send(answer(rung[0], 180, "Ringing"), rig.b2bua.port)
    mobile.send(answer(rung[1], 180, "Ringing"), rig.b2bua.port)
    desk.send(answer(rung[0], 200, "OK", sdp=True), rig.b2bua.port)
    _, ok = await caller.response(200)
    assert b"m=audio 40000 " in ok.body  # media anchored on the relay's leg-a port
    while True:
        _, message = await mobile.next()
        if isinstance(message, SipRequest) and message.method == "CANCEL":
            break
    await wait_until_async(lambda: rig.directory.cdrs != [], timeout=5, what="the CDR")
    org_id, cdr = rig.directory.cdrs[0]
    assert org_id == ACME.id
    assert cdr["direction"] == "internal"
    assert (cdr["caller_ext"], cdr["caller_name"]) == ("202", "Bob Acme")
    assert (cdr["callee_ext"], cdr["callee_name"]) == ("201", "Anna Acme")


async def test_a_busy_colleague_is_busy_for_the_caller(rig: Rig) -> None:
    callee = await rig.phone(ACME, "201")
    caller = await rig.phone(ACME, "202")
    await rig.dial(caller, ACME, "202", "201")
    invite = await next_invite(callee)
    callee.send(answer(invite, 486, "Busy Here"), rig.b2bua.port)
    _, busy = await caller.response(486)
    assert busy.status == 486


async def test_a_colleague_with_no_registered_device_is_480(rig: Rig) -> None:
    caller = await rig.phone(ACME, "202")
    await rig.dial(caller, ACME, "202", "201")
    _, unavailable = await caller.response(480)
    assert unavailable.reason == "Temporarily Unavailable"
    assert rig.trunk.received.empty()


async def test_another_organisations_extension_is_a_number_for_the_trunk(rig: Rig) -> None:
    acme_201 = await rig.phone(ACME, "201")
    beta_caller = await rig.phone(BETA, "202")
    await rig.dial(beta_caller, BETA, "202", "201")
    invite = await next_invite(rig.trunk)
    assert invite.uri.startswith("sip:201@")  # to the trunk, as any number
    assert acme_201.received.empty()
    call = next(iter(rig.b2bua.calls))
    assert call.direction == "outbound" and call.org_id == BETA.id


async def test_a_device_username_rings_its_user(rig: Rig) -> None:
    desk = await rig.phone(ACME, "201")
    caller = await rig.phone(ACME, "203")
    call_id = await rig.dial(caller, ACME, "203", "201-mobile")
    await next_invite(desk)
    call = rig.call(call_id)
    # 203 always: the call is recorded from the answer, filed under 203, nothing toggles.
    assert (call.direction, call.callee.extension, call.recording_mode) == (
        "internal",
        "201",
        "always",
    )
    assert (call.owner_ext, call.internal_leg, call.feature_code_legs) == ("203", "a", ())


async def test_calling_yourself_rings_your_other_devices_only(rig: Rig) -> None:
    desk, mobile = await rig.phone(ACME, "202"), await rig.phone(ACME, "202")
    call_id = await rig.dial(desk, ACME, "202", "202")
    await next_invite(mobile)
    call = rig.call(call_id)
    assert [b.target.peer.port for b in call.branches] == [mobile.port]
    # Both legs are 202's (on-demand): the feature code works from either phone.
    assert call.feature_code_legs == ("a", "b")


async def test_calling_yourself_with_one_device_is_busy(rig: Rig) -> None:
    desk = await rig.phone(ACME, "202")
    await rig.dial(desk, ACME, "202", "202")
    _, busy = await desk.response(486)
    assert "No other device" in (busy.headers.get("Warning") or "")
    assert rig.trunk.received.empty()


async def test_privacy_hides_the_caller_from_the_colleague(rig: Rig) -> None:
    callee = await rig.phone(ACME, "201")
    caller = await rig.phone(ACME, "202")
    await rig.dial(caller, ACME, "202", "201", extra=("Privacy: id",))
    invite = await next_invite(callee)
    assert "anonymous" in (invite.headers.get("From") or "").lower()
    # The phone is outside the trust domain: no P-Asserted-Identity names the caller.
    assert invite.headers.get("P-Asserted-Identity") is None
