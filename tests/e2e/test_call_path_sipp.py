"""End-to-end: real `callrec serve`, SIPp as phone and as trunk, RTP counted on the wire."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import HOST, CallrecServer, free_port, make_server, sip_options
from testkit.rtp_counter import RtpCounter, count_pcap_rtp_packets
from testkit.waiting import WaitTimeout, wait_until

PCAP = "/usr/share/sip-tester/g711a.pcap"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"), sipp=True)
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def call_through(
    server: CallrecServer,
    tmp_path: Path,
    uas: str,
    uac: str,
    *,
    call_length_ms: int = 1000,
    calls: int = 1,
    transport: str = "udp",
    trace: bool = False,
) -> None:
    """Run one SIPp trunk (uas) and one SIPp phone (uac) through callrec; both must succeed."""
    trunk = server.start_sipp_trunk(tmp_path / "uas", uas, calls=calls, trace_messages=trace)
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        uac,
        caller="201",
        password="pw-201",
        local_port=free_port(),
        transport=transport,
        call_length_ms=call_length_ms,
        calls=calls,
        trace_messages=trace,
    )
    trunk_result = trunk.wait()
    assert phone.ok, phone.summary()
    assert trunk_result.ok, trunk_result.summary()


def last_cdr(server: CallrecServer, count: int) -> dict[str, object]:
    rows = server.wait_for_calls(count)
    assert len(rows) >= count, rows
    return rows[0]


def test_options_health_check(server: CallrecServer) -> None:
    assert sip_options(server.sip_port) == "SIP/2.0 200 OK"
    assert sip_options(server.sip_port, transport="tcp") == "SIP/2.0 200 OK"


def test_call_with_audio_reaches_far_end_and_is_recorded_in_cdr(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = len(server.calls())
    sent = count_pcap_rtp_packets(PCAP)
    uas_media = free_port(even=True, span=4)
    uac_media = free_port(even=True, span=4)
    counter = RtpCounter(range(min(uas_media, uac_media), max(uas_media, uac_media) + 1))
    with counter:
        trunk = server.start_sipp_trunk(tmp_path / "uas", media_port=uas_media)
        phone = server.run_sipp_phone(
            tmp_path / "uac",
            caller="201",
            password="pw-201",
            media_port=uac_media,
            pcap=PCAP,
            call_length_ms=8000,
        )
        trunk_result = trunk.wait()
        # The last packets may still be between the relay and the far ends.
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: (
                    min(counter.destination_counts.get(p, 0) for p in (uas_media, uac_media))
                    >= 0.999 * sent
                ),
                timeout=2.0,
                what="the call's RTP at both ends",
            )
    counts = counter.stop()
    assert phone.ok, phone.summary()
    assert trunk_result.ok, trunk_result.summary()
    # The far end (the trunk's media port) gets the phone's audio through the relay,
    # and the phone gets the trunk's echo back through it.
    # Packets the sniffer itself could not take (its kernel drops, on a busy machine)
    # are not the relay's.
    missed = counter.kernel_drops
    at_trunk = counts.get(uas_media, 0)
    at_phone = counts.get(uac_media, 0)
    assert at_trunk + missed >= 0.999 * sent, (at_trunk, sent, missed)
    assert at_phone + missed >= 0.999 * sent, (at_phone, sent, missed)
    cdr = last_cdr(server, before + 1)
    assert cdr["direction"] == "outbound"
    assert cdr["caller"] == {"extension": "201", "name": "Alice Martin"}
    assert cdr["callee"]["extension"] == "300"
    assert cdr["disposition"] == "answered" and cdr["sip_status"] == 200
    assert cdr["answered_at"] and cdr["ended_at"]


def test_cancel_before_answer(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    call_through(server, tmp_path, "uas_ringing.xml", "uac_cancel.xml")
    cdr = last_cdr(server, before + 1)
    assert cdr["disposition"] == "cancelled"
    assert cdr["sip_status"] == 487
    assert not cdr["answered_at"]


def test_busy_from_trunk_keeps_status(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    call_through(server, tmp_path, "uas_busy.xml", "uac_busy.xml")
    cdr = last_cdr(server, before + 1)
    assert cdr["disposition"] == "busy"
    assert cdr["sip_status"] == 486


def test_hold_and_resume_reinvite_passes_through(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    call_through(server, tmp_path, "uas_echo.xml", "uac_hold.xml", call_length_ms=500, trace=True)
    seen_by_trunk = "".join(p.read_text() for p in (tmp_path / "uas").glob("*.messages"))
    invites = [m for m in seen_by_trunk.split("INVITE sip:")[1:]]
    assert len(invites) >= 3, "the trunk should see the INVITE and two re-INVITEs"
    assert "a=sendonly" in invites[1]
    assert "a=sendrecv" in invites[2]
    assert f"c=IN IP4 {HOST}" in invites[1]
    cdr = last_cdr(server, before + 1)
    assert cdr["disposition"] == "answered"


def test_call_over_tcp(server: CallrecServer, tmp_path: Path) -> None:
    before = len(server.calls())
    call_through(server, tmp_path, "uas_echo.xml", "uac_auth_pcap.xml", transport="tcp")
    assert last_cdr(server, before + 1)["disposition"] == "answered"


def test_wrong_password_is_refused(server: CallrecServer) -> None:
    """Digest with a wrong password gets a fresh 407, never a call to the trunk."""
    from b2bua.digest import build_authorization
    from b2bua.message import SipResponse, parse_message

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]

        def invite(branch: str, auth: str = "") -> bytes:
            return (
                f"INVITE sip:300@{HOST}:{server.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{branch}\r\n"
                f"From: <sip:201@{HOST}>;tag=abc\r\nTo: <sip:300@{HOST}>\r\n"
                f"Call-ID: wrongpw-{port}\r\nCSeq: {2 if auth else 1} INVITE\r\n"
                f"Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
            ).encode()

        sock.sendto(invite("one"), (HOST, server.sip_port))
        challenge = parse_message(sock.recv(65535))
        assert isinstance(challenge, SipResponse) and challenge.status == 407
        value = challenge.headers.get_all("Proxy-Authenticate")[0]
        auth = build_authorization(
            value, "INVITE", f"sip:300@{HOST}:{server.sip_port}", "201", "wrong"
        )
        sock.sendto(invite("two", f"Proxy-Authorization: {auth}\r\n"), (HOST, server.sip_port))
        answer = parse_message(sock.recv(65535))
        assert isinstance(answer, SipResponse) and answer.status == 407


def test_early_media_and_update_pass_through(server: CallrecServer, tmp_path: Path) -> None:
    """183 with SDP reaches the phone pointing at the relay; an UPDATE crosses the call."""
    before = len(server.calls())
    call_through(
        server, tmp_path, "uas_early_media.xml", "uac_update.xml", call_length_ms=600, trace=True
    )
    seen_by_phone = "".join(p.read_text() for p in (tmp_path / "uac").glob("*.messages"))
    early = seen_by_phone.split("SIP/2.0 183 Session Progress")
    assert len(early) > 1, "the phone should get the 183"
    early_sdp = early[1].split("\n\n", 1)[1] if "\n\n" in early[1] else early[1]
    assert f"c=IN IP4 {HOST}" in early_sdp
    relay_port = int(early_sdp.split("m=audio ")[1].split()[0])
    assert server.rtp_first <= relay_port <= server.rtp_last
    seen_by_trunk = "".join(p.read_text() for p in (tmp_path / "uas").glob("*.messages"))
    updates = seen_by_trunk.split("UPDATE sip:")[1:]
    assert updates, "the trunk should receive the UPDATE"
    update_port = int(updates[0].split("m=audio ")[1].split()[0])
    assert server.rtp_first <= update_port <= server.rtp_last
    assert last_cdr(server, before + 1)["disposition"] == "answered"
