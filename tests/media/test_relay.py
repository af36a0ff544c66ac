from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import MediaError, RtpPacket
from testkit.clock import FakeClock
from testkit.waiting import wait_until_async
from tests.media.udp_phones import (
    Phone,
    close_endpoints,  # noqa: F401  (autouse fixture: closes the endpoints after each test)
    open_endpoint,
    open_phone,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "rtp"
G711 = (DATA / "g711a_marker.bin").read_bytes()
G711_NEXT = (DATA / "g711a_seq2.bin").read_bytes()
DTMF = (DATA / "rfc4733_digit1_start.bin").read_bytes()
SENDER_REPORT = bytes([0x80, 200, 0x00, 0x06]) + bytes(range(24))
RECEIVER_REPORT = bytes([0x81, 201, 0x00, 0x07]) + bytes(range(28))
PORT_RANGE = (47000, 47999)


def rtp(sequence: int, payload: bytes = b"\xd5" * 160) -> bytes:
    return RtpPacket(payload_type=8, sequence=sequence, timestamp=160 * sequence, ssrc=7,
                     payload=payload).serialize()  # fmt: skip


@dataclass
class RecordingTap:
    packets: list[tuple[str, str, bytes, float]] = field(default_factory=list)

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        self.packets.append((leg, kind, data, arrival))


@pytest.fixture
def allocator() -> PortAllocator:
    return PortAllocator(*PORT_RANGE)


@pytest.fixture
async def session(allocator: PortAllocator) -> AsyncIterator[MediaSession]:
    created = await MediaSession.create(allocator, "127.0.0.1", silence_timeout=None)
    yield created
    created.close()


async def connected_phones(session: MediaSession) -> tuple[Phone, Phone]:
    caller, callee = await open_phone(), await open_phone()
    session.set_remote("a", "127.0.0.1", caller.rtp.port, rtcp_port=caller.rtcp.port)
    session.set_remote("b", "127.0.0.1", callee.rtp.port, rtcp_port=callee.rtcp.port)
    return caller, callee


async def test_forwards_rtp_and_rtcp_both_ways_byte_exact(session: MediaSession) -> None:
    caller, callee = await connected_phones(session)
    a_port, b_port = session.local_port("a"), session.local_port("b")
    assert a_port % 2 == 0 and b_port % 2 == 0 and a_port != b_port
    assert session.local_rtcp_port("a") == a_port + 1

    caller.rtp.send(G711, a_port)
    data, source = await callee.rtp.receive()
    assert data == G711
    assert source[1] == b_port  # sent from leg b's RTP socket

    callee.rtp.send(DTMF, b_port)
    data, source = await caller.rtp.receive()
    assert data == DTMF
    assert source[1] == a_port

    caller.rtcp.send(SENDER_REPORT, a_port + 1)
    data, source = await callee.rtcp.receive()
    assert (data, source[1]) == (SENDER_REPORT, b_port + 1)

    callee.rtcp.send(RECEIVER_REPORT, b_port + 1)
    data, source = await caller.rtcp.receive()
    assert (data, source[1]) == (RECEIVER_REPORT, a_port + 1)

    stats_a, stats_b = session.stats("a"), session.stats("b")
    assert (stats_a.rtp_in, stats_a.rtp_out, stats_a.rtcp_in, stats_a.rtcp_out) == (1, 1, 1, 1)
    assert (stats_b.rtp_in, stats_b.rtp_out, stats_b.rtcp_in, stats_b.rtcp_out) == (1, 1, 1, 1)
    assert stats_a.garbled == stats_a.dropped == 0
    assert stats_a.last_packet_at is not None
    assert abs(stats_a.last_packet_at - time.time()) < 5


async def test_phone_behind_nat_gets_return_traffic_where_it_sends_from(
    session: MediaSession,
) -> None:
    advertised = await open_endpoint()  # the SDP port, at the host the SIP came from
    actual = await open_phone()  # where the caller really sends from (behind NAT)
    callee = await open_phone()
    # The caller's SDP names its private address; its SIP came from 127.0.0.1.
    session.set_remote("a", "192.168.1.20", advertised.port, signalled_from="127.0.0.1")
    session.set_remote("b", "127.0.0.1", callee.rtp.port, rtcp_port=callee.rtcp.port)
    a_port, b_port = session.local_port("a"), session.local_port("b")

    # Before the caller has sent anything, the SDP port at its SIP host is the best
    # guess (its private address cannot be reached).
    assert session.remote("a") == ("127.0.0.1", advertised.port)
    callee.rtp.send(rtp(1), b_port)
    assert await advertised.receive_data() == rtp(1)
    assert not session.is_latched("a")

    actual.rtp.send(rtp(2), a_port)
    assert await callee.rtp.receive_data() == rtp(2)
    assert session.is_latched("a")
    assert session.remote("a") == ("127.0.0.1", actual.rtp.port)

    callee.rtp.send(rtp(3), b_port)
    assert await actual.rtp.receive_data() == rtp(3)
    # RTCP latches on its own socket, separately from RTP.
    actual.rtcp.send(SENDER_REPORT, a_port + 1)
    assert await callee.rtcp.receive_data() == SENDER_REPORT
    callee.rtcp.send(RECEIVER_REPORT, b_port + 1)
    assert await actual.rtcp.receive_data() == RECEIVER_REPORT
    assert advertised.queue.empty()

    # A re-INVITE with the same address must not unlatch.
    session.set_remote("a", "192.168.1.20", advertised.port, signalled_from="127.0.0.1")
    callee.rtp.send(rtp(4), b_port)
    assert await actual.rtp.receive_data() == rtp(4)


async def test_packets_from_an_unlatched_source_are_dropped_until_relatch(
    session: MediaSession,
) -> None:
    caller, callee = await connected_phones(session)
    intruder = await open_endpoint()
    a_port = session.local_port("a")

    caller.rtp.send(rtp(1), a_port)
    assert await callee.rtp.receive_data() == rtp(1)
    caller.rtcp.send(RECEIVER_REPORT, a_port + 1)
    assert await callee.rtcp.receive_data() == RECEIVER_REPORT
    intruder.send(rtp(666), a_port)
    intruder.send(SENDER_REPORT, a_port + 1)
    caller.rtp.send(rtp(2), a_port)
    caller.rtcp.send(RECEIVER_REPORT, a_port + 1)
    # Loopback keeps the order per socket: the intruder's packets were handled first.
    assert await callee.rtp.receive_data() == rtp(2)
    assert await callee.rtcp.receive_data() == RECEIVER_REPORT
    stats = session.stats("a")
    assert (stats.foreign, stats.dropped, stats.rtp_in, stats.rtcp_in) == (2, 2, 2, 2)
    assert callee.rtp.queue.empty() and callee.rtcp.queue.empty()

    # A re-INVITE moves the caller to the intruder's address: the next source latches.
    session.set_remote("a", "127.0.0.1", intruder.port, relatch=True)
    intruder.send(rtp(3), a_port)
    assert await callee.rtp.receive_data() == rtp(3)
    callee.rtp.send(rtp(4), session.local_port("b"))
    assert await intruder.receive_data() == rtp(4)


async def test_packets_are_dropped_while_the_far_remote_is_unknown(
    session: MediaSession,
) -> None:
    caller = await open_phone()
    session.set_remote("a", "127.0.0.1", caller.rtp.port, rtcp_port=caller.rtcp.port)
    for sequence in range(5):
        caller.rtp.send(rtp(sequence), session.local_port("a"))
    caller.rtcp.send(SENDER_REPORT, session.local_rtcp_port("a"))
    await wait_until_async(
        lambda: session.stats("a").dropped == 6, timeout=2.0, what="6 dropped packets"
    )
    stats = session.stats("a")
    assert (stats.rtp_in, stats.rtcp_in, stats.dropped, stats.foreign) == (5, 1, 6, 0)
    assert session.stats("b").rtp_out == 0

    # Not queued: once the callee is known only new packets reach it.
    callee = await open_phone()
    session.set_remote("b", "127.0.0.1", callee.rtp.port)
    caller.rtp.send(rtp(99), session.local_port("a"))
    assert await callee.rtp.receive_data() == rtp(99)
    assert callee.rtp.queue.empty()


async def test_hold_stops_sending_to_the_leg_until_resumed(session: MediaSession) -> None:
    caller, callee = await connected_phones(session)
    a_port = session.local_port("a")
    session.set_remote("b", "0.0.0.0", callee.rtp.port)
    assert session.remote("b") is None
    caller.rtp.send(rtp(1), a_port)
    await wait_until_async(
        lambda: session.stats("a").dropped == 1, timeout=2.0, what="the held leg's drop"
    )

    session.set_remote("b", "127.0.0.1", callee.rtp.port, relatch=True)
    caller.rtp.send(rtp(2), a_port)
    assert await callee.rtp.receive_data() == rtp(2)
    session.set_remote("b", "127.0.0.1", 0)
    assert session.remote("b") is None


async def test_garbled_packets_are_counted_not_forwarded_nor_tapped(
    allocator: PortAllocator,
) -> None:
    tap = RecordingTap()
    session = await MediaSession.create(allocator, "127.0.0.1", tap=tap, silence_timeout=None)
    # The caller's RTP socket is a plain one: asyncio (before 3.13) silently skips empty
    # datagrams, and an empty one must come from the caller's address to reach the check.
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw.bind(("127.0.0.1", 0))
        caller, callee = await connected_phones(session)
        session.set_remote("a", "127.0.0.1", raw.getsockname()[1], rtcp_port=caller.rtcp.port)
        a_port = session.local_port("a")
        garbage = [
            b"\x80\x08\x00",  # shorter than the RTP header
            b"\x40\x08" + bytes(170),  # RTP version 1
            b"\x00" * 172,  # version 0
            b"\x82\x08" + bytes(14),  # two CSRCs announced, one present
            b"\xa0\x08" + bytes(9) + b"\xff",  # padding longer than the packet
        ]
        for data in garbage:
            raw.sendto(data, ("127.0.0.1", a_port))
        caller.rtcp.send(b"\x40\xc8\x00\x06" + bytes(24), a_port + 1)  # RTCP version 1
        caller.rtcp.send(b"\x80", a_port + 1)
        raw.sendto(b"", ("127.0.0.1", a_port))
        raw.sendto(G711, ("127.0.0.1", a_port))
        caller.rtcp.send(SENDER_REPORT, a_port + 1)

        assert await callee.rtp.receive_data() == G711
        assert await callee.rtcp.receive_data() == SENDER_REPORT
        # The raw socket's empty datagram may come after G711.
        await wait_until_async(
            lambda: session.stats("a").garbled == len(garbage) + 3,
            timeout=2.0,
            what=f"{len(garbage) + 3} garbled packets",
        )
        assert session.stats("a").rtp_in == 1
        # RTP and RTCP are separate sockets: their relative order is not fixed.
        assert sorted((leg, kind, data) for leg, kind, data, _ in tap.packets) == [
            ("a", "rtcp", SENDER_REPORT),
            ("a", "rtp", G711),
        ]
        assert callee.rtp.queue.empty() and callee.rtcp.queue.empty()
        assert session.stats("a").foreign == 0
    finally:
        raw.close()
        session.close()


async def test_tap_sees_every_packet_with_the_leg_it_came_from(
    allocator: PortAllocator,
) -> None:
    tap = RecordingTap()
    session = await MediaSession.create(allocator, "127.0.0.1", tap=tap, silence_timeout=None)
    try:
        caller, callee = await connected_phones(session)
        before = time.time()
        caller.rtp.send(G711, session.local_port("a"))
        assert await callee.rtp.receive_data() == G711
        callee.rtp.send(G711_NEXT, session.local_port("b"))
        assert await caller.rtp.receive_data() == G711_NEXT
        callee.rtcp.send(RECEIVER_REPORT, session.local_rtcp_port("b"))
        assert await caller.rtcp.receive_data() == RECEIVER_REPORT
        after = time.time()

        assert [(leg, kind, data) for leg, kind, data, _ in tap.packets] == [
            ("a", "rtp", G711),
            ("b", "rtp", G711_NEXT),
            ("b", "rtcp", RECEIVER_REPORT),
        ]
        arrivals = [arrival for *_, arrival in tap.packets]
        assert before <= arrivals[0] <= arrivals[1] <= arrivals[2] <= after
    finally:
        session.close()


async def test_muxed_rtcp_on_the_rtp_port_is_forwarded_on_rtp_and_tapped_as_rtcp(
    allocator: PortAllocator,
) -> None:
    tap = RecordingTap()
    session = await MediaSession.create(allocator, "127.0.0.1", tap=tap, silence_timeout=None)
    try:
        caller, callee = await connected_phones(session)
        short_receiver_report = bytes([0x80, 201, 0x00, 0x01, 0, 0, 0, 7])  # 8 bytes, no blocks
        caller.rtp.send(short_receiver_report, session.local_port("a"))
        assert await callee.rtp.receive_data() == short_receiver_report
        assert tap.packets[0][:3] == ("a", "rtcp", short_receiver_report)
        stats = session.stats("a")
        assert (stats.rtp_in, stats.rtcp_in, stats.garbled) == (0, 1, 0)
        assert session.stats("b").rtcp_out == 1
    finally:
        session.close()


async def test_a_failing_tap_never_stops_forwarding(
    allocator: PortAllocator, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenTap:
        calls = 0

        def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
            BrokenTap.calls += 1
            raise RuntimeError("recorder exploded")

    session = await MediaSession.create(
        allocator, "127.0.0.1", tap=BrokenTap(), silence_timeout=None
    )
    try:
        caller, callee = await connected_phones(session)
        with caplog.at_level(logging.ERROR, logger="media.relay"):
            for sequence in range(20):
                caller.rtp.send(rtp(sequence), session.local_port("a"))
            caller.rtcp.send(SENDER_REPORT, session.local_rtcp_port("a"))
            received = [await callee.rtp.receive_data() for _ in range(20)]
            assert await callee.rtcp.receive_data() == SENDER_REPORT
        assert received == [rtp(sequence) for sequence in range(20)]
        assert BrokenTap.calls == 21
        failures = [r for r in caplog.records if "media tap failed" in r.getMessage()]
        assert len(failures) == 1  # rate limited, not one line per packet
        # Caught by the relay, not left to asyncio's "Exception in callback" handler.
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == failures
        assert failures[0].exc_info is not None
    finally:
        session.close()


async def relay_one(session: MediaSession, sender: Phone, receiver: Phone, leg: str) -> None:
    """Send one RTP packet into `leg` and wait until it came out the other side."""
    sender.rtp.send(rtp(1), session.local_port(leg))
    await receiver.rtp.receive_data()


async def test_silence_is_reported_once_per_leg_until_rtp_resumes(
    allocator: PortAllocator,
) -> None:
    clock = FakeClock()
    silent_legs: list[str] = []
    session = await MediaSession.create(
        allocator, "127.0.0.1", silence_timeout=30.0, on_silence=silent_legs.append, clock=clock
    )
    try:
        caller, callee = await connected_phones(session)
        for _ in range(3):
            clock.advance(10.0)
            await relay_one(session, caller, callee, "a")
            session.check_silence()
        # Still talking: gaps shorter than the timeout never count as silence.
        assert silent_legs == []
        clock.advance(29.9)
        session.check_silence()
        assert silent_legs == []
        clock.advance(0.2)
        session.check_silence()
        # Leg b never sent RTP and media was not marked as started: not watched.
        assert silent_legs == ["a"]
        clock.advance(100.0)
        session.check_silence()
        assert silent_legs == ["a"]  # once, not on every check

        await relay_one(session, caller, callee, "a")  # resumes, then stops again
        session.check_silence()
        session.mark_media_started()  # the call is answered: leg b is watched too
        clock.advance(30.1)
        session.check_silence()
        assert sorted(silent_legs) == ["a", "a", "b"]
    finally:
        session.close()


async def idle_watched_session(
    allocator: PortAllocator, clock: FakeClock, timeout: float, reported: list[float]
) -> MediaSession:
    """A session whose idle reports append their (fake) time to `reported`."""
    return await MediaSession.create(
        allocator,
        "127.0.0.1",
        silence_timeout=None,
        idle_timeout=timeout,
        on_idle=lambda: reported.append(clock()),
        clock=clock,
    )


async def test_idle_is_reported_once_both_legs_stop_and_not_while_one_talks(
    allocator: PortAllocator,
) -> None:
    clock = FakeClock()
    idle_at: list[float] = []
    session = await idle_watched_session(allocator, clock, 60.0, idle_at)
    try:
        caller, callee = await connected_phones(session)
        session.mark_media_started()
        # Leg a keeps talking for 80 s while leg b says nothing: not idle.
        for _ in range(8):
            clock.advance(10.0)
            await relay_one(session, caller, callee, "a")
            session.check_silence()
        stopped = clock()
        assert idle_at == []
        clock.advance(59.0)
        session.check_silence()
        assert idle_at == []
        clock.advance(2.0)
        session.check_silence()
        assert idle_at == [stopped + 61.0]
        clock.advance(100.0)
        session.check_silence()
        assert len(idle_at) == 1  # once, not on every check
        # RTP resumes and stops again: reported again.
        await relay_one(session, callee, caller, "b")
        session.check_silence()
        clock.advance(61.0)
        session.check_silence()
        assert len(idle_at) == 2
    finally:
        session.close()


async def test_idle_is_not_reported_while_a_leg_is_on_hold(allocator: PortAllocator) -> None:
    clock = FakeClock()
    idle: list[float] = []
    session = await idle_watched_session(allocator, clock, 20.0, idle)
    try:
        await connected_phones(session)
        session.mark_media_started()
        session.set_remote("b", "0.0.0.0", 4000)  # b's re-INVITE: held
        clock.advance(1000.0)
        session.check_silence()
        assert idle == []
        session.set_remote("b", "127.0.0.1", 4000)  # resumed, still no RTP at all
        clock.advance(1.0)
        session.check_silence()
        assert len(idle) == 1
    finally:
        session.close()


async def test_close_relays_and_taps_what_waits_in_the_socket_first(
    allocator: PortAllocator,
) -> None:
    # The phone's last packets and its BYE: the close comes before the loop has read
    # the packets from the relay's socket. They still reach the far end and the tap.
    tap = RecordingTap()
    session = await MediaSession.create(allocator, "127.0.0.1", tap=tap, silence_timeout=None)
    caller, callee = await connected_phones(session)
    caller.rtp.send(G711, session.local_port("a"))
    assert await callee.rtp.receive_data() == G711  # latched
    last = [rtp(sequence) for sequence in range(2, 7)]
    for packet in last:
        caller.rtp.send(packet, session.local_port("a"))
    session.close()
    assert [await callee.rtp.receive_data() for _ in last] == last
    assert [data for leg, kind, data, _ in tap.packets] == [G711, *last]
    assert session.stats("a").rtp_in == 6


async def test_close_releases_ports_and_is_idempotent(allocator: PortAllocator) -> None:
    session = await MediaSession.create(allocator, "127.0.0.1", silence_timeout=None)
    ports = [session.local_port("a"), session.local_port("b")]
    assert allocator.in_use == 2
    session.close()
    session.close()
    assert session.closed
    assert allocator.in_use == 0
    await asyncio.sleep(0)  # transports close their sockets on the next loop turn
    for port in ports:
        for number in (port, port + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", number))  # free again


async def test_exhausted_allocator_raises_and_leaks_nothing() -> None:
    allocator = PortAllocator(PORT_RANGE[0], PORT_RANGE[0] + 1)  # a single pair
    with pytest.raises(MediaError, match="no free RTP port"):
        await MediaSession.create(allocator, "127.0.0.1", silence_timeout=None)
    assert allocator.in_use == 0


class _FirstFree(random.Random):
    """Always draws the first free port, so the test knows which pair is tried first."""

    def randrange(self, *_args: Any, **_kwargs: Any) -> int:
        return 0


async def test_a_port_taken_by_another_program_is_skipped() -> None:
    allocator = PortAllocator(PORT_RANGE[0] + 100, PORT_RANGE[0] + 107, rng=_FirstFree())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        try:
            squatter.bind(("127.0.0.1", PORT_RANGE[0] + 101))  # RTCP port of the first pair
        except OSError:
            pytest.skip("the probe port is already taken on this host")
        session = await MediaSession.create(allocator, "127.0.0.1", silence_timeout=None)
        try:
            assert PORT_RANGE[0] + 100 not in (session.local_port("a"), session.local_port("b"))
            assert allocator.in_use == 2
        finally:
            session.close()
    assert allocator.in_use == 0


async def test_remote_addresses_are_checked(session: MediaSession) -> None:
    with pytest.raises(MediaError, match="not an IP literal"):
        session.set_remote("a", "phone.example.com", 4000)
    with pytest.raises(MediaError, match="family"):
        session.set_remote("a", "::1", 4000)
    with pytest.raises(MediaError, match="unknown leg"):
        session.set_remote("c", "127.0.0.1", 4000)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host cannot bind UDP on ::1")
async def test_relays_over_ipv6_loopback(allocator: PortAllocator) -> None:
    session = await MediaSession.create(allocator, "::1", silence_timeout=None)
    try:
        caller, callee = await open_phone("::1"), await open_phone("::1")
        intruder = await open_endpoint("::1")
        session.set_remote("b", "::1", callee.rtp.port, rtcp_port=callee.rtcp.port)
        session.set_remote("a", "::1", caller.rtp.port, rtcp_port=caller.rtcp.port)
        intruder.send(rtp(666), session.local_port("a"))  # not the SDP port: dropped
        caller.rtp.send(G711, session.local_port("a"))
        assert await callee.rtp.receive_data() == G711
        callee.rtp.send(G711_NEXT, session.local_port("b"))
        assert await caller.rtp.receive_data() == G711_NEXT
        caller.rtcp.send(SENDER_REPORT, session.local_rtcp_port("a"))
        assert await callee.rtcp.receive_data() == SENDER_REPORT
        assert session.is_latched("a") and session.stats("a").foreign == 1
        assert callee.rtp.queue.empty()
    finally:
        session.close()
