"""The legal notice, beeps and in-band keys on wideband legs (issue 14): encoded in the
leg's codec (G.722 or Opus), on that codec's RTP clock, with the payload type the leg
negotiated, decodable by the phone; and added to a 16 kHz recording.

The relay and worker tests use raw UDP "phones" on 127.0.0.1 that decode what they
receive with PyAV (`media.codecs.LegDecoder`, the recorder's own decoder)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from callrec.workers.protocol import pack_bytes
from callrec.workers.worker import MediaWorker
from media import announce
from media.announce import (
    INJECTABLE_CODECS,
    StreamContinuity,
    load_announcement,
    make_beep,
    prompt_codec,
    resample,
)
from media.codecs import LegDecoder, encode_payloads
from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import RtpPacket
from testkit.audio import best_correlation
from testkit.sipp_runner import free_port
from testkit.waiting import wait_until_async
from tests.workers.test_pool import Phone, spec_for

HOST = "127.0.0.1"
# codec -> (payload type as a phone would negotiate it, RTP timestamp units per 20 ms)
WIDEBAND = {"G722": (9, 160), "OPUS": (111, 960)}
RTPMAP = {"G722": "G722/8000", "OPUS": "opus/48000/2"}


def notice() -> npt.NDArray[np.int16]:
    prompt = load_announcement("default", "en")
    assert prompt is not None
    return prompt


def wideband_reference(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """The 8 kHz prompt as a 16 kHz phone should hear it."""
    return resample(pcm.astype(np.float64), 8000, 16000)


def decode(codec: str, packets: list[RtpPacket]) -> npt.NDArray[np.int16]:
    """What a phone decodes from `packets` (in order), at 16 kHz."""
    pieces = LegDecoder(16000).decode(codec, [p.payload for p in packets])
    return np.concatenate(pieces)


def injected_packets(codec: str, pcm: npt.NDArray[np.int16], pt: int) -> list[RtpPacket]:
    # The last packet the phone got: 20 ms (G.722: 160 octets; Opus: any size).
    last = RtpPacket(payload_type=pt, sequence=65534, timestamp=0xFFFFFF00, ssrc=0xCAFE,
                     payload=b"\x00" * 160).serialize()  # fmt: skip
    continuity = StreamContinuity(last, 100.0)
    injection = continuity.start_injection(pcm, pt, codec, 100.02)
    packets = []
    now = 100.02
    while (data := injection.next_packet(now)) is not None:
        packets.append(RtpPacket.parse(data))
        now += 0.02
    continuity.end_injection(injection)
    return packets


# -- encoding and stream continuity, sans-IO --------------------------------------------


def test_codec_choice_prefers_what_the_call_carries() -> None:
    phone = {9: "G722", 111: "opus", 0: "PCMU"}
    assert prompt_codec(phone, {0: "PCMU", 111: "OPUS"}) == (111, "OPUS")
    assert prompt_codec(phone, {18: "G729"}) == (9, "G722")  # none shared: its first
    assert prompt_codec(phone, None) == (9, "G722")
    assert prompt_codec({18: "G729", 101: "telephone-event"}, phone) is None
    assert {"PCMU", "PCMA", "G722", "OPUS"} <= INJECTABLE_CODECS


@pytest.mark.parametrize("codec", sorted(WIDEBAND))
def test_injection_in_a_wideband_codec_continues_the_stream_on_its_clock(codec: str) -> None:
    pt, step = WIDEBAND[codec]
    prompt = notice()
    packets = injected_packets(codec, prompt, pt)
    frames = -(-prompt.size // 160)
    assert frames <= len(packets) <= frames + 2  # Opus: one more for its look-ahead
    assert {p.payload_type for p in packets} == {pt}
    assert {p.ssrc for p in packets} == {0xCAFE}
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert [p.sequence for p in packets] == [(65535 + i) % 65536 for i in range(len(packets))]
    timestamps = np.array([p.timestamp for p in packets], dtype=np.int64)
    assert timestamps[0] == (0xFFFFFF00 + step) % (1 << 32)  # one 20 ms frame after the last
    assert np.all(np.diff(timestamps) % (1 << 32) == step)
    if codec == "G722":
        assert {len(p.payload) for p in packets} == {160}  # 20 ms of 64 kbit/s
    heard = decode(codec, packets)
    score, _ = best_correlation(wideband_reference(prompt), heard)
    assert score >= 0.9, f"{codec}: the notice correlates {score:.3f}"


def test_forwarding_after_an_opus_prompt_advances_on_the_48_khz_clock() -> None:
    source = RtpPacket(payload_type=111, sequence=10, timestamp=48_000, ssrc=7,
                       payload=b"\x01" * 70).serialize()  # fmt: skip
    continuity = StreamContinuity(source, 1.0)
    injection = continuity.start_injection(make_beep(duration_s=0.1), 111, "OPUS", 1.02)
    sent = []
    now = 1.02
    while (data := injection.next_packet(now)) is not None:
        sent.append(RtpPacket.parse(data))
        now += 0.02
    continuity.end_injection(injection)
    # The far end's stream resumes 20 ms after the prompt's last packet.
    later = RtpPacket(payload_type=111, sequence=500, timestamp=9_000_000, ssrc=7,
                      payload=b"\x02" * 90).serialize()  # fmt: skip
    out = continuity.forward(later, now)
    assert out is not None
    resumed = RtpPacket.parse(bytes(out))
    assert resumed.sequence == sent[-1].sequence + 1
    assert resumed.timestamp == sent[-1].timestamp + 960
    assert sent[0].timestamp == 48_000 + 960


def test_encoded_prompts_are_kept_and_tones_are_encoded_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[str] = []

    def counting(codec: str, pcm: npt.ArrayLike, rate: int = 8000) -> list[bytes]:
        encoded.append(codec)
        return encode_payloads(codec, pcm, rate)

    monkeypatch.setattr(announce, "encode_payloads", counting)
    prompt = np.random.default_rng(14).normal(0, 3000, 8000).astype(np.int16)  # not cached
    first = injected_packets("OPUS", prompt, 111)
    again = injected_packets("OPUS", prompt, 111)
    assert [p.payload for p in again] == [p.payload for p in first]
    assert encoded == ["OPUS"]  # encoded once, then taken from the cache
    beep = make_beep()
    for codec in WIDEBAND:
        payloads = encode_payloads(codec, beep)
        assert len(payloads) >= beep.size // 160


# -- through a real relay, to a raw UDP phone -------------------------------------------


def received(phone: Phone) -> list[RtpPacket]:
    return sorted((RtpPacket.parse(data) for data in phone.received), key=lambda p: p.sequence)


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    made = (Phone(), Phone())
    yield made
    for phone in made:
        phone.close()


@pytest.fixture
async def session() -> AsyncIterator[MediaSession]:
    first = free_port(even=True, span=8)
    created = await MediaSession.create(PortAllocator(first, first + 7), HOST, silence_timeout=None)
    yield created
    created.close()


@pytest.mark.parametrize("codec", sorted(WIDEBAND))
async def test_a_wideband_phone_decodes_the_notice_from_the_relay(
    session: MediaSession, phones: tuple[Phone, Phone], codec: str
) -> None:
    pt, step = WIDEBAND[codec]
    phone, other = phones
    session.set_remote("a", HOST, phone.port)
    session.set_remote("b", HOST, other.port)
    prompt = notice()
    played = await asyncio.wait_for(session.play("a", prompt, pt, codec), 10)
    await wait_until_async(lambda: phone.drain() >= played, timeout=5, what="the notice")
    packets = received(phone)
    assert len(packets) == played and {p.payload_type for p in packets} == {pt}
    assert np.all(np.diff([p.timestamp for p in packets]) == step)
    score, _ = best_correlation(wideband_reference(prompt), decode(codec, packets))
    assert score >= 0.9, f"{codec}: the phone's notice correlates {score:.3f}"


# -- a media worker: picks the codec, plays to both legs, records at 16 kHz ---------------


def wideband_sdp(codec: str, port: int) -> bytes:
    pt, _ = WIDEBAND[codec]
    return (
        f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt} 0 101\r\na=rtpmap:{pt} {RTPMAP[codec]}\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


@pytest.mark.parametrize("codec", sorted(WIDEBAND))
async def test_a_worker_plays_the_notice_in_the_legs_codec_and_records_it_at_16_khz(
    phones: tuple[Phone, Phone], tmp_path: Path, codec: str
) -> None:
    pt, _ = WIDEBAND[codec]
    events: list[dict[str, object]] = []
    first = free_port(even=True, span=8)
    worker = MediaWorker(HOST, first, first + 7, events.append)
    await worker.handle({"op": "open", "id": 1, "sid": 1, "silence_timeout": None})
    assert events[-1]["ok"], events
    caller, callee = phones
    await worker.handle({"op": "remote", "sid": 1, "leg": "a", "host": HOST, "port": caller.port})
    await worker.handle({"op": "remote", "sid": 1, "leg": "b", "host": HOST, "port": callee.port})
    spec = replace(spec_for(tmp_path, "wideband"), channels="mono", announcement="default",
                   sample_rate=16000)  # fmt: skip
    sdp = {"a": wideband_sdp(codec, caller.port), "b": wideband_sdp(codec, callee.port)}
    packed = {leg: pack_bytes(body) for leg, body in sdp.items()}
    await worker.handle({"op": "record", "sid": 1, "spec": asdict(spec), "sdp": packed})
    prompt = notice()
    frames = -(-prompt.size // 160)
    for phone in (caller, callee):
        await wait_until_async(lambda p=phone: p.drain() >= frames, timeout=10, what="notice")
    for phone in (caller, callee):
        packets = received(phone)
        assert {p.payload_type for p in packets} == {pt}  # not the PCMU both legs offer too
        score, _ = best_correlation(wideband_reference(prompt), decode(codec, packets))
        assert score >= 0.9, f"{codec}: notice correlates {score:.3f}"
    worker.tick()
    await worker.handle({"op": "close", "sid": 1, "at": time.time()})
    await worker.close_all()  # waits until the file is sealed and its outcome sent
    outcome = next(e for e in events if e.get("ev") == "recorded")["outcome"]
    assert outcome["status"] == "complete", outcome  # type: ignore[index]
    audio, rate = soundfile.read(spec.absolute, dtype="int16")
    assert rate == 16000
    score, _ = best_correlation(wideband_reference(prompt), audio)
    assert score >= 0.9, f"the recorded notice correlates {score:.3f}"
