"""The first packet after the answer is kept whole: its audio began before the answer
(it is sent once captured), so the file starts at that audio, not at the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from media import g711
from media.recorder import Recorder
from media.writer import RecordingWriter
from tests.media.stream_builder import noise, packetize

START = 1_700_000_000.0
PTIME_30MS = 240


def record(tmp_path: Path, stream: list[tuple[str, object]], end: float, **options: object):
    writer = RecordingWriter(tmp_path / "call.wav", 2, "wav")
    recorder = Recorder(writer, start_time=START, **options)  # type: ignore[arg-type]
    now = START
    for leg, sent in stream:
        while sent.arrival > now + 0.25:  # type: ignore[attr-defined]
            now += 0.25
            recorder.tick(now)
        recorder.on_packet(leg, "rtp", sent.data, sent.arrival)  # type: ignore[attr-defined]
    result = recorder.close(START + end)
    assert result.file is not None
    frames, _ = soundfile.read(result.file.path, dtype="int16")
    return recorder, result, np.asarray(frames)


@pytest.mark.parametrize("first_arrival_ms", [0.5, 1.5, 2.0, 12.0])
def test_first_30_ms_packet_after_answer_is_in_the_file_sample_for_sample(
    tmp_path: Path, first_arrival_ms: float
) -> None:
    """The SIPp case of issue 14: 30 ms packets, the first arriving ~1.5 ms after the
    answer. The file's first sample is the first packet's first sample."""
    caller = noise(1.92, seed=7)  # 64 packets of 30 ms
    # Capture so that the first packet (captured in 30 ms) arrives first_arrival_ms
    # after the answer.
    first_capture = START + first_arrival_ms / 1000 - 0.030
    packets = packetize(caller, first_capture=first_capture, ptime=PTIME_30MS)
    recorder, result, frames = record(tmp_path, [("a", p) for p in packets], 2.5)
    expected = g711.decode("PCMU", g711.encode("PCMU", caller))
    left = frames[:, 0]
    assert np.array_equal(left[: expected.size], expected)
    assert not left[expected.size :].any()
    # Call time 0 moved back to the first packet's first sample.
    lead = 0.030 - first_arrival_ms / 1000
    assert recorder.start_time == pytest.approx(START - max(0.0, lead), abs=1 / 8000)
    assert result.duration_s == pytest.approx(2.5 + max(0.0, lead), abs=1 / 8000)


def test_the_earlier_of_both_legs_sets_the_start(tmp_path: Path) -> None:
    caller = noise(1.0, seed=8)
    callee = noise(0.96, seed=9)  # 32 packets of 30 ms
    stream = [("a", p) for p in packetize(caller, first_capture=START - 0.018, ptime=160)]
    stream += [
        ("b", p) for p in packetize(callee, first_capture=START - 0.025, ptime=PTIME_30MS, ssrc=9)
    ]
    stream.sort(key=lambda item: item[1].arrival)
    _, _, frames = record(tmp_path, stream, 1.5)
    expected_b = g711.decode("PCMU", g711.encode("PCMU", callee))
    expected_a = g711.decode("PCMU", g711.encode("PCMU", caller))
    # Leg b's first packet began 25 ms before the answer, leg a's 18 ms before.
    assert np.array_equal(frames[: expected_b.size, 1], expected_b)
    offset = round(0.007 * 8000)
    assert not frames[:offset, 0].any()
    assert np.array_equal(frames[offset : offset + expected_a.size, 0], expected_a)


def test_on_demand_pause_still_covers_the_moved_start(tmp_path: Path) -> None:
    """A recording paused from the answer (on-demand) stays paused from the file's
    first sample; what is resumed later comes in at the right place."""
    caller = noise(1.92, seed=10)
    packets = packetize(caller, first_capture=START - 0.028, ptime=PTIME_30MS)
    writer = RecordingWriter(tmp_path / "call.wav", 1, "wav")
    recorder = Recorder(writer, start_time=START, start_paused=True, paused_mode="silence")
    now = START
    for sent in packets:
        while sent.arrival > now + 0.25:
            now += 0.25
            if now == START + 1.0:
                recorder.resume(START + 0.75)  # the feature code, still unwritten
            recorder.tick(now)
        recorder.on_packet("a", "rtp", sent.data, sent.arrival)
    result = recorder.close(START + 2.5)
    assert result.file is not None
    frames, _ = soundfile.read(result.file.path, dtype="int16")
    expected = g711.decode("PCMU", g711.encode("PCMU", caller))
    resumed_at = round((0.75 + 0.028) * 8000)
    assert not frames[:resumed_at].any()
    assert np.array_equal(frames[resumed_at : expected.size], expected[resumed_at:])
