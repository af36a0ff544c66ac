from __future__ import annotations

import numpy as np
import pytest

from media import g711

ALL_CODES = np.arange(256, dtype=np.uint8)

# (code, linear) pairs of the ITU-T G.711 tables on the 16-bit scale of G.191: µ-law
# segment s, step m decodes to 4*(2**(s+1)*(m+16.5)-33); A-law to 8*(2*m+1) in segment 0
# and 8*2**(s-1)*(2*m+33) above.
ULAW_REFERENCE = [
    (0xFF, 0),
    (0x7F, 0),
    (0x80, 32124),
    (0x00, -32124),
    (0xFE, 8),
    (0x7E, -8),
    (0xF0, 120),
    (0xEF, 132),
    (0xC0, 1884),
    (0x8F, 16764),
]
ALAW_REFERENCE = [
    (0xD5, 8),
    (0x55, -8),
    (0xD4, 24),
    (0xAA, 32256),
    (0x2A, -32256),
    (0xC5, 264),
    (0xF5, 528),
    (0xA5, 16896),
]


@pytest.mark.parametrize(("code", "linear"), ULAW_REFERENCE)
def test_ulaw_decode_matches_reference(code: int, linear: int) -> None:
    assert g711.ulaw_decode(bytes([code]))[0] == linear


@pytest.mark.parametrize(("code", "linear"), ALAW_REFERENCE)
def test_alaw_decode_matches_reference(code: int, linear: int) -> None:
    assert g711.alaw_decode(bytes([code]))[0] == linear


def test_encode_reference_values() -> None:
    samples = np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert g711.ulaw_encode(samples).tolist() == [0xFF, 0x7F, 0x80, 0x00, 0xCE, 0x4E]
    assert g711.alaw_encode(samples).tolist() == [0xD5, 0x55, 0xAA, 0x2A, 0xFA, 0x7A]


def test_ulaw_round_trip_of_every_code() -> None:
    decoded = g711.ulaw_decode(ALL_CODES)
    reencoded = g711.ulaw_encode(decoded)
    # 0x7F is "negative zero": it decodes to 0, which encodes as the positive zero 0xFF.
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF
    assert np.array_equal(reencoded, expected)


def test_alaw_round_trip_of_every_code() -> None:
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_encoding_quantises_to_the_interval_midpoint(codec: str) -> None:
    """Quantisation is monotonic and each value lands on the level of its interval: off by
    at most half that level's step (plus the reference's 4- or 8-LSB decision grain)."""
    everything = np.arange(-32768, 32768, dtype=np.int32)
    levels = np.unique(g711.decode(codec, ALL_CODES).astype(np.int32))
    inside = everything[np.abs(everything) <= levels.max()]
    quantised = g711.decode(codec, g711.encode(codec, inside)).astype(np.int32)
    assert np.all(np.diff(quantised) >= 0)
    index = np.searchsorted(levels, quantised)
    gaps = np.diff(levels)
    lower_gap = gaps[np.clip(index - 1, 0, len(gaps) - 1)]
    upper_gap = gaps[np.clip(index, 0, len(gaps) - 1)]
    half_step = np.maximum(lower_gap, upper_gap) / 2
    assert np.all(np.abs(quantised - inside) <= half_step + 8)
    # Nearest-level everywhere except the first part of each wider segment.
    right = np.clip(np.searchsorted(levels, inside), 1, len(levels) - 1)
    nearest = np.minimum(np.abs(levels[right] - inside), np.abs(levels[right - 1] - inside))
    assert np.mean(np.abs(quantised - inside) == nearest) > 0.99


@pytest.mark.parametrize(("codec", "levels"), [("PCMU", 255), ("PCMA", 256)])
def test_decode_levels_are_symmetric(codec: str, levels: int) -> None:
    decoded = g711.decode(codec, ALL_CODES).astype(np.int32)
    assert len(np.unique(decoded)) == levels
    assert set(decoded.tolist()) == set((-decoded).tolist())


def test_encode_accepts_wider_types_by_clipping() -> None:
    wide = np.array([100000, -100000, 5], dtype=np.int64)
    assert (
        g711.ulaw_encode(wide).tolist()
        == g711.ulaw_encode(np.array([32767, -32768, 5], dtype=np.int16)).tolist()
    )


def test_unknown_codec_raises() -> None:
    with pytest.raises(KeyError):
        g711.decode("G729", b"\x00")


def test_snr_of_round_trip_is_g711_grade() -> None:
    t = np.arange(8000) / 8000
    signal = (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for codec in ("PCMU", "PCMA"):
        back = g711.decode(codec, g711.encode(codec, signal)).astype(np.float64)
        noise = back - signal
        snr = 10 * np.log10(np.sum(signal.astype(np.float64) ** 2) / np.sum(noise**2))
        assert snr > 35, (codec, snr)
