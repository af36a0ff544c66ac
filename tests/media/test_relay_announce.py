"""Announcements through a real MediaSession: two UDP "phones" on 127.0.0.1 at 50 pps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from media import g711
from media.announce import FRAME_SAMPLES, load_announcement
from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import MediaError, RtpPacket
from testkit.waiting import wait_until_async
from tests.media.stream_builder import chirp, correlation_at

PORT_RANGE = (46000, 46199)
PACKET_INTERVAL = 0.02
FILLER = b"\x2a" * 156


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append(data)


@dataclass
class Phone:
    """One UDP socket sending a numbered G.711 stream and collecting what it receives."""

    name: int  # first payload octet, so a receiver can tell whose packet it got
    ssrc: int
    sequence: int
    timestamp: int
    payload_type: int
    transport: asyncio.DatagramTransport
    collector: _Collector
    sent: int = 0
    marks: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    def send_next(self, relay_port: int) -> None:
        payload = bytes([self.name]) + self.sent.to_bytes(3, "big") + FILLER
        packet = RtpPacket(payload_type=self.payload_type, sequence=self.sequence & 0xFFFF,
                           timestamp=self.timestamp & 0xFFFFFFFF, ssrc=self.ssrc,
                           payload=payload)  # fmt: skip
        self.transport.sendto(packet.serialize(), ("127.0.0.1", relay_port))
        self.sent += 1
        self.sequence += 1
        self.timestamp += FRAME_SAMPLES

    def received(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data in self.collector.received]


async def open_phone(name: int, ssrc: int, sequence: int, timestamp: int, pt: int) -> Phone:
    collector = _Collector()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: collector, local_addr=("127.0.0.1", 0)
    )
    return Phone(name, ssrc, sequence, timestamp, pt, transport, collector)


@pytest.fixture
async def session() -> AsyncIterator[MediaSession]:
    created = await MediaSession.create(
        PortAllocator(*PORT_RANGE), "127.0.0.1", silence_timeout=None
    )
    yield created
    created.close()


def origin(packet: RtpPacket, sender: Phone) -> int | None:
    """Index of `sender`'s packet this is, None if it is not one of its packets."""
    payload = packet.payload
    if len(payload) == 160 and payload[0] == sender.name and payload[4:] == FILLER:
        return int.from_bytes(payload[1:4], "big")
    return None


def assert_continuous(packets: list[RtpPacket], ssrc: int) -> None:
    assert {p.ssrc for p in packets} == {ssrc}
    sequences = np.array([p.sequence for p in packets], dtype=np.int64)
    timestamps = np.array([p.timestamp for p in packets], dtype=np.int64)
    assert np.all(np.diff(sequences) % 65536 == 1), "sequence numbers skip or repeat"
    assert np.all(np.diff(timestamps) % (1 << 32) == FRAME_SAMPLES), "timestamps not +160"


def check_receiver(receiver: Phone, sender: Phone, prompt: np.ndarray, codec: str,
                   first_ssrc: int) -> tuple[int, int]:  # fmt: skip
    """Asserts one phone's view; returns (sender packets before, after the prompt)."""
    packets = receiver.received()
    assert_continuous(packets, first_ssrc)
    origins = [origin(p, sender) for p in packets]
    injected = [i for i, value in enumerate(origins) if value is None]
    frames = -(-prompt.size // FRAME_SAMPLES)
    assert len(injected) == frames
    assert injected == list(range(injected[0], injected[0] + frames)), "prompt not in one run"
    first = injected[0]
    assert [p.marker for p in packets] == [i == first for i in range(len(packets))]
    assert {packets[i].payload_type for i in injected} == {receiver.payload_type}
    decoded = g711.decode(codec, b"".join(packets[i].payload for i in injected))
    assert correlation_at(prompt, decoded, 0) >= 0.9
    before = [value for value in origins[:first] if value is not None]
    after = [value for value in origins[first + frames :] if value is not None]
    assert before == list(range(len(before)))  # forwarded in order, nothing lost
    assert after == sorted(after) and after[-1] == sender.sent - 1  # forwarding resumed
    # The prompt replaced what the sender said meanwhile, no more (up to a frame each side).
    assert frames - 1 <= after[0] - before[-1] - 1 <= frames + 2
    return len(before), len(after)


async def test_prompt_to_both_legs_keeps_each_receivers_stream_continuous(
    session: MediaSession,
) -> None:
    # The callee's numbering wraps during the call, and it changes SSRC after the prompt.
    caller = await open_phone(0xA1, 0xAAAA0001, 1000, 50_000, 8)
    callee = await open_phone(0xB2, 0xBBBB0002, 65_530, 0xFFFFF000, 8)
    session.set_remote("a", "127.0.0.1", caller.port)
    session.set_remote("b", "127.0.0.1", callee.port)
    prompt = chirp(0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[int]] = []
    for tick in range(90):
        if tick == 20:
            tasks = [session.play(leg, prompt, 8, "PCMA") for leg in ("a", "b")]
        if tick == 65:
            callee.ssrc, callee.sequence, callee.timestamp = 0x5EC0DD, 7, 123_456
        caller.send_next(session.local_port("a"))
        callee.send_next(session.local_port("b"))
        # Paced as a phone sends (the thing under test): the prompt replaces a real-time
        # stream, so the relay must see packets arrive while it plays.
        await asyncio.sleep(max(0.0, start + (tick + 1) * PACKET_INTERVAL - loop.time()))
    assert [await task for task in tasks] == [25, 25]
    await wait_until_async(
        lambda: all_delivered(session, {"a": caller, "b": callee}, 90),
        timeout=2.0,
        what="every relayed packet at both phones",
    )

    before_a, after_a = check_receiver(caller, callee, prompt, "PCMA", 0xBBBB0002)
    before_b, after_b = check_receiver(callee, caller, prompt, "PCMA", 0xAAAA0001)
    assert before_a >= 15 and before_b >= 15
    assert after_a >= 40 and after_b >= 40  # includes the callee's new SSRC, renumbered
    for leg in ("a", "b"):
        stats = session.stats(leg)
        assert stats.injected == 25
        assert stats.rtp_in == 90
        assert 23 <= stats.replaced <= 27
        assert stats.rtp_out == 90 - stats_replaced(session, leg) + 25
    assert not session.playing("a") and not session.playing("b")


def all_delivered(session: MediaSession, phones: dict[str, Phone], sent_each: int) -> bool:
    """The relay has taken in `sent_each` packets per leg and each phone has received
    everything the relay sent it."""
    return all(
        session.stats(leg).rtp_in == sent_each
        and len(phone.collector.received) == session.stats(leg).rtp_out
        for leg, phone in phones.items()
    )


def stats_replaced(session: MediaSession, leg: str) -> int:
    """Packets replaced on their way TO `leg` (counted on the leg they came from)."""
    return session.stats("b" if leg == "a" else "a").replaced


async def test_prompt_before_any_media_starts_a_fresh_stream(session: MediaSession) -> None:
    caller = await open_phone(0xA1, 0xAAAA0001, 1000, 50_000, 0)
    callee = await open_phone(0xB2, 0xBBBB0002, 2000, 90_000, 0)
    session.set_remote("a", "127.0.0.1", caller.port)
    session.set_remote("b", "127.0.0.1", callee.port)
    beep = load_announcement("beep")
    assert beep is not None
    played = await session.play("a", beep[:1600], 0, "PCMU")  # 10 frames, nothing sent yet
    assert played == 10
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in range(10):
        callee.send_next(session.local_port("b"))
        # Paced as a phone sends: the prompt must be played out before the callee's packets
        # are forwarded behind it.
        await asyncio.sleep(max(0.0, start + (tick + 1) * PACKET_INTERVAL - loop.time()))
    await wait_until_async(
        lambda: (
            session.stats("b").rtp_in == 10
            and len(caller.collector.received) == session.stats("a").rtp_out
        ),
        timeout=2.0,
        what="the callee's 10 packets relayed to the caller",
    )
    packets = caller.received()
    assert len(packets) == 20
    ssrc = packets[0].ssrc
    assert ssrc != callee.ssrc  # a new stream of callrec's ...
    assert_continuous(packets, ssrc)  # ... into which the callee's packets are renumbered
    assert [origin(p, callee) for p in packets[10:]] == list(range(10))
    assert packets[0].marker


async def test_passthrough_stays_byte_exact_without_announcement(session: MediaSession) -> None:
    caller = await open_phone(0xA1, 0xAAAA0001, 1000, 50_000, 0)
    callee = await open_phone(0xB2, 0xBBBB0002, 2000, 90_000, 0)
    session.set_remote("a", "127.0.0.1", caller.port)  # nothing is accepted before SDP
    session.set_remote("b", "127.0.0.1", callee.port)
    sent = []
    for _ in range(5):
        caller.send_next(session.local_port("a"))
        sent.append(RtpPacket(payload_type=0, sequence=caller.sequence - 1,
                              timestamp=caller.timestamp - 160, ssrc=caller.ssrc,
                              payload=bytes([0xA1]) + (caller.sent - 1).to_bytes(3, "big")
                              + FILLER).serialize())  # fmt: skip
    await wait_until_async(
        lambda: len(callee.collector.received) >= 5, timeout=2.0, what="5 relayed packets"
    )
    assert callee.collector.received == sent


async def test_play_rejects_what_it_cannot_do(session: MediaSession) -> None:
    with pytest.raises(MediaError, match="G729"):
        session.play("a", np.zeros(160, np.int16), 18, "G729")
    with pytest.raises(MediaError, match="unknown leg"):
        session.play("c", np.zeros(160, np.int16), 0, "PCMU")
    session.close()
    with pytest.raises(MediaError, match="closed"):
        session.play("a", np.zeros(160, np.int16), 0, "PCMU")


async def test_close_stops_a_running_announcement(session: MediaSession) -> None:
    caller = await open_phone(0xA1, 0xAAAA0001, 1000, 50_000, 0)
    session.set_remote("a", "127.0.0.1", caller.port)
    task = session.play("a", np.zeros(8000, np.int16), 0, "PCMU")  # 50 frames, 1 s
    await wait_until_async(
        lambda: session.stats("a").injected >= 2, timeout=2.0, what="the announcement running"
    )
    session.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert session.stats("a").injected < 50
