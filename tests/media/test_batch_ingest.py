"""The recorder's batch ingest (one decode and one `push_batch` per leg, codec and tick)
writes the same file as the per-packet path it replaced, byte for byte.

The per-packet path is kept, frozen, in `tests/media/reference_recorder.py` and
`tests/media/reference_timeline.py` (media/recorder.py and media/timeline.py as they were
before the batch ingest). Both recorders get the same packets at the same ticks; the
frames they write and every counter must match, and the WAV files must be identical.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.recorder import Recorder
from media.rtp import RtpPacket
from media.timeline import LegTimeline
from media.writer import RecordingSummary, RecordingWriter
from tests.media import reference_recorder, reference_timeline
from tests.media.stream_builder import SentPacket, add_jitter, noise, packetize
from tests.media.wideband import packetize_wideband, wide_noise

START = 1_700_000_000.0
Stream = list[tuple[str, SentPacket]]


class MemorySink:
    """An audio sink that keeps the frames it is given."""

    def __init__(self, channels: int = 1, sample_rate: int = 8000) -> None:
        self.channels = channels
        self.sample_rate = sample_rate
        self.frames: list[npt.NDArray[np.int16]] = []

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        self.frames.append(frames.copy())

    def close(self) -> RecordingSummary:
        frames = sum(len(f) for f in self.frames)
        return RecordingSummary(
            path=Path("memory"),
            frames=frames,
            duration_s=frames / self.sample_rate,
            sha256="",
            bytes=0,
            channels=self.channels,
            sample_rate=self.sample_rate,
            format="wav",
        )

    @property
    def joined(self) -> npt.NDArray[np.int16]:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.int16)


def deliver(recorder: object, stream: Stream, end: float, tick_every: float) -> object:
    """Packets at their arrival times, ticks every `tick_every`, close at `end`."""
    ordered = sorted(stream, key=lambda item: item[1].arrival)
    index = 0
    now = START
    while now < START + end:
        now = min(now + tick_every, START + end)
        while index < len(ordered) and ordered[index][1].arrival <= now:
            leg, sent = ordered[index]
            recorder.on_packet(leg, "rtp", sent.data, sent.arrival)  # type: ignore[attr-defined]
            index += 1
        if now < START + end:
            recorder.tick(now)  # type: ignore[attr-defined]
    return recorder.close(START + end)  # type: ignore[attr-defined]


def both(
    stream: Stream, end: float, tick_every: float, *, sample_rate: int = 8000, **options: object
) -> tuple[MemorySink, MemorySink, object, object]:
    new_sink, old_sink = MemorySink(1, sample_rate), MemorySink(1, sample_rate)
    new = Recorder(new_sink, start_time=START, **options)  # type: ignore[arg-type]
    old = reference_recorder.Recorder(old_sink, start_time=START, **options)  # type: ignore[arg-type]
    return (
        new_sink,
        old_sink,
        deliver(new, stream, end, tick_every),
        deliver(old, stream, end, tick_every),
    )


def assert_same(stream: Stream, end: float, **options: object) -> None:
    for tick_every in (0.02, 0.25, 0.9):
        new_sink, old_sink, new, old = both(stream, end, tick_every, **options)
        assert np.array_equal(new_sink.joined, old_sink.joined), f"tick {tick_every}"
        assert len(new_sink.joined) > 0
        new_legs = {leg: dataclasses.asdict(s) for leg, s in new.legs.items()}  # type: ignore[attr-defined]
        old_legs = {leg: dataclasses.asdict(s) for leg, s in old.legs.items()}  # type: ignore[attr-defined]
        assert new_legs == old_legs, f"tick {tick_every}"
        assert new.unrecordable_reason == old.unrecordable_reason  # type: ignore[attr-defined]


def on(leg: str, packets: list[SentPacket]) -> Stream:
    return [(leg, p) for p in packets]


def moved(packets: list[SentPacket], **fields: int) -> list[SentPacket]:
    return [SentPacket(dataclasses.replace(p.packet, **fields), p.arrival) for p in packets]


def test_steady_streams_on_both_legs() -> None:
    stream = on("a", packetize(noise(3.0, 1), first_capture=START - 0.03, delay=0.01, ssrc=1))
    stream += on("b", packetize(noise(3.0, 2), first_capture=START + 0.21, delay=0.02, ssrc=2))
    assert_same(stream, 3.5)


def test_loss_jitter_and_reordering() -> None:
    a = add_jitter(packetize(noise(6.0, 3), first_capture=START, ssrc=1), 0.08, seed=4, loss=0.07)
    b = add_jitter(packetize(noise(6.0, 5), first_capture=START, ssrc=2), 0.15, seed=6, loss=0.02)
    assert_same(on("a", a) + on("b", b), 6.5)


def test_duplicates_and_very_late_packets() -> None:
    packets = packetize(noise(3.0, 7), first_capture=START + 0.1, ssrc=1)
    again = [SentPacket(p.packet, p.arrival + 0.005) for p in packets[::5]]
    late = [SentPacket(p.packet, p.arrival + 0.6) for p in packets[3::11]]
    very_late = [SentPacket(p.packet, p.arrival + 1.5) for p in packets[7::13]]
    assert_same(on("a", packets + again + late + very_late), 5.0)


def test_ssrc_change_and_timestamp_jumps() -> None:
    first = packetize(noise(2.0, 8), first_capture=START, ssrc=1)
    second = packetize(noise(2.0, 9), first_capture=START + 2.0, ssrc=2, first_timestamp=9_000_000)
    jumped = moved(
        packetize(noise(2.0, 10), first_capture=START + 4.0, ssrc=2, first_sequence=1100),
        timestamp=0,
    )
    # A timestamp jump inside one stream: the same SSRC, the timestamps far ahead.
    for k, sent in enumerate(jumped):
        sent.packet.timestamp = (4_000_000_000 + 160 * k) % (1 << 32)  # wraps, too
    # The drift window: a jittery stream whose delay grows by 100 ms for good.
    drifting = add_jitter(
        [
            SentPacket(p.packet, p.arrival + (0.1 if p.arrival > START + 3.0 else 0.0))
            for p in packetize(noise(12.0, 11), first_capture=START, ssrc=5)
        ],
        0.03,
        seed=12,
    )
    assert_same(on("a", first + second + jumped) + on("b", drifting), 12.5)


def test_early_packet_moves_the_anchor_and_overlaps_are_overwritten_in_order() -> None:
    packets = packetize(noise(3.0, 12), first_capture=START, delay=0.06, ssrc=1)
    # One packet arrives 50 ms early (the others were delayed): the stream moves earlier.
    packets[40] = SentPacket(packets[40].packet, packets[40].arrival - 0.05)
    # A second stream overlapping the first in call time.
    other = packetize(noise(1.0, 13), first_capture=START + 1.0, ssrc=9)
    # Packets whose timestamps overlap by half a packet (a broken sender).
    odd = packetize(noise(1.0, 14), first_capture=START + 2.0, ssrc=3)
    for k, sent in enumerate(odd):
        sent.packet.timestamp = 80 * k
    assert_same(on("a", packets + other) + on("b", odd), 3.5)


def test_comfort_noise_events_codecs_and_odd_headers() -> None:
    packets = packetize(noise(4.0, 15), first_capture=START, ssrc=1)
    # PCMA for a second in the middle, comfort noise and RFC 4733 events in between.
    for sent in packets[50:100]:
        sent.packet.payload_type = 8
    packets[20].packet.payload_type = 13
    packets[21].packet.payload_type = 101
    packets[22].packet.payload_type = 18  # G.729: not decodable
    packets[30].packet.csrcs = [7, 8]  # the slow path: CSRCs, an extension, padding
    packets[31].packet.extension = True
    packets[31].packet.extension_data = b"\x01\x02\x03\x04"
    packets[32].packet.padding = True
    packets[32].packet.padding_data = b"\x00\x00\x03"
    packets[33].packet.payload = b""  # an empty payload
    stream = on("a", packets)
    stream.append(("a", SentPacket(RtpPacket(), START + 0.5)))
    broken = [("b", SentPacket(RtpPacket(ssrc=4), START + 1.0 + k * 0.02)) for k in range(3)]
    assert_same(stream + broken, 4.5, telephone_event_pts={"a": [101]})


def test_malformed_packets_are_counted_alike() -> None:
    new, old = MemorySink(), MemorySink()
    recorders = [
        Recorder(new, start_time=START),
        reference_recorder.Recorder(old, start_time=START),
    ]
    good = packetize(noise(1.0, 16), first_capture=START, ssrc=1)
    for recorder in recorders:
        for k, sent in enumerate(good):
            recorder.on_packet("a", "rtp", sent.data, sent.arrival)
            recorder.on_packet("a", "rtp", b"\x80" * (k % 12), sent.arrival)
            recorder.on_packet("a", "rtp", b"\x40" + sent.data[1:], sent.arrival)
        recorder.tick(START + 0.6)
    assert np.array_equal(new.joined, old.joined)
    assert dataclasses.asdict(recorders[0].leg_stats("a")) == dataclasses.asdict(
        recorders[1].leg_stats("a")
    )


@pytest.mark.parametrize("codec", ["G722", "OPUS"])
def test_wideband_and_resampled_narrowband_at_16_khz(codec: str) -> None:
    rate = 48000 if codec == "OPUS" else 16000
    wide = packetize_wideband(
        codec, wide_noise(3.0, rate, seed=17), payload_type=96, first_capture=START + 0.1
    )
    wide = add_jitter(wide, 0.05, seed=18, loss=0.05)
    narrow = add_jitter(
        packetize(noise(3.0, 19), first_capture=START + 0.1, ssrc=2), 0.05, seed=20, loss=0.05
    )
    assert_same(on("a", wide) + on("b", narrow), 3.5, sample_rate=16000, codecs={"a": {96: codec}})


def test_the_wav_files_are_identical(tmp_path: Path) -> None:
    a = add_jitter(packetize(noise(4.0, 21), first_capture=START, ssrc=1), 0.1, seed=22, loss=0.05)
    b = packetize(noise(4.0, 23), first_capture=START + 0.3, ssrc=2)
    b += moved(packetize(noise(1.0, 24), first_capture=START + 2.5, ssrc=2), timestamp=0)
    stream = on("a", a) + on("b", b)
    paths = []
    for name, recorder_class in (("new", Recorder), ("old", reference_recorder.Recorder)):
        writer = RecordingWriter(tmp_path / f"{name}.wav", 2, "wav")
        deliver(recorder_class(writer, start_time=START, internal_leg="b"), stream, 4.5, 0.25)
        paths.append(tmp_path / f"{name}.wav")
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_push_batch_equals_one_push_per_packet() -> None:
    packets = add_jitter(
        packetize(noise(3.0, 25), first_capture=START, ssrc=1), 0.08, seed=26, loss=0.05
    )
    packets += [SentPacket(p.packet, p.arrival + 0.01) for p in packets[::7]]  # duplicates
    from media import g711

    def decoded(sent: SentPacket) -> npt.NDArray[np.int16]:
        return g711.ulaw_decode(sent.packet.payload)

    outputs = []
    for batch in (False, True):
        for timeline in (LegTimeline(START), reference_timeline.LegTimeline(START)):
            chunks = []
            for tick in range(1, 14):
                now = START + 0.25 * tick
                due = [p for p in packets if now - 0.25 < p.arrival <= now]
                if batch and isinstance(timeline, LegTimeline):
                    pcm = [decoded(p) for p in due]
                    timeline.push_batch(
                        [p.packet.ssrc for p in due],
                        [p.packet.sequence for p in due],
                        [p.packet.timestamp for p in due],
                        [p.arrival for p in due],
                        np.concatenate(pcm) if pcm else np.zeros(0, np.int16),
                        [len(x) for x in pcm],
                    )
                else:
                    for p in due:
                        timeline.push(p.packet, p.arrival, decoded(p))
                chunks.append(timeline.drain(timeline.call_sample(now - 0.2)))
            chunks.append(timeline.drain(timeline.call_sample(START + 3.5)))
            outputs.append((np.concatenate(chunks), dataclasses.asdict(timeline.stats)))
    reference = outputs[1]
    for out, stats in outputs:
        assert np.array_equal(out, reference[0])
        assert stats == reference[1]
    assert reference[1]["duplicates"] > 0 and reference[1]["packets"] > 100
