"""Test signals (8 kHz WAVs the phones play) and the correlations that find them again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

RATE = 8000

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]


def tone_wav(
    path: Path, frequency: float = 1000.0, seconds: float = 3.0, amplitude: float = 0.3
) -> Path:
    """A sine tone of `amplitude` (of full scale), written as an 8 kHz WAV."""
    t = np.arange(int(RATE * seconds)) / RATE
    sf.write(path, (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32), RATE)
    return path


def chirp(
    path: Path, low_hz: float = 300.0, high_hz: float = 3000.0, seconds: float = 3.0
) -> Int16Array:
    """A linear sweep, written as 8 kHz 16-bit WAV: survives G.711, unambiguous to correlate."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * (low_hz * t + (high_hz - low_hz) / (2 * seconds) * t**2)
    pcm = (0.4 * 32767 * np.sin(phase)).astype(np.int16)
    sf.write(path, pcm, RATE, subtype="PCM_16")
    return pcm


def rms(samples: npt.ArrayLike) -> float:
    return float(np.sqrt(np.mean(np.asarray(samples, dtype=np.float64) ** 2)))


def cross_correlation(reference: FloatArray, signal: FloatArray) -> FloatArray:
    """corr[k] = sum reference[n] * signal[n + k].

    Zero-padded to len(reference) + len(signal), so no lag wraps onto another: lags
    0 .. len(signal) - 1 come first, negative lags count back from the end.
    """
    size = len(reference) + len(signal)
    spectrum = np.fft.rfft(signal, size) * np.conj(np.fft.rfft(reference, size))
    return np.fft.irfft(spectrum, size)


def peak_correlation(reference: npt.ArrayLike, heard: npt.ArrayLike) -> float:
    """Peak normalised cross-correlation of `reference` inside `heard` (any offset).

    Every window of `heard` counts, even a nearly silent one: its energy is summed
    directly, so it carries no rounding noise to win on.
    """
    ref = np.asarray(reference, dtype=np.float64)
    sig = np.asarray(heard, dtype=np.float64)
    corr = cross_correlation(ref, sig)[: len(sig)]
    window = np.convolve(sig**2, np.ones(len(ref)), mode="full")[
        len(ref) - 1 : len(ref) - 1 + len(sig)
    ]
    norm = np.sqrt(np.maximum(window, 1e-9) * np.sum(ref**2))
    return float(np.max(np.abs(corr) / norm))


def best_correlation(reference: npt.ArrayLike, signal: npt.ArrayLike) -> tuple[float, int]:
    """Peak normalised correlation of `reference` inside `signal` and where it starts.

    Windows holding under a quarter of the reference's energy are left out.
    """
    ref = np.asarray(reference, dtype=np.float64)
    sig = np.asarray(signal, dtype=np.float64)
    corr = cross_correlation(ref, sig)[: len(sig)]
    energy = np.concatenate(([0.0], np.cumsum(sig**2)))
    starts = np.arange(len(sig))
    window = energy[np.minimum(starts + len(ref), len(sig))] - energy[starts]
    norm = np.sqrt(np.maximum(window, 1e-9) * np.sum(ref**2))
    score = np.abs(corr) / norm
    # A window almost empty of signal (the file's tail) must not win on rounding noise.
    score[window < 0.25 * np.sum(ref**2)] = 0.0
    best = int(np.argmax(score))
    return float(score[best]), best


def lag_between(expected: npt.ArrayLike, actual: npt.ArrayLike, max_lag: int) -> int:
    """Samples by which `actual` is late against `expected` (|lag| <= max_lag)."""
    corr = cross_correlation(
        np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    )
    lags = np.concatenate((np.arange(0, max_lag + 1), np.arange(-max_lag, 0)))
    best: int = lags[int(np.argmax(corr[lags]))]
    return int(best)
