"""media.codecs: G.722 and Opus decoding (frames encoded with PyAV), the resampler, and
legs of different rates mixed into one 16 kHz recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.recording.session import negotiated_rate
from media.announce import resample
from media.codecs import LegDecoder, Resampler, recording_rate
from media.recorder import Recorder
from media.writer import RecordingWriter
from tests.media.stream_builder import chirp, correlation_at, lag_of, packetize
from tests.media.wideband import encode_frames, packetize_wideband, wide_chirp, wide_noise

START = 1_700_000_000.0
G722_CODEC_DELAY = 22  # samples at 16 kHz, ffmpeg's G.722 encoder then decoder


def best(reference: np.ndarray, signal: np.ndarray) -> tuple[float, int]:
    lag = lag_of(reference, signal)
    return correlation_at(reference, signal, lag), lag


def test_g722_frames_decode_to_16_khz() -> None:
    source = wide_chirp(1.0, 16000)
    payloads = encode_frames("G722", source)
    assert {len(p) for p in payloads} == {160}  # 20 ms of G.722 is 160 octets
    decoded = np.concatenate(LegDecoder(16000).decode("G722", payloads))
    assert decoded.size == source.size
    correlation, lag = best(source, decoded)
    assert correlation > 0.95
    assert lag == G722_CODEC_DELAY


def test_g722_decoding_is_the_same_in_one_batch_or_packet_by_packet() -> None:
    payloads = encode_frames("G722", wide_noise(0.5, 16000, seed=3))
    one_batch = np.concatenate(LegDecoder(16000).decode("G722", payloads))
    decoder = LegDecoder(16000)
    one_by_one = np.concatenate([decoder.decode("G722", [p])[0] for p in payloads])
    assert np.array_equal(one_batch, one_by_one)


def test_opus_frames_decode_and_resample_to_16_khz() -> None:
    source48 = wide_chirp(1.0, 48000, high=7500)
    payloads = encode_frames("OPUS", source48, bit_rate=48000)
    decoder = LegDecoder(16000)
    decoded = np.concatenate(decoder.decode("OPUS", payloads))
    assert decoded.size == 16000  # 50 frames of 20 ms
    reference = wide_chirp(1.0, 16000, high=7500)
    correlation, lag = best(reference, decoded)
    assert correlation > 0.9
    assert decoder.delay("OPUS") > 0
    # The lag is Opus's own delay (6.5 ms) plus the resampler's, no more.
    assert 0 < lag < 0.015 * 16000 + decoder.delay("OPUS")


def test_a_garbled_opus_packet_is_lost_audio_not_an_error() -> None:
    payloads = encode_frames("OPUS", wide_chirp(0.2, 48000))
    decoded = LegDecoder(16000).decode("OPUS", [payloads[0], b"\xff" * 3, payloads[1]])
    assert [p.size for p in decoded] == [320, 0, 320]


def test_upsampling_keeps_the_tone_and_leaves_no_image() -> None:
    """Sample repetition leaves the 3 kHz tone's image at 5 kHz; the filter must not."""
    t = np.arange(8000) / 8000
    tone = (10000 * np.sin(2 * np.pi * 3000 * t)).astype(np.int16)
    resampler = Resampler(8000, 16000)
    out = np.concatenate([resampler.process(tone[i : i + 160]) for i in range(0, 8000, 160)])
    assert out.size == 16000
    spectrum = np.abs(np.fft.rfft(out[2000:].astype(float) * np.hanning(14000)))
    freqs = np.fft.rfftfreq(14000, 1 / 16000)
    tone_level = spectrum[np.abs(freqs - 3000) < 20].max()
    image_level = spectrum[np.abs(freqs - 5000) < 20].max()
    assert 20 * np.log10(tone_level / image_level) > 70
    ideal = 10000 * np.sin(2 * np.pi * 3000 * (np.arange(16000) - resampler.delay) / 16000)
    assert np.abs(out[1000:] - ideal[1000:]).max() < 40  # int16 rounding and ripple


def test_resampling_in_chunks_equals_one_go() -> None:
    signal = wide_noise(0.3, 48000, seed=4)
    whole = Resampler(48000, 16000).process(signal)
    chunked = Resampler(48000, 16000)
    sizes = [960, 7, 953, 1920, 3000]
    parts, start = [], 0
    for size in sizes:
        parts.append(chunked.process(signal[start : start + size]))
        start += size
    parts.append(chunked.process(signal[start:]))
    assert np.array_equal(whole, np.concatenate(parts))


@pytest.mark.parametrize(
    ("codecs", "rate"),
    [(["PCMU"], 8000), (["PCMA", "G722"], 16000), (["opus"], 16000), ([], 8000)],
)
def test_recording_rate(codecs: list[str], rate: int) -> None:
    assert recording_rate(codecs) == rate


def sdp(*formats: str) -> bytes:
    names = {"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000", "111": "opus/48000/2"}
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines.append("m=audio 4000 RTP/AVP " + " ".join([*formats, "101"]))
    lines += [f"a=rtpmap:{f} {names[f]}" for f in formats]
    lines.append("a=rtpmap:101 telephone-event/8000")
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize(
    ("offer", "answer", "rate"),
    [
        (("9", "0"), ("9",), 16000),
        (("9", "0"), ("0",), 8000),  # the far end chose G.711
        (("0", "111"), ("111", "0"), 16000),  # Opus in the answer: it may be sent
        (("0",), ("0",), 8000),
    ],
)
def test_negotiated_rate_is_wideband_only_when_both_legs_have_it(
    offer: tuple[str, ...], answer: tuple[str, ...], rate: int
) -> None:
    assert negotiated_rate({"a": sdp(*offer), "b": sdp(*answer)}) == rate


def test_a_g711_leg_and_a_g722_leg_mix_into_one_16_khz_file(tmp_path: Path) -> None:
    """Leg a sends G.711 (8 kHz), leg b G.722 (16 kHz): both land in the 16 kHz stereo
    file, the narrowband one resampled with the filter, and aligned to within 1 ms."""
    narrow = chirp(2.0, 300, 3300)
    wide = wide_chirp(2.0, 16000, 300, 7000)
    writer = RecordingWriter(tmp_path / "mixed.wav", 2, "wav", 16000)
    recorder = Recorder(writer, start_time=START, codecs={"b": {9: "G722"}})
    packets = [("a", p) for p in packetize(narrow, first_capture=START + 0.3, delay=0.005)]
    packets += [
        ("b", p)
        for p in packetize_wideband(
            "G722", wide, payload_type=9, first_capture=START + 0.3, delay=0.005
        )
    ]
    packets.sort(key=lambda item: item[1].arrival)
    now = START
    for leg, sent in packets:
        if sent.arrival > now + 0.25:
            now += 0.25
            recorder.tick(now)
        recorder.on_packet(leg, "rtp", sent.data, sent.arrival)
    result = recorder.close(START + 3.0)
    assert result.file is not None and result.file.sample_rate == 16000
    assert not recorder.unrecordable
    frames, rate = soundfile.read(result.file.path, dtype="int16")
    assert rate == 16000 and frames.shape[1] == 2
    expected_narrow = np.round(resample(narrow.astype(float), 8000, 16000)).astype(np.int16)
    left, lag_left = best(expected_narrow, frames[:, 0])
    right, lag_right = best(wide, frames[:, 1])
    assert left > 0.98
    assert right > 0.95
    # Aligned to the sample once G.722's own codec delay (22 samples, encoder and decoder
    # QMF filters) is counted: the resampler's delay on leg a was compensated.
    assert abs(lag_right - G722_CODEC_DELAY - lag_left) <= 2
    # Both start 0.3 s into the call plus the 5 ms network delay of the first packet.
    assert abs(lag_left - round(0.305 * 16000)) <= 2
