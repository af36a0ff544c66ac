"""Strict source checks of the relay (RTP hijack): real UDP sockets on loopback.

Legitimate phones sit on 127.0.0.1; the attacker on 127.0.0.2 sprays the session's ports.
NAT'ed phones name private addresses (10.0.0.5, 192.168.1.20) in their SDP: the relay
must never send there (it cannot reach them), and nothing in these tests does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import RtpPacket
from testkit.clock import FakeClock
from testkit.waiting import wait_until_async
from tests.media.udp_phones import (
    RECEIVE_TIMEOUT,
    Endpoint,
    Phone,
    close_endpoints,  # noqa: F401  (autouse fixture: closes the endpoints after each test)
    open_endpoint,
    open_phone,
)

PORT_RANGE = (46000, 46999)
ATTACKER_HOST = "127.0.0.2"
PHONE_HOST = "127.0.0.1"
SENDER_REPORT = bytes([0x80, 200, 0x00, 0x06]) + bytes(range(24))


def rtp(sequence: int, ssrc: int = 7) -> bytes:
    return RtpPacket(
        payload_type=8, sequence=sequence, timestamp=160 * sequence, ssrc=ssrc,
        payload=b"\xd5" * 160,
    ).serialize()  # fmt: skip


@dataclass
class RecordingTap:
    packets: list[tuple[str, str, bytes]] = field(default_factory=list)

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        self.packets.append((leg, kind, data))


async def make_session(**options: Any) -> MediaSession:
    options.setdefault("silence_timeout", None)
    return await MediaSession.create(PortAllocator(*PORT_RANGE), PHONE_HOST, **options)


def session_ports(session: MediaSession) -> list[int]:
    return [
        port
        for leg in ("a", "b")
        for port in (session.local_port(leg), session.local_rtcp_port(leg))
    ]


async def wait_for_foreign(session: MediaSession, count: int) -> None:
    """Wait (bounded) until the session has dropped `count` foreign packets."""
    await wait_until_async(
        lambda: session.foreign_packets >= count,
        timeout=RECEIVE_TIMEOUT,
        what=f"{count} foreign packets dropped",
    )
    assert session.foreign_packets == count


def spray(attacker: Endpoint, ports: list[int], rounds: int) -> int:
    """One RTP packet to each port per round; the number of packets sent."""
    for round_number in range(rounds):
        for port in ports:
            attacker.send(rtp(9000 + round_number, ssrc=0xBAD), port)
    return rounds * len(ports)


async def exchange(session: MediaSession, caller: Phone, callee: Phone, count: int) -> None:
    """`count` RTP and one RTCP packet each way; asserts each arrives unchanged, in order."""
    a_port, b_port = session.local_port("a"), session.local_port("b")
    for sequence in range(count):
        caller.rtp.send(rtp(sequence, ssrc=0xA), a_port)
        callee.rtp.send(rtp(sequence, ssrc=0xB), b_port)
    caller.rtcp.send(SENDER_REPORT, a_port + 1)
    callee.rtcp.send(SENDER_REPORT, b_port + 1)
    assert [await callee.rtp.receive_data() for _ in range(count)] == [
        rtp(sequence, ssrc=0xA) for sequence in range(count)
    ]
    assert [await caller.rtp.receive_data() for _ in range(count)] == [
        rtp(sequence, ssrc=0xB) for sequence in range(count)
    ]
    assert await callee.rtcp.receive_data() == SENDER_REPORT
    assert await caller.rtcp.receive_data() == SENDER_REPORT


async def test_attacker_spraying_the_ports_first_gets_nothing_and_is_not_recorded() -> None:
    tap = RecordingTap()
    session = await make_session(tap=tap)
    try:
        caller, callee = await open_phone(), await open_phone()
        attacker = await open_endpoint(ATTACKER_HOST)
        session.set_remote("a", PHONE_HOST, caller.rtp.port, rtcp_port=caller.rtcp.port,
                           relatch=True, signalled_from=PHONE_HOST)  # fmt: skip
        session.set_remote("b", PHONE_HOST, callee.rtp.port, rtcp_port=callee.rtcp.port,
                           relatch=True, signalled_from=PHONE_HOST)  # fmt: skip
        # The attacker is first on every port: under "latch onto anything" it would win.
        sent = spray(attacker, session_ports(session), rounds=5)
        await wait_for_foreign(session, sent)
        await exchange(session, caller, callee, 20)
        # The attacker keeps spraying during the call: still nothing.
        sent += spray(attacker, session_ports(session), rounds=5)
        await wait_for_foreign(session, sent)
        await exchange(session, caller, callee, 5)  # a barrier: anything sent is queued

        assert attacker.queue.empty()
        assert session.remote("a") == (PHONE_HOST, caller.rtp.port)
        assert session.remote("b") == (PHONE_HOST, callee.rtp.port)
        stats_a, stats_b = session.stats("a"), session.stats("b")
        assert (stats_a.foreign, stats_b.foreign) == (sent // 2, sent // 2)
        assert (stats_a.rtp_in, stats_a.rtcp_in, stats_b.rtp_in, stats_b.rtcp_in) == (25, 2, 25, 2)
        assert stats_a.dropped == stats_a.foreign  # the foreign ones, nothing else
        # The recorder saw the phones' packets only.
        assert len(tap.packets) == 54
        assert all(RtpPacket.parse(data).ssrc != 0xBAD for _, kind, data in tap.packets
                   if kind == "rtp")  # fmt: skip
    finally:
        session.close()


async def test_same_host_other_port_is_foreign_when_the_sdp_names_the_sip_host() -> None:
    session = await make_session()
    try:
        caller, callee = await open_phone(), await open_phone()
        neighbour = await open_endpoint(PHONE_HOST)  # same host as the phone, other port
        for leg, phone in (("a", caller), ("b", callee)):
            session.set_remote(leg, PHONE_HOST, phone.rtp.port, rtcp_port=phone.rtcp.port,
                               relatch=True, signalled_from=PHONE_HOST)  # fmt: skip
        neighbour.send(rtp(666), session.local_port("a"))
        neighbour.send(rtp(667), session.local_rtcp_port("b"))
        await wait_for_foreign(session, 2)
        await exchange(session, caller, callee, 3)
        assert neighbour.queue.empty()
        assert (session.stats("a").foreign, session.stats("b").foreign) == (1, 1)
    finally:
        session.close()


async def test_nothing_is_accepted_before_the_leg_has_sdp() -> None:
    session = await make_session()
    try:
        caller = await open_phone()
        caller.rtp.send(rtp(1), session.local_port("a"))
        caller.rtcp.send(SENDER_REPORT, session.local_rtcp_port("a"))
        await wait_for_foreign(session, 2)
        assert not session.is_latched("a") and session.stats("a").rtp_in == 0
    finally:
        session.close()


async def test_nated_phones_with_private_sdp_addresses_talk_and_the_attacker_does_not() -> None:
    tap = RecordingTap()
    session = await make_session(tap=tap)
    try:
        caller, callee = await open_phone(), await open_phone()
        attacker = await open_endpoint(ATTACKER_HOST)
        # Private SDP addresses with ports nobody listens on; SIP came from loopback.
        session.set_remote("a", "10.0.0.5", 16384, relatch=True, signalled_from=PHONE_HOST)
        session.set_remote("b", "192.168.1.20", 5004, relatch=True, signalled_from=PHONE_HOST)
        # Never towards the private address, which cannot be reached.
        assert session.remote("a") == (PHONE_HOST, 16384)
        assert session.remote("b", "rtcp") == (PHONE_HOST, 5005)
        sent = spray(attacker, session_ports(session), rounds=3)
        await wait_for_foreign(session, sent)
        assert not any(session.is_latched(leg, kind) for leg in "ab" for kind in ("rtp", "rtcp"))

        # Until a NAT'ed phone has sent, nobody knows where to reach it: the caller's first
        # packets go to the guess (lost), the callee's then reach the caller.
        caller.rtp.send(rtp(100, ssrc=0xA), session.local_port("a"))
        caller.rtcp.send(SENDER_REPORT, session.local_rtcp_port("a"))
        await wait_until_async(
            lambda: session.is_latched("a") and session.is_latched("a", "rtcp"),
            timeout=RECEIVE_TIMEOUT,
            what="the caller's RTP and RTCP latched",
        )
        callee.rtp.send(rtp(100, ssrc=0xB), session.local_port("b"))
        callee.rtcp.send(SENDER_REPORT, session.local_rtcp_port("b"))
        assert await caller.rtp.receive_data() == rtp(100, ssrc=0xB)
        assert await caller.rtcp.receive_data() == SENDER_REPORT

        await exchange(session, caller, callee, 10)
        assert session.remote("a") == (PHONE_HOST, caller.rtp.port)
        assert session.remote("a", "rtcp") == (PHONE_HOST, caller.rtcp.port)
        assert session.remote("b") == (PHONE_HOST, callee.rtp.port)
        sent += spray(attacker, session_ports(session), rounds=3)
        await wait_for_foreign(session, sent)
        await exchange(session, caller, callee, 2)
        assert attacker.queue.empty()
        assert len(tap.packets) == 2 * (2 + 10 + 1 + 2 + 1)
    finally:
        session.close()


async def test_nated_source_port_is_learnt_only_in_the_window() -> None:
    clock = FakeClock(500.0)
    session = await make_session(clock=clock, latch_window=3.0)
    try:
        late, other, callee = await open_phone(), await open_phone(), await open_phone()
        session.set_remote("a", "192.168.1.20", 5004, relatch=True, signalled_from=PHONE_HOST)
        session.set_remote("b", PHONE_HOST, callee.rtp.port, rtcp_port=callee.rtcp.port)
        a_port = session.local_port("a")

        clock.advance(3.1)  # the window after the SDP is over: right host, too late
        late.rtp.send(rtp(1), a_port)
        await wait_for_foreign(session, 1)
        assert not session.is_latched("a")

        session.mark_media_started()  # answered: the phone may start sending only now
        clock.advance(2.9)
        late.rtp.send(rtp(2), a_port)
        assert await callee.rtp.receive_data() == rtp(2)
        assert session.remote("a") == (PHONE_HOST, late.rtp.port)

        # Latched: the right host at another port is foreign, in the window or after it.
        other.rtp.send(rtp(3), a_port)
        await wait_for_foreign(session, 2)
        clock.advance(10.0)
        other.rtp.send(rtp(4), a_port)
        await wait_for_foreign(session, 3)
        late.rtp.send(rtp(5), a_port)
        assert await callee.rtp.receive_data() == rtp(5)
        callee.rtp.send(rtp(6), session.local_port("b"))
        assert await late.rtp.receive_data() == rtp(6)
        assert other.rtp.queue.empty() and callee.rtp.queue.empty()

        # A re-INVITE (new SDP) forgets the source and opens a new window.
        session.set_remote("a", "192.168.1.20", 5004, relatch=True, signalled_from=PHONE_HOST)
        other.rtp.send(rtp(7), a_port)
        assert await callee.rtp.receive_data() == rtp(7)
        assert session.remote("a") == (PHONE_HOST, other.rtp.port)
    finally:
        session.close()


async def test_with_nat_off_only_the_sdp_address_is_accepted() -> None:
    session = await make_session(nat=False)
    try:
        phone, callee = await open_phone(), await open_phone()
        # The SDP names another loopback host (reachable, so nothing leaves loopback).
        session.set_remote("a", "127.0.0.3", 5004, relatch=True, signalled_from=PHONE_HOST)
        session.set_remote("b", PHONE_HOST, callee.rtp.port, signalled_from=PHONE_HOST)
        phone.rtp.send(rtp(1), session.local_port("a"))
        await wait_for_foreign(session, 1)
        assert session.remote("a") == ("127.0.0.3", 5004)
        assert not session.is_latched("a")
    finally:
        session.close()


async def test_a_media_gateway_at_the_sdp_address_is_accepted_behind_a_sip_proxy() -> None:
    """SIP from a proxy (127.0.0.4), media from the gateway the SDP names: accepted."""
    session = await make_session()
    try:
        gateway, callee = await open_phone(), await open_phone()
        session.set_remote("a", PHONE_HOST, gateway.rtp.port, rtcp_port=gateway.rtcp.port,
                           relatch=True, signalled_from="127.0.0.4")  # fmt: skip
        session.set_remote("b", PHONE_HOST, callee.rtp.port, rtcp_port=callee.rtcp.port)
        assert session.remote("a") == (PHONE_HOST, gateway.rtp.port)  # public: as named
        await exchange(session, gateway, callee, 3)
        assert session.foreign_packets == 0
    finally:
        session.close()


async def test_foreign_packets_are_logged_rate_limited_with_a_summary_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(500.0)
    session = await make_session(clock=clock)
    session.label = "call hijack-test"
    try:
        caller, callee = await open_phone(), await open_phone()
        attacker = await open_endpoint(ATTACKER_HOST)
        for leg, phone in (("a", caller), ("b", callee)):
            session.set_remote(leg, PHONE_HOST, phone.rtp.port, rtcp_port=phone.rtcp.port)
        with caplog.at_level(logging.INFO, logger="media.relay"):
            sent = spray(attacker, session_ports(session), rounds=25)
            await wait_for_foreign(session, sent)
            assert len(caplog.records) == 1
            clock.advance(4.9)
            sent += spray(attacker, session_ports(session), rounds=1)
            await wait_for_foreign(session, sent)
            assert len(caplog.records) == 1
            clock.advance(0.2)
            sent += spray(attacker, session_ports(session), rounds=1)
            await wait_for_foreign(session, sent)
            session.close()
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 3, lines
        assert lines[0].startswith("call hijack-test: dropped 1 packet(s) from unexpected")
        assert f"from {ATTACKER_HOST}:{attacker.port}" in lines[0]
        assert "dropped 105 packet(s)" in lines[1] and "(104 since the last report)" in lines[1]
        assert lines[2] == (
            "call hijack-test: closed; 108 packet(s) from unexpected sources were dropped "
            "(leg a: 54, leg b: 54)"
        )
    finally:
        session.close()
