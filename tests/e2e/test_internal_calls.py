"""End-to-end: internal calls on a real `callrec serve` with two organisations.

Acme's 202 (mode `always`) calls Acme's 201 (mode `never`): 201's phone (SIPp, having
registered with REGISTER and digest) rings and answers through callrec, the audio goes
both ways through the relay (counted on the wire), the call is recorded by the rule
(`always` wins), and the report (the REST API's JSON, as each user) names both parties
for both of them. Beta's 202 dialling 201 goes to the trunk, never to Acme's 201. A
colleague with no registered phone is 480.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import SipResponse, parse_message
from testkit.harness import HOST, CallrecServer, free_port, make_server
from testkit.rtp_counter import RtpCounter, count_pcap_rtp_packets
from testkit.sipp_runner import start_sipp
from testkit.waiting import WaitTimeout, wait_until
from tests.e2e.test_organisations import UAC_DOMAIN, Org, answering_phone, register

pytestmark = pytest.mark.e2e

PCAP = "/usr/share/sip-tester/g711a.pcap"
# Org's password is its 201's; 202's passwords follow.
ACME = Org("acme", "acme.example", "31100200", "Anna Acme", "pw-acme-201")
BETA = Org("beta", "beta.example", "31200200", "Bert Beta", "pw-beta-201")
ACME_202 = ("202", "Bob Acme", "pw-acme-202")
BETA_202 = ("202", "Berend Beta", "pw-beta-202")
PORTAL_PASSWORD = "portal-pw-1"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec"),
        sipp=True,
        extra_config='[recording]\nannouncement = "none"\nchannels = "stereo"\n',
    )
    for org in (ACME, BETA):
        srv.cli("orgs", "add", org.slug, "--name", org.slug.title(), "--domain", org.domain)
    # Beta has no 201: for its users "201" is a number like any other.
    srv.add_user("201", ACME.name, ACME.password, "--org", "acme", "--mode", "never")
    for org, (ext, name, password) in ((ACME, ACME_202), (BETA, BETA_202)):
        srv.add_user(ext, name, password, "--org", org.slug, "--mode", "always")
    srv.add_user("204", "Dora Acme", "pw-acme-204", "--org", "acme", "--mode", "never")
    for ext in ("201", "202"):
        srv.cli("users", "set-portal-password", "--org", "acme", ext, "--password", PORTAL_PASSWORD)
    yield from srv.serving()


def cli_json(server: CallrecServer, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(server.cli(*args, "--json").stdout)
    return rows


def invite_status(server: CallrecServer, org: Org, user: tuple[str, str, str], dialled: str) -> int:
    """The final status of an INVITE from `user` of `org` to `dialled` (digest answered;
    a 2xx is not expected here)."""
    extension, _, password = user
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        call_id = f"inv-{uuid.uuid4().hex}"
        uri = f"sip:{dialled}@{org.domain}"

        def send(cseq: int, method: str, *headers: str, to_tag: str = "") -> SipResponse | None:
            lines = [
                f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id}{cseq};rport",
                "Max-Forwards: 70",
                f"From: <sip:{extension}@{org.domain}>;tag=t{call_id[:8]}",
                f"To: <{uri}>{to_tag}",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}",
                f"Contact: <sip:{extension}@{HOST}:{port}>",
                *headers,
                "Content-Length: 0",
                "",
                "",
            ]
            sock.sendto("\r\n".join(lines).encode(), (HOST, server.sip_port))
            if method == "ACK":
                return None
            while True:
                message = parse_message(sock.recv(65535))
                if isinstance(message, SipResponse) and message.status >= 200:
                    return message

        challenge = send(1, "INVITE")
        assert challenge is not None and challenge.status == 407, challenge
        tag = ";tag=" + (challenge.headers.get("To") or "").split(";tag=")[-1]
        send(1, "ACK", to_tag=tag)
        offered = preferred_challenge(challenge.headers.get_all("Proxy-Authenticate"))
        auth = build_authorization(offered, "INVITE", uri, extension, password)
        final = send(2, "INVITE", f"Proxy-Authorization: {auth}")
        assert final is not None
        return final.status


async def api_get(server: CallrecServer, login: str, path: str) -> Any:
    """GET an API path as a portal user logged in through the form."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{server.portal_url}/login") as response:
            match = _CSRF.search(await response.text())
        assert match is not None
        form = {"csrf_token": match.group(1), "name": login, "password": PORTAL_PASSWORD}
        async with session.post(
            f"{server.portal_url}/login", data={**form, "next": "/"}, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()
        async with session.get(f"{server.portal_url}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()


def test_a_colleague_is_rung_through_callrec_and_the_call_recorded_for_both(
    server: CallrecServer, tmp_path: Path
) -> None:
    port, registered, _ = register(server, ACME)
    assert registered.status == 200
    callee_media = free_port(even=True, span=4)
    caller_media = free_port(even=True, span=4)
    sent = count_pcap_rtp_packets(PCAP)
    counter = RtpCounter(
        range(min(callee_media, caller_media), max(callee_media, caller_media) + 1)
    )
    with counter:
        callee = start_sipp(
            "uas_echo.xml",
            work_dir=tmp_path / "201",
            timeout_s=60,
            local_port=port,
            media_port=callee_media,
            rtp_echo=True,
        )
        caller = start_sipp(
            UAC_DOMAIN,
            work_dir=tmp_path / "202",
            timeout_s=60,
            ready_wait_s=0,
            remote=server.sip_address,
            local_port=free_port(),
            media_port=caller_media,
            callee="201",
            caller="202",
            user="202",
            password=ACME_202[2],
            pcap=PCAP,
            call_length_ms=8000,
            keys={"domain": ACME.domain},
            extra=["-auth_uri", f"201@{server.sip_address}"],
        ).wait()
        callee_result = callee.wait()
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: (
                    min(counter.destination_counts.get(p, 0) for p in (callee_media, caller_media))
                    >= 0.999 * sent
                ),
                timeout=2.0,
                what="the call's RTP at both phones",
            )
    counts = counter.stop()
    assert caller.ok, caller.summary()
    assert callee_result.ok, callee_result.summary()  # 201's phone rang and answered
    # 202's audio reached 201's phone through the relay, and 201's echo came back.
    assert counts.get(callee_media, 0) >= 0.999 * sent, (counts, sent)
    assert counts.get(caller_media, 0) >= 0.999 * sent, (counts, sent)

    calls = wait_until(
        lambda: (
            (rows := cli_json(server, "calls", "list", "--org", "acme"))  # type: ignore[misc]
            and rows[0].get("ended_at")
            and rows
        ),
        timeout=15,
        what="the internal call's record",
        interval=0.2,
    )
    assert len(calls) == 1
    call = calls[0]
    assert call["direction"] == "internal"
    assert call["caller"] == {"extension": "202", "name": "Bob Acme"}
    assert call["callee"] == {"extension": "201", "name": "Anna Acme"}
    assert call["disposition"] == "answered" and call["sip_status"] == 200
    # 202 is `always`, 201 `never`: `always` wins; the recording is 202's.
    recording = wait_until(
        lambda: next(
            (
                r
                for r in cli_json(server, "recordings", "list", "--org", "acme")
                if r["call_id"] == call["id"] and r["status"] != "recording"
            ),
            None,
        ),
        timeout=15,
        what="the internal call's recording",
        interval=0.2,
    )
    assert recording["status"] == "complete", recording
    assert recording["owner_ext"] == "202"
    audio, rate = soundfile.read(server.data_dir / recording["path"], dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    # Both phones' audio is in the file: 202's pcap on one channel, 201's echo on the other.
    for channel in (0, 1):
        assert float(np.sqrt(np.mean(audio[:, channel].astype(np.float64) ** 2))) > 100.0

    # Both users see the call, with both names, in their own report.
    for login in ("201@acme.example", "202@acme.example"):
        page = asyncio.run(api_get(server, login, "/api/v1/calls"))
        assert [item["id"] for item in page["items"]] == [call["id"]], login
        item = page["items"][0]
        assert item["caller"]["name"] == "Bob Acme" and item["callee"]["name"] == "Anna Acme"
        recordings = asyncio.run(api_get(server, login, "/api/v1/recordings"))
        assert [r["id"] for r in recordings["items"]] == [recording["id"]], login
        assert recordings["items"][0]["call"]["direction"] == "internal"


def test_another_organisations_user_reaches_the_trunk_not_this_one(
    server: CallrecServer, tmp_path: Path
) -> None:
    port, registered, _ = register(server, ACME)
    assert registered.status == 200
    acme_201 = answering_phone(tmp_path / "acme-201", port)
    trunk = server.start_sipp_trunk(tmp_path / "trunk")
    try:
        beta_caller = start_sipp(
            UAC_DOMAIN,
            work_dir=tmp_path / "beta-202",
            timeout_s=60,
            ready_wait_s=0,
            remote=server.sip_address,
            local_port=free_port(),
            media_port=free_port(even=True, span=4),
            callee="201",
            caller="202",
            user="202",
            password=BETA_202[2],
            call_length_ms=1000,
            keys={"domain": BETA.domain},
            extra=["-auth_uri", f"201@{server.sip_address}"],
        ).wait()
        assert beta_caller.ok, beta_caller.summary()
        assert trunk.wait().ok  # Beta's 202 reached the trunk with "201"
    finally:
        acme_201_result = acme_201.stop(grace_s=0.5)
        trunk.stop(grace_s=0.5)
    assert acme_201_result.created_calls == 0  # Acme's 201 never rang
    rows = wait_until(
        lambda: (
            (found := cli_json(server, "calls", "list", "--org", "beta"))  # type: ignore[misc]
            and found[0].get("ended_at")
            and found
        ),
        timeout=15,
        what="beta's call",
        interval=0.2,
    )
    assert [(r["direction"], r["callee"]["extension"]) for r in rows] == [("outbound", "201")]
    assert all(
        r["direction"] == "internal" for r in cli_json(server, "calls", "list", "--org", "acme")
    )


def test_a_colleague_without_a_registered_phone_is_480(server: CallrecServer) -> None:
    assert invite_status(server, ACME, ACME_202, "204") == 480
