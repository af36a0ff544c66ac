"""Crafted RTP streams and test signals for the recorder tests (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media import g711
from media.rtp import RtpPacket

RATE = 8000
PTIME = 160  # samples per packet (20 ms)

Int16Array = npt.NDArray[np.int16]


def noise(seconds: float, seed: int, level: float = 6000.0) -> Int16Array:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, level, round(seconds * RATE)), -32768, 32767).astype(np.int16)


def sine(seconds: float, frequency: float, level: float = 10000.0) -> Int16Array:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def chirp(seconds: float, low: float = 300.0, high: float = 3400.0) -> Int16Array:
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * (low * t + (high - low) * t * t / (2 * seconds))
    return (12000 * np.sin(phase)).astype(np.int16)


@dataclass
class SentPacket:
    """One crafted packet: its wire bytes, header and the time it arrives."""

    packet: RtpPacket
    arrival: float

    @property
    def data(self) -> bytes:
        return self.packet.serialize()


def packetize(
    pcm: Int16Array,
    *,
    codec: str = "PCMU",
    payload_type: int | None = None,
    first_capture: float = 0.0,
    delay: float = 0.0,
    ssrc: int = 0x1234,
    first_sequence: int = 1000,
    first_timestamp: int = 50000,
    ptime: int = PTIME,
) -> list[SentPacket]:
    """Cut `pcm` into G.711 packets; packet k leaves when its last sample is captured
    (first_capture + (k+1)*ptime/RATE) and arrives `delay` later."""
    if payload_type is None:
        payload_type = 0 if codec == "PCMU" else 8
    encoded = g711.encode(codec, pcm)
    packets = []
    for k, start in enumerate(range(0, len(pcm) - ptime + 1, ptime)):
        packets.append(
            SentPacket(
                RtpPacket(
                    payload_type=payload_type,
                    sequence=(first_sequence + k) % 65536,
                    timestamp=(first_timestamp + start) % (1 << 32),
                    ssrc=ssrc,
                    payload=encoded[start : start + ptime].tobytes(),
                ),
                first_capture + (start + ptime) / RATE + delay,
            )
        )
    return packets


def g711_round_trip(pcm: Int16Array, codec: str = "PCMU") -> Int16Array:
    return g711.decode(codec, g711.encode(codec, pcm))


def add_jitter(
    packets: list[SentPacket], max_jitter: float, seed: int, loss: float = 0.0
) -> list[SentPacket]:
    """Delay each packet by U(0, max_jitter), drop a `loss` fraction, and return them in
    arrival order (so jitter larger than the packet spacing reorders them)."""
    rng = np.random.default_rng(seed)
    kept = [
        SentPacket(p.packet, p.arrival + float(rng.uniform(0.0, max_jitter)))
        for p in packets
        if rng.random() >= loss
    ]
    return sorted(kept, key=lambda p: p.arrival)


def lag_of(reference: npt.ArrayLike, signal: npt.ArrayLike) -> int:
    """Samples by which `reference` appears delayed inside `signal` (FFT cross-correlation)."""
    ref = np.asarray(reference, dtype=np.float64)
    sig = np.asarray(signal, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(sig))))
    spectrum = np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size))
    correlation = np.fft.irfft(spectrum, size)
    lag = int(np.argmax(correlation))
    return lag if lag < size // 2 else lag - size


def correlation_at(reference: Int16Array, signal: Int16Array, lag: int) -> float:
    """Normalised correlation of `reference` against `signal[lag:lag+len]`."""
    ref = reference.astype(np.float64)
    part = signal[lag : lag + len(ref)].astype(np.float64)
    ref = ref[: len(part)]
    return float(np.dot(ref, part) / (np.linalg.norm(ref) * np.linalg.norm(part) + 1e-9))
