"""The B2BUA in this process on real loopback sockets: a phone and a trunk as raw UDP
sockets, a directory whose lookups the test holds back.

- A challenged INVITE retransmitted before and after its 407 gets the one 407 (one
  nonce), and its ACK stops the 407's retransmissions.
- An INVITE the caller gave up on while it was being set up (CANCEL, or a set-up that
  waited past the bound) never reaches the trunk.
- The CDR is written without holding the INVITE, its updates after it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from b2bua.digest import build_authorization, compute_ha1, preferred_challenge
from b2bua.message import SipMessage, SipRequest, SipResponse, parse_message
from b2bua.server import B2bua
from testkit.waiting import wait_until_async
from tests.b2bua.fakes import (
    HOST,
    FakeCredentials,
    FakeMedia,
    FakeMediaFactory,
    FakeOrganisation,
    FakeUser,
    NoCallsDirectory,
    UdpPeer,
    running_b2bua,
    udp_peer,
)

PASSWORD = "pw-201"


class GatedDirectory(NoCallsDirectory):
    """User 201; lookups and CDR creation wait while their gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = asyncio.Event()
        self.cdr_writes = asyncio.Event()
        self.lookups_started = 0
        self.lookups.set()
        self.cdr_writes.set()

    async def organisation_for_domain(self, domain: str | None) -> FakeOrganisation:
        return FakeOrganisation()  # one organisation: any domain is its

    async def find_credentials(self, org_id: int, username: str) -> FakeCredentials | None:
        self.lookups_started += 1
        await self.lookups.wait()
        if username != "201":
            return None
        return FakeCredentials(
            FakeUser(1, "201", "Alice"),
            "callrec",
            compute_ha1("MD5", "201", "callrec", PASSWORD),
            compute_ha1("SHA-256", "201", "callrec", PASSWORD),
        )

    async def get_user(self, org_id: int, extension: str) -> None:
        return None

    async def bindings(self, org_id: int, extension: str, now: float) -> list[Any]:
        return []

    async def create_call(self, org_id: int, **fields: Any) -> int:
        await self.cdr_writes.wait()
        self.cdr_log.append(("create", fields))
        return 7


@dataclass
class Rig:
    b2bua: B2bua
    directory: GatedDirectory
    media: FakeMediaFactory
    phone: UdpPeer
    trunk: UdpPeer
    tasks: list[asyncio.Task[Any]]

    def invite(self, branch: str, call_id: str, cseq: int, auth: str | None = None) -> bytes:
        port = self.b2bua.port
        lines = [
            f"INVITE sip:300@{HOST}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.phone.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:201@{HOST}>;tag=ph-{call_id}",
            f"To: <sip:300@{HOST}:{port}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:201@{HOST}:{self.phone.port}>",
        ]
        if auth is not None:
            lines.append(f"Proxy-Authorization: {auth}")
        return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()

    def in_transaction(self, kind: str, request: bytes, method: str, to: str | None) -> bytes:
        """An ACK or CANCEL for the INVITE `request` (same branch)."""
        invite = parse_message(request)
        assert isinstance(invite, SipRequest)
        lines = [f"{method} {invite.uri} SIP/2.0", f"Via: {invite.headers.get('Via')}"]
        lines += [f"From: {invite.headers.get('From')}", f"To: {to or invite.headers.get('To')}"]
        cseq = (invite.headers.get("CSeq") or "1").split()[0]
        lines += [f"Call-ID: {invite.headers.get('Call-ID')}", f"CSeq: {cseq} {method}"]
        return ("\r\n".join([*lines, "Max-Forwards: 70", "Content-Length: 0", "", ""])).encode()

    def send(self, data: bytes) -> None:
        self.phone.send(data, self.b2bua.port)

    def authorization(self, challenge: SipResponse) -> str:
        return build_authorization(
            preferred_challenge(challenge.headers.get_all("Proxy-Authenticate")),
            "INVITE",
            f"sip:300@{HOST}:{self.b2bua.port}",
            "201",
            PASSWORD,
        )

    async def setups_done(self) -> None:
        """Every call set-up the B2BUA started has finished."""
        setups = [t for t in self.tasks if "_setup_call" in repr(t.get_coro())]
        await asyncio.gather(*setups)

    def trunk_invites(self) -> list[SipMessage]:
        messages: list[SipMessage] = []
        while not self.trunk.received.empty():
            messages.append(self.trunk.received.get_nowait()[1])
        return [m for m in messages if isinstance(m, SipRequest) and m.method == "INVITE"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    trunk = await udp_peer()
    tasks: list[asyncio.Task[Any]] = []
    directory, media = GatedDirectory(), FakeMediaFactory()
    phone = await udp_peer()
    try:
        async with running_b2bua(tmp_path, directory, media, trunk, tasks) as b2bua:
            try:
                yield Rig(b2bua, directory, media, phone, trunk, tasks)
            finally:
                directory.lookups.set()
                directory.cdr_writes.set()
    finally:
        phone.close()
        trunk.close()


def busy_for(invite: SipRequest) -> bytes:
    lines = ["SIP/2.0 486 Busy Here"]
    lines += [f"{name}: {invite.headers.get(name)}" for name in ("Via", "From", "Call-ID", "CSeq")]
    lines += [f"To: {invite.headers.get('To')};tag=trunk", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


async def challenged(rig: Rig, call_id: str) -> tuple[bytes, SipResponse]:
    """Send the first INVITE of `call_id` and take its 407."""
    invite = rig.invite(f"z9hG4bK-{uuid.uuid4().hex}", call_id, 1)
    rig.send(invite)
    _, response = await rig.phone.response(407)
    rig.send(rig.in_transaction("ack", invite, "ACK", response.headers.get("To")))
    return invite, response


async def test_retransmitted_invite_gets_the_one_challenge_and_the_ack_ends_it(rig: Rig) -> None:
    rig.directory.lookups.clear()
    # Credentials on an old nonce: the 407 waits for the user's lookup.
    stale = (
        f'Digest username="201", realm="callrec", nonce="old", uri="sip:300@{HOST}",'
        ' response="00000000000000000000000000000000"'
    )
    invite = rig.invite("z9hG4bK-retx-1", "retx-1", 1, stale)
    rig.send(invite)
    await wait_until_async(lambda: rig.directory.lookups_started == 1, timeout=5, what="lookup")
    rig.send(invite)  # before the 407: the transaction answers 100 Trying
    _, trying = await rig.phone.next()
    assert isinstance(trying, SipResponse) and trying.status == 100
    rig.directory.lookups.set()
    first, response = await rig.phone.response(407)
    rig.send(invite)  # after the 407: the same bytes again, the same nonce
    again, _ = await rig.phone.response(407)
    assert again == first
    # A 100 went out before it, so Timer G retransmits it (the same bytes) until the ACK.
    timer_g, _ = await rig.phone.response(407)
    assert timer_g == first
    rig.send(rig.in_transaction("ack", invite, "ACK", response.headers.get("To")))
    await wait_until_async(
        lambda: len(rig.b2bua.transactions) == 0, timeout=5, what="the transaction ended"
    )
    assert rig.phone.received.empty(), "a 407 was sent after the ACK"
    assert rig.b2bua.counters.auth_challenges == 1
    assert rig.directory.lookups_started == 1


async def test_invite_cancelled_during_its_lookup_never_reaches_the_trunk(rig: Rig) -> None:
    _, response = await challenged(rig, "cancel-1")
    rig.directory.lookups.clear()
    invite = rig.invite("z9hG4bK-cancel-1b", "cancel-1", 2, rig.authorization(response))
    rig.send(invite)
    await wait_until_async(lambda: rig.directory.lookups_started == 1, timeout=5, what="lookup")
    rig.send(rig.in_transaction("cancel", invite, "CANCEL", None))
    _, ok = await rig.phone.response(200)
    assert (ok.headers.get("CSeq") or "").endswith("CANCEL")
    await rig.phone.response(487)
    rig.directory.lookups.set()  # the caller is found only now
    await rig.setups_done()
    assert rig.trunk_invites() == []
    assert rig.media.opened == [] and rig.b2bua.calls == set()


async def test_invite_cancelled_while_its_ports_open_never_reaches_the_trunk(rig: Rig) -> None:
    _, response = await challenged(rig, "cancel-2")
    gate = asyncio.Event()
    opened = rig.media.opened
    real_open = rig.media.open

    async def slow_open(**options: object) -> FakeMedia:
        await gate.wait()
        return await real_open(**options)

    rig.media.open = slow_open  # type: ignore[method-assign]
    invite = rig.invite("z9hG4bK-cancel-2b", "cancel-2", 2, rig.authorization(response))
    rig.send(invite)
    await wait_until_async(lambda: rig.b2bua.calls, timeout=5, what="the call set up")
    rig.send(rig.in_transaction("cancel", invite, "CANCEL", None))
    await rig.phone.response(487)
    gate.set()
    await rig.setups_done()
    assert rig.trunk_invites() == []
    assert len(opened) == 1 and opened[0].closed
    assert rig.b2bua.calls == set()


async def test_invite_set_up_past_the_deadline_is_refused_not_forwarded(rig: Rig) -> None:
    _, response = await challenged(rig, "late-1")
    rig.b2bua.setup_deadline = 0.05
    rig.directory.lookups.clear()
    invite = rig.invite("z9hG4bK-late-1b", "late-1", 2, rig.authorization(response))
    sent_at = time.monotonic()
    rig.send(invite)
    await wait_until_async(lambda: rig.directory.lookups_started == 1, timeout=5, what="lookup")
    await wait_until_async(
        lambda: time.monotonic() - sent_at > 0.1, timeout=5, what="the INVITE past its deadline"
    )
    rig.directory.lookups.set()
    _, refused = await rig.phone.response(503)
    assert refused.reason == "Set-up Too Slow"
    await rig.setups_done()
    assert rig.trunk_invites() == []


async def test_cdr_is_written_without_holding_the_invite(rig: Rig) -> None:
    _, response = await challenged(rig, "cdr-1")
    rig.directory.cdr_writes.clear()
    invite = rig.invite("z9hG4bK-cdr-1b", "cdr-1", 2, rig.authorization(response))
    rig.send(invite)
    _, forwarded = await rig.trunk.next()  # while the CDR write is still held back
    assert isinstance(forwarded, SipRequest) and forwarded.method == "INVITE"
    assert rig.directory.cdr_log == []
    # The trunk refuses: the call ends before its CDR exists; the end is written after it.
    rig.trunk.send(busy_for(forwarded), rig.b2bua.port)
    await rig.phone.response(486)
    rig.directory.cdr_writes.set()
    await wait_until_async(lambda: len(rig.directory.cdr_log) == 2, timeout=5, what="CDR writes")
    (create, _), (update, fields) = rig.directory.cdr_log
    assert (create, update) == ("create", "update")
    assert fields["disposition"] == "busy" and fields["sip_status"] == 486
