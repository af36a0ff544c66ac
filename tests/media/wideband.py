"""Wideband RTP for the recorder tests: G.722 and Opus packets encoded with PyAV."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

from media.rtp import RtpPacket
from tests.media.stream_builder import SentPacket

Int16Array = npt.NDArray[np.int16]

# (encoder, encoder's PCM rate, RTP clock, samples per 20 ms at the PCM rate)
ENCODERS = {
    "G722": ("g722", 16000, 8000, 320),
    "OPUS": ("libopus", 48000, 48000, 960),
}


def encode_frames(codec: str, pcm: Int16Array, *, bit_rate: int = 32000) -> list[bytes]:
    """`pcm` (at the encoder's rate) cut into 20 ms frames, each encoded to one payload."""
    name, rate, _, frame = ENCODERS[codec]
    context = av.CodecContext.create(name, "w")
    context.sample_rate = rate
    context.layout = "mono"
    context.format = "s16"
    if codec == "OPUS":
        context.bit_rate = bit_rate
    context.open()
    payloads: list[bytes] = []
    for start in range(0, len(pcm) - frame + 1, frame):
        chunk = np.ascontiguousarray(pcm[start : start + frame]).reshape(1, -1)
        audio = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        audio.sample_rate = rate
        audio.pts = start
        payloads += [bytes(packet) for packet in context.encode(audio)]
    payloads += [bytes(packet) for packet in context.encode(None)]
    return payloads[: len(pcm) // frame]


def packetize_wideband(
    codec: str,
    pcm: Int16Array,
    *,
    payload_type: int,
    first_capture: float,
    delay: float = 0.005,
    ssrc: int = 0x5678,
) -> list[SentPacket]:
    """RTP packets of `pcm` (at the encoder's rate), 20 ms each, arriving like
    `stream_builder.packetize`'s: when their last sample is captured, plus `delay`."""
    _, rate, clock, frame = ENCODERS[codec]
    step = frame * clock // rate
    return [
        SentPacket(
            RtpPacket(
                payload_type=payload_type,
                sequence=(100 + k) % 65536,
                timestamp=(7000 + k * step) % (1 << 32),
                ssrc=ssrc,
                payload=payload,
            ),
            first_capture + (k + 1) * frame / rate + delay,
        )
        for k, payload in enumerate(encode_frames(codec, pcm))
    ]


def wide_chirp(seconds: float, rate: int, low: float = 200.0, high: float = 7000.0) -> Int16Array:
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (low * t + (high - low) * t * t / (2 * seconds))
    return (10000 * np.sin(phase)).astype(np.int16)


def wide_noise(seconds: float, rate: int, seed: int, level: float = 5000.0) -> Int16Array:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, round(seconds * rate)), -32768, 32767).astype(np.int16)
