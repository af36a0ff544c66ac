"""An uploaded notice: what is accepted (RIFF/WAVE; PCM, A-law, µ-law; at most 30 s and
5 MB; not silent), what is refused and why, and the conversion to 8 kHz mono through a
band-limiting filter (nothing above 4 kHz folds back into the telephone band)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from media.announce import read_prompt
from media.notice_upload import MAX_NOTICE_BYTES, NoticeRejected, convert_notice


def wav_bytes(
    samples: npt.ArrayLike, rate: int, subtype: str = "PCM_16", file_format: str = "WAV"
) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.asarray(samples), rate, format=file_format, subtype=subtype)
    return out.getvalue()


def tone(
    frequency: float, rate: int, seconds: float, amplitude: float = 0.3
) -> npt.NDArray[np.float64]:
    t = np.arange(int(rate * seconds)) / rate
    result: npt.NDArray[np.float64] = amplitude * np.sin(2 * np.pi * frequency * t)
    return result


def level_at(pcm: npt.NDArray[np.int16], frequency: float, rate: int = 8000) -> float:
    """The amplitude (of full scale) of one frequency in `pcm` (a windowed DFT bin)."""
    signal = pcm.astype(np.float64) / 32767.0
    window = np.hanning(signal.size)
    spectrum = np.abs(np.fft.rfft(signal * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(signal.size, 1 / rate)
    return float(spectrum[np.argmin(np.abs(freqs - frequency))])


def test_16k_stereo_becomes_8k_mono_without_aliasing() -> None:
    rate = 16000
    # Left: 1 kHz, right: 1 kHz and 6 kHz; a naive decimation would fold 6 kHz to 2 kHz.
    left = tone(1000, rate, 2.0)
    right = tone(1000, rate, 2.0) + tone(6000, rate, 2.0)
    converted = convert_notice(wav_bytes(np.stack([left, right], axis=1), rate))
    info = sf.info(io.BytesIO(converted.wav))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "PCM_16", "WAV")
    assert (converted.source_rate, converted.source_channels) == (16000, 2)
    assert converted.source_encoding == "16-bit PCM"
    assert converted.seconds == pytest.approx(2.0, abs=0.001)
    pcm, read_rate = sf.read(io.BytesIO(converted.wav), dtype="int16")
    assert read_rate == 8000 and pcm.size == 16000
    assert level_at(pcm, 1000) == pytest.approx(0.3, rel=0.05)
    assert level_at(pcm, 2000) < 0.3 * 10 ** (-60 / 20)  # no alias of the 6 kHz tone
    # What a worker loads from the stored file is the converted audio, sample for sample.
    assert np.array_equal(pcm, converted.samples)


def test_stored_notice_is_loaded_unchanged(tmp_path: Path) -> None:
    converted = convert_notice(wav_bytes(tone(440, 44100, 1.5), 44100, "PCM_24"))
    path = tmp_path / "notice.wav"
    path.write_bytes(converted.wav)
    assert np.array_equal(read_prompt(path), converted.samples)
    assert converted.source_encoding == "24-bit PCM"


@pytest.mark.parametrize(("subtype", "encoding"), [("ALAW", "A-law"), ("ULAW", "µ-law")])
def test_g711_wavs_are_accepted(subtype: str, encoding: str) -> None:
    converted = convert_notice(wav_bytes(tone(800, 8000, 1.0), 8000, subtype))
    assert converted.source_encoding == encoding
    pcm, _ = sf.read(io.BytesIO(converted.wav), dtype="int16")
    assert level_at(pcm, 800) == pytest.approx(0.3, rel=0.1)


def test_extensible_pcm_is_accepted() -> None:
    data = wav_bytes(np.stack([tone(500, 16000, 1.0)] * 3, axis=1), 16000, file_format="WAVEX")
    assert struct.unpack_from("<H", data, 20)[0] == 0xFFFE
    assert convert_notice(data).source_channels == 3


def _refused(data: bytes) -> NoticeRejected:
    with pytest.raises(NoticeRejected) as refused:
        convert_notice(data)
    return refused.value


def test_refusals_say_why() -> None:
    assert _refused(b"ID3\x04not a wav at all").reason == "not-wav"
    assert _refused(wav_bytes(tone(440, 8000, 1.0), 8000, file_format="FLAC")
                    ).reason == "not-wav"  # fmt: skip
    floating = _refused(wav_bytes(tone(440, 8000, 1.0), 8000, "FLOAT"))
    assert (floating.reason, floating.values) == ("encoding", {"encoding": "floating-point"})
    assert "PCM, A-law or µ-law" in str(floating)
    adpcm = _refused(wav_bytes(tone(440, 8000, 1.0), 8000, "IMA_ADPCM"))
    assert adpcm.reason == "encoding"
    long = _refused(wav_bytes(tone(440, 8000, 31.0), 8000))
    assert (long.reason, long.values["seconds"]) == ("too-long", 31.0)
    assert "at most 30 s" in str(long)
    assert _refused(wav_bytes(np.zeros(8000), 8000)).reason == "silent"
    assert _refused(wav_bytes(np.zeros(0), 8000)).reason in ("empty", "unreadable")
    whole = wav_bytes(tone(440, 8000, 1.0), 8000)
    assert _refused(whole[:30]).reason == "unreadable"  # cut inside the header
    big = _refused(b"RIFF" + b"\0" * MAX_NOTICE_BYTES)
    assert big.reason == "too-large" and "at most 5 MB" in str(big)


def test_a_30_second_notice_at_48k_is_accepted_within_the_size_limit() -> None:
    # 30 s at 8 kHz 16-bit is 480 kB; a 48 kHz mono 16-bit file of 30 s is 2.9 MB.
    data = wav_bytes(tone(300, 48000, 30.0), 48000)
    assert len(data) < MAX_NOTICE_BYTES
    converted = convert_notice(data)
    assert converted.seconds == pytest.approx(30.0, abs=0.001)
