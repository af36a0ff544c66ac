"""RTP packets (RFC 3550): parse and serialise, sans-IO.

`RtpPacket.parse` is strict and allocates; the relay's hot path uses the allocation-free
`rtp_header_valid` and `is_rtcp` checks instead and never parses packets it forwards.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_HEADER_SIZE",
    "MediaError",
    "RtpPacket",
    "is_rtcp",
    "rtp_header_valid",
]

RTP_HEADER_SIZE = 12
RTP_VERSION = 2

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class MediaError(Exception):
    """A media-layer failure: a malformed packet, no free port, a socket that cannot bind."""


class BadMediaAddress(MediaError, ValueError):
    """A remote media address or port (from SDP) that cannot be used."""


@dataclass
class RtpPacket:
    """One RTP packet; `serialize(parse(data)) == data` for every packet `parse` accepts.

    `padding_data` holds the raw padding trailer (its last octet is the padding length) so
    that packets with non-zero padding octets still round-trip byte for byte.
    """

    version: int = RTP_VERSION
    padding: bool = False
    extension: bool = False
    marker: bool = False
    payload_type: int = 0
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrcs: list[int] = field(default_factory=list)
    extension_profile: int = 0
    extension_data: bytes = b""
    payload: bytes = b""
    padding_data: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raise `MediaError` if it is not a well-formed RTP packet."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise MediaError(f"RTP packet too short: {size} bytes, the fixed header is 12")
        first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise MediaError(f"RTP version {version}, expected 2")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F

        offset = RTP_HEADER_SIZE + 4 * csrc_count
        if offset > size:
            raise MediaError(f"RTP CSRC count {csrc_count} needs {offset} bytes, packet has {size}")
        csrcs = list(struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE))

        extension_profile = 0
        extension_data = b""
        if has_extension:
            if offset + 4 > size:
                raise MediaError("RTP extension header runs past the end of the packet")
            extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > size:
                raise MediaError(f"RTP extension of {words} words runs past the end of the packet")
            extension_data = bytes(data[offset:end])
            offset = end

        payload_end = size
        padding_data = b""
        if has_padding:
            padding_length = data[-1]
            if padding_length == 0:
                raise MediaError("RTP padding flag set but the padding length is 0")
            payload_end = size - padding_length
            if payload_end < offset:
                raise MediaError(f"RTP padding of {padding_length} bytes overlaps the header")
            padding_data = bytes(data[payload_end:])

        return cls(
            version=version,
            padding=has_padding,
            extension=has_extension,
            marker=bool(second & 0x80),
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            csrcs=csrcs,
            extension_profile=extension_profile,
            extension_data=extension_data,
            payload=bytes(data[offset:payload_end]),
            padding_data=padding_data,
        )

    def serialize(self) -> bytes:
        """Return the wire form; raise `MediaError` for fields that cannot be encoded."""
        if not 0 <= self.version <= 3:
            raise MediaError(f"RTP version {self.version} does not fit in 2 bits")
        if len(self.csrcs) > 15:
            raise MediaError(f"{len(self.csrcs)} CSRCs, at most 15 fit")
        if not 0 <= self.payload_type <= 127:
            raise MediaError(f"RTP payload type {self.payload_type} does not fit in 7 bits")
        if self.extension and len(self.extension_data) % 4:
            raise MediaError("RTP extension data must be a multiple of 4 bytes")
        if self.padding and (not self.padding_data or self.padding_data[-1] == 0):
            raise MediaError("RTP padding flag set without a padding trailer")
        if self.padding and self.padding_data[-1] != len(self.padding_data):
            raise MediaError("RTP padding trailer length does not match its last octet")

        first = (
            (self.version << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension else 0)
            | len(self.csrcs)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        try:
            parts = [
                _FIXED_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc),
                struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
            ]
            if self.extension:
                parts.append(
                    _EXTENSION_HEADER.pack(self.extension_profile, len(self.extension_data) // 4)
                )
                parts.append(self.extension_data)
        except struct.error as exc:
            raise MediaError(f"RTP header field out of range: {exc}") from exc
        parts.append(self.payload)
        if self.padding:
            parts.append(self.padding_data)
        return b"".join(parts)


def rtp_header_valid(data: bytes) -> bool:
    """True if `data` is long enough for the RTP header, CSRCs, extension and padding it
    announces, and carries version 2. Allocation-free, for the relay's hot path."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        return False
    first = data[0]
    if first & 0xC0 != 0x80:
        return False
    end = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if end + 4 > size:
            return False
        end += 4 + 4 * ((data[end + 2] << 8) | data[end + 3])
    if end > size:
        return False
    if first & 0x20:
        padding_length = data[-1]
        if padding_length == 0 or end + padding_length > size:
            return False
    return True


def is_rtcp(data: bytes) -> bool:
    """True if a version-2 packet is RTCP rather than RTP, by RFC 5761 section 4: the
    second octet of RTCP (its packet type) is 192..223, a range RTP must not use."""
    return len(data) >= 2 and data[0] & 0xC0 == 0x80 and 192 <= data[1] <= 223
