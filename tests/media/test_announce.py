from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from media import g711
from media.announce import (
    BEEP_FREQUENCY_HZ,
    DEFAULT_PROMPT,
    FRAME_SAMPLES,
    AnnouncementError,
    StreamContinuity,
    load_announcement,
    make_beep,
    resample,
)
from media.rtp import MediaError, RtpPacket

SOURCE_SSRC = 0x11223344


def peak_frequency(signal: npt.ArrayLike, rate: int) -> float:
    values = np.asarray(signal, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(values * np.hanning(values.size)))
    return float(np.argmax(spectrum) * rate / values.size)


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    times = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * times)


def source_packet(sequence: int, ssrc: int = SOURCE_SSRC, payload: bytes = b"\x55" * 160) -> bytes:
    return RtpPacket(
        payload_type=0,
        sequence=sequence & 0xFFFF,
        timestamp=(1000 + 160 * sequence) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    ).serialize()


def assert_continuous(packets: list[RtpPacket]) -> None:
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF, (before, after)
        assert after.timestamp == (before.timestamp + 160) & 0xFFFFFFFF, (before, after)
        assert after.ssrc == before.ssrc


# -- prompt audio ----------------------------------------------------------------------


def test_resample_keeps_frequency_and_duration() -> None:
    for rate in (16000, 22050, 44100, 48000, 6000):
        out = resample(tone(1000.0, rate, 0.5), rate)
        assert out.size == 4000
        assert peak_frequency(out, 8000) == pytest.approx(1000.0, abs=4)
        assert np.sqrt(np.mean(out**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_resample_removes_what_would_alias() -> None:
    # 6 kHz at 48 kHz would fold onto 2 kHz at 8 kHz if it were merely decimated.
    out = resample(tone(6000.0, 48000, 0.5), 48000)
    assert np.max(np.abs(out)) < 0.01


def test_file_of_any_rate_and_channels_becomes_8k_mono_int16(tmp_path: Path) -> None:
    left = tone(700.0, 44100, 0.8, 0.4)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "notice.wav"
    soundfile.write(str(path), stereo, 44100, subtype="PCM_16")
    pcm = load_announcement(str(path))
    assert pcm is not None and pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size == 6400
    assert peak_frequency(pcm, 8000) == pytest.approx(700.0, abs=4)
    assert np.max(np.abs(pcm)) == pytest.approx(0.4 * 32767, rel=0.05)


def test_keywords() -> None:
    assert load_announcement("none") is None
    assert load_announcement(" NONE ") is None
    default = load_announcement("default")
    assert default is not None and default.dtype == np.int16
    assert 0.5 < default.size / 8000 < 4.0
    assert np.sqrt(np.mean(default.astype(np.float64) ** 2)) > 1000  # speech, not silence
    assert DEFAULT_PROMPT.stat().st_size < 50_000
    info = soundfile.info(str(DEFAULT_PROMPT))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")


def test_beep_is_a_half_second_of_1400_hz() -> None:
    beep = load_announcement("beep")
    assert beep is not None
    assert beep.size == 4000
    assert peak_frequency(beep, 8000) == pytest.approx(BEEP_FREQUENCY_HZ, abs=3)
    assert abs(int(beep[0])) < 100 and abs(int(beep[-1])) < 100  # ramped, no click
    assert peak_frequency(make_beep(1000.0, 0.2), 8000) == pytest.approx(1000.0, abs=6)


def test_unusable_settings_raise_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AnnouncementError, match=r"missing\.wav does not exist"):
        load_announcement(str(missing))
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF this is not audio at all" * 10)
    with pytest.raises(AnnouncementError, match=r"garbage\.wav is not readable audio"):
        load_announcement(str(garbage))
    with pytest.raises(AnnouncementError, match="empty"):
        load_announcement("  ")
    long_file = tmp_path / "long.wav"
    soundfile.write(str(long_file), np.zeros(8000 * 31, dtype=np.int16), 8000)
    with pytest.raises(AnnouncementError, match="at most 30 s"):
        load_announcement(str(long_file))
    assert issubclass(AnnouncementError, MediaError)


# -- injection and continuity ------------------------------------------------------------


def run_injection(continuity: StreamContinuity, pcm: np.ndarray, codec: str, now: float,
                  payload_type: int = 0) -> list[RtpPacket]:  # fmt: skip
    injection = continuity.start_injection(pcm, payload_type, codec, now)
    packets = []
    while (data := injection.next_packet(now)) is not None:
        packets.append(RtpPacket.parse(data))
        now += 0.02
    continuity.end_injection(injection)
    return packets


@pytest.mark.parametrize(("codec", "payload_type"), [("PCMU", 0), ("PCMA", 8)])
def test_injection_encodes_and_continues_the_stream(codec: str, payload_type: int) -> None:
    last = source_packet(41)
    continuity = StreamContinuity(last, 10.0)
    pcm = (tone(440.0, 8000, 0.41) * 20000).astype(np.int16)  # 3280 samples: 20.5 frames
    packets = run_injection(continuity, pcm, codec, 10.01, payload_type)
    assert len(packets) == 21
    previous = RtpPacket.parse(last)
    assert_continuous([previous, *packets])
    assert [p.marker for p in packets] == [True] + [False] * 20
    assert {p.payload_type for p in packets} == {payload_type}
    assert {len(p.payload) for p in packets} == {FRAME_SAMPLES}
    decoded = g711.decode(codec, b"".join(p.payload for p in packets))
    expected = g711.decode(codec, g711.encode(codec, pcm))
    assert np.array_equal(decoded[: pcm.size], expected)
    silence = g711.decode(codec, g711.encode(codec, np.zeros(80, np.int16)))
    assert np.array_equal(decoded[pcm.size :], silence)  # the last frame is padded


def test_forwarding_is_renumbered_after_the_injection() -> None:
    continuity = StreamContinuity(source_packet(99), 1.98)
    now = 2.0
    sent = [RtpPacket.parse(source_packet(99))]
    injection = continuity.start_injection(np.full(800, 1000, np.int16), 0, "PCMU", now)
    sequence = 100
    # The far side keeps sending while the prompt plays: those packets are dropped.
    while (data := injection.next_packet(now)) is not None:
        sent.append(RtpPacket.parse(data))
        assert continuity.forward(source_packet(sequence), now + 0.005) is None
        sequence += 1
        now += 0.02
    continuity.end_injection(injection)
    for _ in range(10):
        out = continuity.forward(source_packet(sequence, payload=bytes([sequence]) * 160), now)
        assert out is not None
        packet = RtpPacket.parse(bytes(out))
        assert packet.payload == bytes([sequence]) * 160  # only the header is rewritten
        sent.append(packet)
        sequence += 1
        now += 0.02
    assert len(sent) == 1 + 5 + 10
    assert_continuous(sent)
    assert {p.ssrc for p in sent} == {SOURCE_SSRC}


def test_far_side_ssrc_change_keeps_the_receivers_stream() -> None:
    continuity = StreamContinuity(source_packet(7), 0.0)
    sent = run_injection(continuity, np.zeros(320, np.int16), "PCMU", 0.01)
    now = 0.05
    for sequence in range(8, 20):
        sent.append(RtpPacket.parse(bytes(continuity.forward(source_packet(sequence), now) or b"")))
        now += 0.02
    for sequence in range(5000, 5010):  # a new SSRC with unrelated numbering
        out = continuity.forward(source_packet(sequence, ssrc=0xABCDEF), now)
        sent.append(RtpPacket.parse(bytes(out or b"")))
        now += 0.02
    assert_continuous(sent)
    assert {p.ssrc for p in sent} == {SOURCE_SSRC}


def test_fresh_stream_when_nothing_was_sent_yet() -> None:
    continuity = StreamContinuity(None, None, rng=random.Random(5))
    sent = run_injection(continuity, np.zeros(480, np.int16), "PCMA", 3.0, 8)
    assert sent[0].marker and len(sent) == 3
    now = 3.07
    for sequence in range(3):
        sent.append(RtpPacket.parse(bytes(continuity.forward(source_packet(sequence), now) or b"")))
        now += 0.02
    assert_continuous(sent)
    assert sent[0].ssrc == continuity.ssrc != SOURCE_SSRC
    other = StreamContinuity(None, None, rng=random.Random(6))
    assert (other.ssrc, other.last_sequence) != (continuity.ssrc, continuity.last_sequence)


def test_wraparound_of_sequence_and_timestamp() -> None:
    last = RtpPacket(sequence=0xFFFE, timestamp=0xFFFFFF00, ssrc=9, payload=b"\xff" * 160)
    continuity = StreamContinuity(last.serialize(), 0.0)
    sent = [last, *run_injection(continuity, np.zeros(480, np.int16), "PCMU", 0.02)]
    assert [p.sequence for p in sent] == [0xFFFE, 0xFFFF, 0, 1]
    assert_continuous(sent)


def test_silence_before_the_injection_advances_the_timestamp() -> None:
    continuity = StreamContinuity(source_packet(10), 100.0)
    first = run_injection(continuity, np.zeros(160, np.int16), "PCMU", 101.0)[0]
    assert first.sequence == 11
    assert first.timestamp == 1000 + 160 * 10 + 8000  # one second later


def test_late_packet_from_before_the_anchor_is_dropped() -> None:
    continuity = StreamContinuity(source_packet(1), 0.0)
    run_injection(continuity, np.zeros(160, np.int16), "PCMU", 0.01)
    assert continuity.forward(source_packet(20), 0.05) is not None
    assert continuity.forward(source_packet(19), 0.06) is None  # would repeat a number
    out = continuity.forward(source_packet(21), 0.07)
    assert out is not None and RtpPacket.parse(bytes(out)).sequence == continuity.last_sequence


def test_a_new_injection_stops_the_running_one() -> None:
    continuity = StreamContinuity(source_packet(1), 0.0)
    first = continuity.start_injection(np.zeros(1600, np.int16), 0, "PCMU", 0.01)
    sent = [RtpPacket.parse(first.next_packet(0.01) or b"")]
    second = continuity.start_injection(np.zeros(320, np.int16), 0, "PCMU", 0.03)
    assert first.finished and first.next_packet(0.03) is None
    continuity.end_injection(first)  # the old one ending must not end the new one
    assert continuity.injecting
    while (data := second.next_packet(0.03)) is not None:
        sent.append(RtpPacket.parse(data))
    continuity.end_injection(second)
    assert not continuity.injecting
    assert_continuous(sent)
    assert [p.marker for p in sent] == [True, True, False]


def test_rejects_codecs_it_cannot_encode() -> None:
    continuity = StreamContinuity(source_packet(1), 0.0)
    with pytest.raises(MediaError, match="G729"):
        continuity.start_injection(np.zeros(160, np.int16), 18, "G729", 0.0)
    with pytest.raises(MediaError, match="payload type"):
        continuity.start_injection(np.zeros(160, np.int16), 128, "PCMU", 0.0)
