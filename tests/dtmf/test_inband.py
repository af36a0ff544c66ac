"""The generated DTMF receiver battery (see signals.py) plus talk-off on espeak-ng speech."""

from __future__ import annotations

import numpy as np
import pytest

from dtmf.inband import COLUMN_FREQUENCIES, ROW_FREQUENCIES, InbandDetector, dbm0_to_peak
from testkit.signals import (
    BATTERY,
    SAMPLE_RATE,
    Condition,
    detect,
    render,
    speech,
    speech_tools_available,
    tone,
    ulaw_round_trip,
)

# Measured: 0 false digits in 60 min of this speech (bench/dtmf.py), against 11 for
# multimon-ng. Ten minutes here keeps the test to a few seconds.
TALK_OFF_MINUTES = 10
MAX_TALK_OFF_DIGITS = 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("condition", BATTERY, ids=[c.name for c in BATTERY])
def test_battery(condition: Condition, seed: int) -> None:
    rng = np.random.default_rng(seed)
    audio = render(condition, rng)
    digits = detect(InbandDetector(SAMPLE_RATE), audio, rng)
    assert digits == (condition.digits if condition.expect else "")


def _samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


def test_event_time_is_the_tone_start_on_the_callers_clock() -> None:
    rng = np.random.default_rng(7)
    lead = _samples(333)
    audio = ulaw_round_trip(
        np.concatenate(
            [np.zeros(lead), tone("7", _samples(60), Condition("t", True), rng), np.zeros(800)]
        )
    )
    detector = InbandDetector(leg="b")
    events = [
        e
        for i in range(0, audio.size, 160)
        for e in detector.feed(audio[i : i + 160], 1.7e9 + i / SAMPLE_RATE)
    ]
    assert [(e.digit, e.method, e.leg) for e in events] == [("7", "inband", "b")]
    assert events[0].at == pytest.approx(1.7e9 + 0.333, abs=0.006)


def test_chunking_does_not_change_the_result() -> None:
    rng = np.random.default_rng(3)
    audio = render(Condition("seq", True, tone_ms=45, pause_ms=60, snr_db=18), rng)
    whole = InbandDetector().feed(audio, 0.0)
    detector = InbandDetector()
    single = []
    for index in range(audio.size):
        single += detector.feed(audio[index : index + 1], index / SAMPLE_RATE)
    assert [(e.digit, round(e.at, 6)) for e in single] == [(e.digit, round(e.at, 6)) for e in whole]
    assert "".join(e.digit for e in whole) == "123A456B789C*0#D"


def test_long_tone_is_one_digit_and_short_break_is_not_a_new_one() -> None:
    rng = np.random.default_rng(4)
    condition = Condition("t", True)
    audio = ulaw_round_trip(
        np.concatenate(
            [
                np.zeros(400),
                tone("5", _samples(1000), condition, rng),
                np.zeros(_samples(10)),
                tone("5", _samples(100), condition, rng),
                np.zeros(800),
            ]
        )
    )
    assert "".join(e.digit for e in InbandDetector().feed(audio, 0.0)) == "5"


def test_stream_gap_resets_and_counts_as_a_pause() -> None:
    rng = np.random.default_rng(5)
    digit = ulaw_round_trip(tone("9", _samples(80), Condition("t", True), rng))
    detector = InbandDetector()
    first = detector.feed(digit, 10.0)
    second = detector.feed(digit, 10.5)  # 420 ms of audio were never received
    assert [e.digit for e in first + second] == ["9", "9"]
    assert second[0].at == pytest.approx(10.5, abs=0.006)


def test_silence_and_noise_give_nothing() -> None:
    rng = np.random.default_rng(6)
    noise = ulaw_round_trip(rng.normal(0, dbm0_to_peak(-20), SAMPLE_RATE * 20))
    assert InbandDetector().feed(noise, 0.0) == []
    assert InbandDetector().feed(np.zeros(SAMPLE_RATE * 2, dtype=np.int16), 0.0) == []


def _pair_with(extra: dict[float, float], rng: np.random.Generator) -> np.ndarray:
    n = np.arange(_samples(80))
    audio = tone("1", n.size, Condition("t", True, row_level=-10, column_level=-10), rng)
    for frequency, level in extra.items():
        audio += dbm0_to_peak(level) * np.sin(2 * np.pi * frequency * n / SAMPLE_RATE + 1.0)
    return ulaw_round_trip(np.concatenate([np.zeros(400), audio, np.zeros(800)]))


@pytest.mark.parametrize(
    ("extra", "detected"),
    [
        ({}, "1"),
        ({2 * ROW_FREQUENCIES[0]: -30.0, 2 * COLUMN_FREQUENCIES[0]: -30.0}, "1"),
        # second harmonics 8 dB under their fundamentals: a distorted (speech-like) source
        ({2 * ROW_FREQUENCIES[0]: -18.0, 2 * COLUMN_FREQUENCIES[0]: -18.0}, ""),
        # a third tone holding a quarter of the energy: not a clean tone pair
        ({400.0: -10.0}, ""),
        ({400.0: -25.0}, "1"),
    ],
    ids=["clean", "weak-harmonics", "strong-harmonics", "third-tone", "weak-third-tone"],
)
def test_talk_off_guards(extra: dict[float, float], detected: str) -> None:
    audio = _pair_with(extra, np.random.default_rng(8))
    assert "".join(e.digit for e in InbandDetector().feed(audio, 0.0)) == detected


@pytest.mark.skipif(not speech_tools_available(), reason="espeak-ng and sox are needed")
def test_talk_off_on_speech() -> None:
    talk = speech(TALK_OFF_MINUTES * 60)
    detector = InbandDetector()
    events = [
        e
        for i in range(0, talk.size, 160)
        for e in detector.feed(talk[i : i + 160], i / SAMPLE_RATE)
    ]
    assert len(events) <= MAX_TALK_OFF_DIGITS, [(e.digit, round(e.at, 2)) for e in events]


@pytest.mark.skipif(not speech_tools_available(), reason="espeak-ng and sox are needed")
def test_digits_over_speech_are_still_found() -> None:
    rng = np.random.default_rng(9)
    talk = speech(20).astype(np.float64)
    start = _samples(5000)
    digits = render(Condition("t", True, row_level=-6, column_level=-6, digits="*1"), rng)
    talk[start : start + digits.size] += digits
    events = InbandDetector().feed(ulaw_round_trip(talk), 0.0)
    # Speech under the tones is far worse than 15 dB S/N; report what survives.
    assert "".join(e.digit for e in events) == "*1"
