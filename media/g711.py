"""G.711 µ-law and A-law (ITU-T G.711), vectorised with numpy lookup tables.

Decoding is one 256-entry table lookup; encoding is one 65536-entry table lookup indexed
by the 16-bit sample. Both tables are built once at import from the segment arithmetic of
the ITU reference (the same as the classic Sun `g711.c`), computed over whole arrays.
Every function takes and returns arrays: callers batch many packets into one call.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "decode_table",
    "encode",
    "ulaw_decode",
    "ulaw_encode",
]

Int16Array = npt.NDArray[np.int16]
Uint8Array = npt.NDArray[np.uint8]

_ULAW_BIAS: Final = 0x84


def _build_ulaw_decode() -> Int16Array:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> Int16Array:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    step = (code & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        step + 8,
        (step + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _segment_of(value: npt.NDArray[np.int32], segment_ends: list[int]) -> npt.NDArray[np.int32]:
    """Index of the first segment end >= value (8 means beyond the last segment)."""
    return np.searchsorted(np.asarray(segment_ends), value, side="left").astype(np.int32)


def _build_ulaw_encode() -> Uint8Array:
    # ITU-T G.191 (STL) ulaw_compress: one's complement magnitude of the 14-bit sample,
    # so -1 and 0 both land on a zero code, as in the reference, not on the first step.
    sample = np.arange(-32768, 32768, dtype=np.int32)
    magnitude = np.minimum((np.where(sample < 0, ~sample, sample) >> 2) + 33, 0x1FFF)
    bit_length = _segment_of(magnitude >> 6, [0, 1, 3, 7, 15, 31, 63, 127])
    segment = bit_length + 1
    high_nibble = 8 - segment
    low_nibble = 0x0F - ((magnitude >> segment) & 0x0F)
    sign_bit = np.where(sample >= 0, 0x80, 0).astype(np.int32)
    code: npt.NDArray[np.int32] = (high_nibble << 4) | low_nibble | sign_bit
    return code.astype(np.uint8)


def _build_alaw_encode() -> Uint8Array:
    sample = np.arange(-32768, 32768, dtype=np.int32) >> 3
    negative = sample < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -sample - 1, sample)
    segment = _segment_of(magnitude, [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


ULAW_DECODE_TABLE: Final[Int16Array] = _build_ulaw_decode()
ALAW_DECODE_TABLE: Final[Int16Array] = _build_alaw_decode()
# Indexed by the int16 sample reinterpreted as uint16 (two's complement), so that a
# `.view(np.uint16)` is all the index arithmetic needed.
ULAW_ENCODE_TABLE: Final[Uint8Array] = np.roll(_build_ulaw_encode(), -32768)
ALAW_ENCODE_TABLE: Final[Uint8Array] = np.roll(_build_alaw_encode(), -32768)


def _as_codes(data: bytes | bytearray | memoryview | npt.ArrayLike) -> Uint8Array:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _as_uint16_index(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    array = np.asarray(samples)
    if array.dtype != np.int16:
        array = np.clip(array, -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(array).view(np.uint16)


def ulaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> Int16Array:
    """Decode µ-law octets (bytes or a uint8 array) to int16 linear PCM."""
    return ULAW_DECODE_TABLE[_as_codes(data)]


def alaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> Int16Array:
    """Decode A-law octets (bytes or a uint8 array) to int16 linear PCM."""
    return ALAW_DECODE_TABLE[_as_codes(data)]


def ulaw_encode(samples: npt.ArrayLike) -> Uint8Array:
    """Encode linear PCM (int16, or anything clipped to int16 range) to µ-law octets."""
    return ULAW_ENCODE_TABLE[_as_uint16_index(samples)]


def alaw_encode(samples: npt.ArrayLike) -> Uint8Array:
    """Encode linear PCM (int16, or anything clipped to int16 range) to A-law octets."""
    return ALAW_ENCODE_TABLE[_as_uint16_index(samples)]


_DECODE_TABLES: Final = {"PCMU": ULAW_DECODE_TABLE, "PCMA": ALAW_DECODE_TABLE}
_ENCODE_TABLES: Final = {"PCMU": ULAW_ENCODE_TABLE, "PCMA": ALAW_ENCODE_TABLE}


def decode_table(codec: str) -> Int16Array:
    """The 256-entry table that decodes `codec` ("PCMU" or "PCMA", any case): indexing it
    with the octets as uint8 is the decode. KeyError otherwise."""
    return _DECODE_TABLES[codec.upper()]


def decode(codec: str, data: bytes | bytearray | memoryview | npt.ArrayLike) -> Int16Array:
    """Decode by SDP encoding name ("PCMU" or "PCMA", any case); KeyError otherwise."""
    return _DECODE_TABLES[codec.upper()][_as_codes(data)]


def encode(codec: str, samples: npt.ArrayLike) -> Uint8Array:
    """Encode by SDP encoding name ("PCMU" or "PCMA", any case); KeyError otherwise."""
    return _ENCODE_TABLES[codec.upper()][_as_uint16_index(samples)]
