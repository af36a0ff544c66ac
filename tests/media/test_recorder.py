from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.recorder import Recorder
from media.rtp import RtpPacket
from media.writer import RecordingFormat, RecordingWriter
from tests.media.stream_builder import (
    PTIME,
    RATE,
    SentPacket,
    add_jitter,
    chirp,
    correlation_at,
    g711_round_trip,
    lag_of,
    noise,
    packetize,
    sine,
)

START = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[2]
Stream = list[tuple[str, SentPacket]]


def make_recorder(
    tmp_path: Path, channels: int = 1, fmt: RecordingFormat = "wav", **options: object
) -> Recorder:
    writer = RecordingWriter(tmp_path / f"call.{fmt}", channels, fmt)
    return Recorder(writer, start_time=START, **options)  # type: ignore[arg-type]


def play(recorder: Recorder, stream: Stream, end: float, tick_every: float = 0.25) -> np.ndarray:
    """Deliver packets at their arrival times with ticks in between, close at `end`."""
    ordered = sorted(stream, key=lambda item: item[1].arrival)
    index = 0
    now = START
    while now < START + end:
        now = min(now + tick_every, START + end)
        while index < len(ordered) and ordered[index][1].arrival <= now:
            leg, sent = ordered[index]
            recorder.on_packet(leg, "rtp", sent.data, sent.arrival)
            index += 1
        if now < START + end:
            recorder.tick(now)
    result = recorder.close(START + end)
    assert result.file is not None
    data, rate = soundfile.read(result.file.path, dtype="int16")
    assert rate == RATE
    return np.asarray(data, dtype=np.int16)


def on(leg: str, packets: list[SentPacket]) -> Stream:
    return [(leg, p) for p in packets]


def test_offset_of_40_ms_between_legs_survives_the_mono_mix(tmp_path: Path) -> None:
    caller = noise(3.0, seed=1, level=4000)
    callee = noise(3.0, seed=2, level=4000)
    stream = on("a", packetize(caller, first_capture=START + 0.5, delay=0.01, ssrc=1))
    stream += on("b", packetize(callee, first_capture=START + 0.54, delay=0.01, ssrc=2))
    mixed = play(make_recorder(tmp_path), stream, 4.0)
    assert len(mixed) == 4 * RATE
    lag_a = lag_of(caller, mixed)
    lag_b = lag_of(callee, mixed)
    assert lag_a == round(0.51 * RATE)
    assert lag_b - lag_a == round(0.04 * RATE)
    assert correlation_at(caller, mixed, lag_a) > 0.65  # the other party is half the power


def test_mono_mix_is_the_saturated_sum_of_both_decoded_legs(tmp_path: Path) -> None:
    loud = sine(1.0, 400, level=30000)
    stream = on("a", packetize(loud, first_capture=START + 0.1, ssrc=1))
    stream += on("b", packetize(loud, first_capture=START + 0.1, ssrc=2, codec="PCMA"))
    mixed = play(make_recorder(tmp_path), stream, 1.5)
    both = g711_round_trip(loud, "PCMU").astype(np.int32) + g711_round_trip(loud, "PCMA")
    expected = np.clip(both, -32768, 32767)
    assert np.array_equal(mixed[800 : 800 + len(loud)], expected)
    assert mixed.max() == 32767 and mixed.min() == -32768


@pytest.mark.parametrize("internal", ["a", "b"])
def test_stereo_internal_user_left_whoever_speaks_first(tmp_path: Path, internal: str) -> None:
    caller = chirp(1.0)
    callee = noise(1.0, seed=3)
    stream = on("a", packetize(caller, first_capture=START + 0.6, ssrc=1))
    stream += on("b", packetize(callee, first_capture=START + 0.1, ssrc=2))
    frames = play(make_recorder(tmp_path, channels=2, internal_leg=internal), stream, 2.0)
    assert frames.shape == (2 * RATE, 2)
    left, right = frames[:, 0], frames[:, 1]
    a_channel, b_channel = (left, right) if internal == "a" else (right, left)
    assert np.array_equal(a_channel[4800 : 4800 + RATE], g711_round_trip(caller))
    assert np.array_equal(b_channel[800 : 800 + RATE], g711_round_trip(callee))
    assert not a_channel[:4800].any() and not b_channel[:800].any()


def test_one_way_audio_leaves_the_silent_side_silent(tmp_path: Path) -> None:
    callee = noise(1.0, seed=4)
    stream = on("b", packetize(callee, first_capture=START + 0.2, ssrc=2))
    frames = play(make_recorder(tmp_path, channels=2, internal_leg="a"), stream, 1.5)
    assert len(frames) == round(1.5 * RATE)
    assert not frames[:, 0].any()
    assert np.array_equal(frames[1600 : 1600 + RATE, 1], g711_round_trip(callee))


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_no_rtp_at_all_gives_silence_of_the_call_length(
    tmp_path: Path, fmt: RecordingFormat, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = make_recorder(tmp_path, fmt=fmt)
    recorder.on_packet("a", "rtcp", b"\x80\xc8" + bytes(26), START + 1.0)
    with caplog.at_level(logging.WARNING, logger="callrec.media.recorder"):
        frames = play(recorder, [], 7.3, tick_every=0.4)
    assert len(frames) == round(7.3 * RATE) and not frames.any()
    result = recorder.close(START + 99)  # idempotent
    assert result.file is not None and result.file.bytes > (100_000 if fmt == "wav" else 100)
    assert result.file is not None and result.file.duration_s == pytest.approx(7.3)
    assert not result.media_seen
    assert "no RTP" in caplog.text


def test_five_percent_loss_and_60_ms_jitter_align_within_20_ms(tmp_path: Path) -> None:
    caller = noise(6.0, seed=5, level=4000)
    callee = noise(6.0, seed=6, level=4000)
    a = packetize(caller, first_capture=START + 0.3, delay=0.02, ssrc=1, first_sequence=65500)
    b = packetize(callee, first_capture=START + 0.34, delay=0.02, ssrc=2, codec="PCMA")
    stream = on("a", add_jitter(a, 0.06, seed=1, loss=0.05))
    stream += on("b", add_jitter(b, 0.06, seed=2, loss=0.05))
    recorder = make_recorder(tmp_path, channels=2)
    frames = play(recorder, stream, 7.0, tick_every=0.3)
    for channel, source, truth in ((0, caller, 0.32), (1, callee, 0.36)):
        lag = lag_of(source, frames[:, channel])
        assert abs(lag - truth * RATE) <= 0.02 * RATE
        recovered = np.count_nonzero(frames[lag : lag + len(source), channel]) / len(source)
        assert 0.9 < recovered < 0.99
    stats = recorder.leg_stats("a")
    assert stats.timeline.late == 0 and stats.timeline.anchors == 1


def test_lossless_stereo_correlates_per_channel(tmp_path: Path) -> None:
    caller = chirp(2.0)
    callee = noise(2.0, seed=7)
    stream = on("a", packetize(caller, first_capture=START + 0.25, ssrc=1))
    stream += on("b", packetize(callee, first_capture=START + 0.3, ssrc=2))
    frames = play(make_recorder(tmp_path, channels=2), stream, 3.0)
    for channel, source in ((0, caller), (1, callee)):
        lag = lag_of(source, frames[:, channel])
        assert correlation_at(source, frames[:, channel], lag) >= 0.95


def test_comfort_noise_and_telephone_events_are_not_audio(tmp_path: Path) -> None:
    talk = noise(0.4, seed=8)
    first = packetize(talk, first_capture=START + 0.1, first_sequence=1, first_timestamp=0)
    second = packetize(
        talk, first_capture=START + 1.0, first_sequence=30, first_timestamp=round(0.9 * RATE)
    )
    extra: list[SentPacket] = []
    # Comfort noise (PT 13) during the pause and an RFC 4733 event (PT 101) with a
    # payload that would be loud garbage if it were decoded as µ-law.
    for k, t in enumerate(np.arange(0.55, 0.95, 0.1)):
        ts = round((t - 0.1) * RATE)
        extra.append(
            SentPacket(
                RtpPacket(
                    payload_type=13, sequence=21 + k, timestamp=ts, ssrc=0x1234, payload=b"\x40"
                ),
                START + t,
            )
        )
        extra.append(
            SentPacket(
                RtpPacket(
                    payload_type=101,
                    sequence=25 + k,
                    timestamp=ts,
                    ssrc=0x1234,
                    payload=b"\x01\x0a\x00\xa0" * 40,
                ),
                START + t + 0.01,
            )
        )
    recorder = make_recorder(
        tmp_path,
        codecs={"a": {0: "PCMU", 101: "telephone-event"}},
        telephone_event_pts={"a": [101]},
    )
    mixed = play(recorder, on("a", first + second + extra), 1.6)
    expected = g711_round_trip(talk)
    assert np.array_equal(mixed[800:4000], expected)
    assert not mixed[4000:8000].any()
    assert np.array_equal(mixed[8000:11200], expected)
    stats = recorder.leg_stats("a")
    assert stats.comfort_noise == 4 and stats.telephone_events == 4
    assert not recorder.unrecordable


def test_unsupported_codec_marks_unrecordable_and_keeps_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    speech = noise(1.0, seed=9)
    g729 = [
        SentPacket(
            RtpPacket(payload_type=18, sequence=k, timestamp=k * 160, ssrc=9, payload=bytes(20)),
            START + 0.1 + k * 0.02,
        )
        for k in range(40)
    ]
    dynamic = [
        SentPacket(
            RtpPacket(payload_type=96, sequence=k, timestamp=k * 160, ssrc=8, payload=bytes(60)),
            START + 0.1 + k * 0.02,
        )
        for k in range(5)
    ]
    stream = on("a", g729) + on("b", dynamic)
    stream += on("b", packetize(speech, first_capture=START + 0.2, ssrc=2))
    recorder = make_recorder(tmp_path, codecs={"a": {18: "G729"}, "b": {96: "opus"}})
    with caplog.at_level(logging.WARNING, logger="callrec.media.recorder"):
        mixed = play(recorder, stream, 1.5)
    assert recorder.unrecordable
    assert recorder.unrecordable_reason is not None and "G729" in recorder.unrecordable_reason
    assert caplog.text.count("unrecordable codec") == 1
    assert np.array_equal(mixed[1600 : 1600 + RATE], g711_round_trip(speech))
    assert recorder.leg_stats("a").undecodable == 40
    result = recorder.close(START + 9)
    assert result.unrecordable_reason == recorder.unrecordable_reason


def test_malformed_packets_are_counted_and_skipped(tmp_path: Path) -> None:
    recorder = make_recorder(tmp_path)
    recorder.on_packet("a", "rtp", b"\x00\x01garbage", START + 0.1)
    recorder.on_packet("c", "rtp", b"\x80" * 200, START + 0.1)
    recorder.tick(START + 1.0)
    assert recorder.leg_stats("a").malformed == 1
    assert not recorder.close(START + 1.0).media_seen


def test_file_grows_while_the_call_runs(tmp_path: Path) -> None:
    source = noise(3.0, seed=10)
    stream = on("a", packetize(source, first_capture=START, ssrc=1))
    writer = RecordingWriter(tmp_path / "live.wav", 1)
    recorder = Recorder(writer, start_time=START)
    for sent in (p for _, p in stream if p.arrival <= START + 2.0):
        recorder.on_packet("a", "rtp", sent.data, sent.arrival)
    recorder.tick(START + 2.0)
    assert writer.frames_written == round((2.0 - recorder.reorder_window_s) * RATE)
    # What is on disk right now (as a kill -9 would leave it) holds that audio.
    raw = (tmp_path / "live.wav").read_bytes()
    on_disk = np.frombuffer(raw[44:], dtype=np.int16)
    assert np.array_equal(on_disk, g711_round_trip(source)[: len(on_disk)])
    recorder.close(START + 3.0)


@pytest.mark.parametrize("mode", ["silence", "skip"])
def test_pause_and_resume(tmp_path: Path, mode: str) -> None:
    source = noise(4.0, seed=11)
    stream = on("a", packetize(source, first_capture=START, ssrc=1))
    recorder = make_recorder(tmp_path, paused_mode=mode, start_paused=True)
    ordered = [p for _, p in stream]
    events = {0.5: "resume", 1.5: "pause", 2.5: "resume"}
    index = 0
    for tick in np.arange(0.25, 4.0, 0.25):
        now = START + tick
        while index < len(ordered) and ordered[index].arrival <= now:
            recorder.on_packet("a", "rtp", ordered[index].data, ordered[index].arrival)
            index += 1
        action = events.get(round(tick, 2))
        if action == "resume":
            recorder.resume(now)
        elif action == "pause":
            recorder.pause(now)
        recorder.tick(now)
    assert not recorder.paused
    for sent in ordered[index:]:
        recorder.on_packet("a", "rtp", sent.data, sent.arrival)
    result = recorder.close(START + 4.0)
    assert result.segments == [(0.5, 1.5), (2.5, 4.0)]
    assert result.duration_s == pytest.approx(4.0)
    assert result.file is not None
    data, _ = soundfile.read(result.file.path, dtype="int16")
    decoded = g711_round_trip(source)
    if mode == "silence":
        expected = decoded.copy()
        expected[: RATE // 2] = 0
        expected[round(1.5 * RATE) : round(2.5 * RATE)] = 0
    else:
        expected = np.concatenate(
            [decoded[RATE // 2 : round(1.5 * RATE)], decoded[round(2.5 * RATE) :]]
        )
    assert np.array_equal(data, expected)


def test_codec_change_mid_call(tmp_path: Path) -> None:
    first = noise(0.5, seed=12)
    second = noise(0.5, seed=13)
    recorder = make_recorder(tmp_path, codecs={"a": {96: "PCMU"}})
    for sent in packetize(first, first_capture=START, payload_type=96, ssrc=1):
        recorder.on_packet("a", "rtp", sent.data, sent.arrival)
    recorder.tick(START + 0.6)
    recorder.set_codecs("a", {96: "PCMA"})
    later = packetize(
        second,
        codec="PCMA",
        payload_type=96,
        first_capture=START + 0.5,
        ssrc=1,
        first_timestamp=50000 + 4000,
        first_sequence=1025,
    )
    for sent in later:
        recorder.on_packet("a", "rtp", sent.data, sent.arrival)
    result = recorder.close(START + 1.0)
    assert result.file is not None
    data, _ = soundfile.read(result.file.path, dtype="int16")
    assert np.array_equal(data[:4000], g711_round_trip(first))
    assert np.array_equal(data[4000:], g711_round_trip(second, "PCMA"))


def test_audio_listener_sees_each_leg_in_call_time(tmp_path: Path) -> None:
    heard: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    recorder = make_recorder(
        tmp_path, audio_listener=lambda leg, start, pcm: heard[leg].append((start, len(pcm)))
    )
    recorder.tick(START + 1.0)
    recorder.close(START + 2.0)
    for leg in "ab":
        assert heard[leg] == [(0, 6400), (6400, 9600)]


def test_a_minute_of_two_legs_decodes_fast(tmp_path: Path) -> None:
    """Per-packet Python work only: 6000 packets in well under a second."""
    caller = noise(60.0, seed=14)
    callee = noise(60.0, seed=15)
    a = packetize(caller, first_capture=START, ssrc=1)
    b = packetize(callee, codec="PCMA", first_capture=START + 0.04, ssrc=2)
    wires = [(p.data, p.arrival) for p in a], [(p.data, p.arrival) for p in b]
    recorder = make_recorder(tmp_path, channels=2)
    began = time.perf_counter()
    for second in range(1, 61):
        for leg, wire in zip("ab", wires, strict=True):
            for data, arrival in wire[(second - 1) * 50 : second * 50]:
                recorder.on_packet(leg, "rtp", data, arrival)
        recorder.tick(START + second)
    result = recorder.close(START + 61)
    elapsed = time.perf_counter() - began
    assert elapsed < 3.0, elapsed
    assert result.file is not None and result.file.frames == 61 * RATE


_DISK_FULL_CHILD = """
import resource, signal, sys
import numpy as np
from media.g711 import ulaw_encode
from media.recorder import Recorder
from media.rtp import RtpPacket
from media.writer import RecordingFormat, RecordingWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
recorder = Recorder(RecordingWriter(sys.argv[1], 1), start_time=0.0)
payload = ulaw_encode(np.random.default_rng(1).normal(0, 3000, 160)).tobytes()
for k in range(500):
    packet = RtpPacket(payload_type=0, sequence=k, timestamp=k * 160, ssrc=1, payload=payload)
    recorder.on_packet("a", "rtp", packet.serialize(), (k + 1) * 0.02)
    if k % 25 == 0:
        recorder.tick(k * 0.02)
result = recorder.close(10.0)
print("error" if result.error else "no error", recorder.error)
"""


def test_disk_full_ends_the_recording_not_the_call(tmp_path: Path) -> None:
    output = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DISK_FULL_CHILD), str(tmp_path / "full.wav")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert output.returncode == 0, output.stderr
    assert output.stdout.startswith("error"), output.stdout + output.stderr
    assert "writing stopped" in output.stderr


def test_ptime_of_30_ms_and_odd_packet_sizes(tmp_path: Path) -> None:
    source = noise(1.2, seed=16)
    packets = packetize(source, first_capture=START + 0.1, ptime=240, ssrc=1)
    mixed = play(make_recorder(tmp_path), on("a", packets), 1.6)
    assert np.array_equal(mixed[800 : 800 + len(source)], g711_round_trip(source))
    assert PTIME == 160
