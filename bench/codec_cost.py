"""CPU cost of decoding one 20 ms frame for the recorder, per codec (media.codecs).

Decodes 60 s of audio per codec the way the recorder does: batches of 12 frames (one
250 ms worker tick at 20 ms packets) through one leg's `LegDecoder`, to the file's rate
(and resampled to it where the codec's rate differs). Prints CPU microseconds per frame
(process time, so other load on the machine does not count). Frames are encoded with
PyAV beforehand; encoding is not measured.

    venv/bin/python -m bench.codec_cost [--seconds 60]

`--call-minutes N` measures instead what recording costs per call-minute, per codec:
N minutes of a two-leg call (both legs sending 20 ms packets) fed to one
`media.recorder.Recorder` as the worker's relay tap does, ticked every 250 ms, mixed
to stereo and written to a WAV in a temporary folder (decode, resample, place, mix,
write; not the relay's forwarding, nor the fsync), plus encoding the legal notice for
one leg in that codec (what a call pays once, before the encoded-prompt cache holds it).

    venv/bin/python -m bench.codec_cost --call-minutes 2
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from media import g711
from media.announce import load_announcement
from media.codecs import RTP_CLOCK_RATES, LegDecoder, encode_payloads
from media.recorder import Recorder
from media.writer import RecordingWriter

BATCH = 12


def _encode(name: str, rate: int, frame: int, pcm: np.ndarray) -> list[bytes]:
    context = av.CodecContext.create(name, "w")
    context.sample_rate = rate  # type: ignore[attr-defined]
    context.layout = "mono"  # type: ignore[attr-defined]
    context.format = "s16"  # type: ignore[attr-defined]
    if name == "libopus":
        context.bit_rate = 32000
    context.open()
    out: list[bytes] = []
    for start in range(0, len(pcm) - frame + 1, frame):
        audio = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[start : start + frame]).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        audio.sample_rate = rate
        audio.pts = start
        out += [bytes(p) for p in context.encode(audio)]  # type: ignore[attr-defined]
    return out


def _speech_like(seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(round(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 720, 1500), 1))
    signal = 6000 * envelope * voiced + rng.normal(0, 300, t.size)
    return np.clip(signal, -32768, 32767).astype(np.int16)


def measure(codec: str, payloads: list[bytes], file_rate: int) -> float:
    decoder = LegDecoder(file_rate)
    decoder.decode(codec, payloads[:BATCH])  # open the decoder outside the timing
    started = time.process_time()
    for start in range(0, len(payloads), BATCH):
        decoder.decode(codec, payloads[start : start + BATCH])
    return (time.process_time() - started) / len(payloads) * 1e6


def recording_cost(codec: str, pt: int, frames: list[bytes], file_rate: int) -> float:
    """CPU seconds to record `frames` (each leg sends them all) as a stereo file."""
    step = RTP_CLOCK_RATES[codec] // 50
    start = 1_700_000_000.0
    with tempfile.TemporaryDirectory() as folder:
        writer = RecordingWriter(Path(folder) / "call.wav", 2, "wav", samplerate=file_rate)
        recorder = Recorder(
            writer,
            start_time=start,
            codecs={"a": {pt: codec}, "b": {pt: codec}},
            label="bench",
        )
        header = struct.Struct("!BBHII")
        began = time.process_time()
        now = start
        for index, payload in enumerate(frames):
            arrival = start + (index + 1) * 0.02
            for leg, ssrc in (("a", 1), ("b", 2)):
                data = header.pack(0x80, pt, index & 0xFFFF, index * step, ssrc) + payload
                recorder.on_packet(leg, "rtp", data, arrival)
            if arrival - now >= 0.25:
                now = arrival
                recorder.tick(now)
        recorder.close(start + (len(frames) + 1) * 0.02)
        return time.process_time() - began


def call_frames(seconds: float) -> list[tuple[str, str, int, list[bytes], int]]:
    """`seconds` of speech-like audio in 20 ms frames per codec: (label, codec, payload
    type, frames, the file's rate), G.711 A-law first."""
    narrow = _speech_like(seconds, 8000)
    g711_frames = [
        g711.encode("PCMA", narrow[i : i + 160]).tobytes() for i in range(0, len(narrow), 160)
    ]
    g722_frames = _encode("g722", 16000, 320, _speech_like(seconds, 16000))
    opus_frames = _encode("libopus", 48000, 960, _speech_like(seconds, 48000))
    return [
        ("G.711 A-law, 8 kHz file", "PCMA", 8, g711_frames, 8000),
        ("G.722, 16 kHz file", "G722", 9, g722_frames, 16000),
        ("Opus 32 kbit/s, 16 kHz file", "OPUS", 111, opus_frames, 16000),
    ]


def call_minutes(minutes: float) -> None:
    rows = call_frames(minutes * 60)
    notice = load_announcement("default", "en")
    assert notice is not None
    print(f"{'recording, both legs':32} {'CPU s / call-minute':>20} {'notice encode ms':>17}")
    for label, codec, pt, frames, rate in rows:
        cost = recording_cost(codec, pt, frames, rate) / minutes
        began = time.process_time()
        encode_payloads(codec, notice)
        encode_ms = (time.process_time() - began) * 1000
        print(f"{label:32} {cost:20.3f} {encode_ms:17.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--call-minutes", type=float, help="cost per call-minute instead")
    args = parser.parse_args()
    if args.call_minutes:
        call_minutes(args.call_minutes)
        return
    seconds = args.seconds
    narrow = _speech_like(seconds, 8000)
    g711_frames = [
        g711.encode("PCMA", narrow[i : i + 160]).tobytes() for i in range(0, len(narrow), 160)
    ]
    g722_frames = _encode("g722", 16000, 320, _speech_like(seconds, 16000))
    opus_frames = _encode("libopus", 48000, 960, _speech_like(seconds, 48000))
    rows = [
        ("G.711 A-law -> 8 kHz file", "PCMA", g711_frames, 8000),
        ("G.711 A-law -> 16 kHz file (resampled)", "PCMA", g711_frames, 16000),
        ("G.722 -> 16 kHz file", "G722", g722_frames, 16000),
        ("Opus 32 kbit/s -> 16 kHz file (48 kHz decoded, resampled)", "OPUS", opus_frames, 16000),
    ]
    print(f"{'codec':60} {'frames':>7} {'CPU us/frame':>13}")
    for label, codec, frames, rate in rows:
        print(f"{label:60} {len(frames):7d} {measure(codec, frames, rate):13.1f}")


if __name__ == "__main__":
    main()
