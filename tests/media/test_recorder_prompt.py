"""Recorder.add_prompt: the announcement both phones heard goes into the file (sans-IO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.recorder import Recorder
from media.writer import RecordingWriter
from tests.media.stream_builder import RATE, chirp, packetize, sine

START = 1_700_000_000.0
CALL_SECONDS = 3.0


def record(tmp_path: Path, name: str, channels: int, prompts: list[tuple[np.ndarray, float]],
           pause: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
    """A 3 s call, leg a a 300 Hz tone, leg b silent; prompts added at call-time offsets."""
    recorder = Recorder(
        RecordingWriter(tmp_path / f"{name}.wav", channels, "wav"), start_time=START
    )
    packets = packetize(sine(CALL_SECONDS, 300.0, 4000), first_capture=START)
    index = 0
    now = START
    while now < START + CALL_SECONDS - 1e-9:
        now = round(now + 0.25, 6)
        for pcm, offset in prompts:
            if now - 0.25 < START + offset <= now:
                recorder.add_prompt(pcm, START + offset)
        if pause is not None and now - 0.25 < START + pause[0] <= now:
            recorder.pause(START + pause[0])
        if pause is not None and now - 0.25 < START + pause[1] <= now:
            recorder.resume(START + pause[1])
        while index < len(packets) and packets[index].arrival <= now:
            recorder.on_packet("a", "rtp", packets[index].data, packets[index].arrival)
            index += 1
        recorder.tick(now)
    result = recorder.close(START + CALL_SECONDS)
    assert result.file is not None
    data, rate = soundfile.read(result.file.path, dtype="int16")
    assert rate == RATE
    return np.asarray(data, dtype=np.int16)


@pytest.mark.parametrize("channels", [1, 2])
def test_prompt_lands_at_its_call_time_on_top_of_both_legs(tmp_path: Path, channels: int) -> None:
    prompt = chirp(0.6) // 2
    plain = record(tmp_path, "plain", channels, [])
    with_prompt = record(tmp_path, "prompt", channels, [(prompt, 1.1)])
    assert plain.shape == with_prompt.shape
    difference = with_prompt.astype(np.int32) - plain.astype(np.int32)
    expected = np.zeros(plain.shape[0], dtype=np.int32)
    at = round(1.1 * RATE)
    expected[at : at + prompt.size] = prompt
    if channels == 2:
        expected = np.stack([expected, expected], axis=1)  # both parties heard it
    assert np.array_equal(difference, expected)


def test_prompt_is_cut_at_the_end_of_the_call_and_silenced_when_paused(tmp_path: Path) -> None:
    prompt = chirp(1.0) // 2
    plain = record(tmp_path, "plain", 1, [], pause=(0.5, 1.0))
    mixed = record(tmp_path, "mixed", 1, [(prompt, 0.25), (prompt, 2.5)], pause=(0.5, 1.0))
    difference = mixed.astype(np.int32) - plain.astype(np.int32)
    assert difference.size == round(CALL_SECONDS * RATE)
    expected = np.zeros(difference.size, dtype=np.int32)
    expected[2000:4000] = prompt[:2000]  # before the pause at 0.5 s
    expected[8000:10000] = prompt[6000:]  # after the resume at 1.0 s
    expected[20000:] = prompt[:4000]  # the call ends 0.5 s into the second prompt
    assert np.array_equal(difference, expected)


def test_prompt_resampled_and_saturating(tmp_path: Path) -> None:
    loud = np.full(16000, 32000, dtype=np.int16)  # 1 s at 16 kHz
    recorder = Recorder(RecordingWriter(tmp_path / "loud.wav", 1, "wav"), start_time=START)
    recorder.add_prompt(loud, START + 0.5, sample_rate=16000)
    recorder.add_prompt(loud, START + 0.5, sample_rate=16000)
    with pytest.raises(ValueError, match="1-D"):
        recorder.add_prompt(np.zeros((2, 2), np.int16), START)
    result = recorder.close(START + 2.0)
    assert result.file is not None
    data, _ = soundfile.read(result.file.path, dtype="int16")
    assert not data[:3990].any() and not data[12010:].any()
    assert np.all(data[4100:11900] == 32767)  # two prompts summed, clipped, not wrapped
