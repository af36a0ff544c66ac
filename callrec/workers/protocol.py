"""The control channel between the SIP process and a media worker, sans-IO.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON, one
object per frame. `encode` makes a frame; a `FrameDecoder` is fed whatever bytes the
socket gave (any split: half a header, three frames and a half) and returns the whole
messages seen so far. Bytes (an SDP, an INFO body) travel as latin-1 text, which maps
every byte to one character and back (`pack_bytes` / `unpack_bytes`). SRTP keys travel
as `{suite, key}` with the key in base64 (`pack_srtp_key` / `unpack_srtp_key`): the
channel is a Unix socket pair between the SIP process and its own child, so keys cross
no network; neither end logs a message's contents.

What the messages say (the field `op` for commands to a worker, `ev` for what a worker
reports) is listed in `callrec.workers.worker`, which obeys them, and
`callrec.workers.pool`, which sends them. A command that expects an answer carries an
`id`; the answer carries the same `id` and `ok` (with `error` when false).

A frame longer than `MAX_FRAME` or that is not a JSON object raises `ProtocolError`: the
peer is broken, and the only safe answer is to drop the channel.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from media.srtp import SrtpKey

__all__ = [
    "MAX_FRAME",
    "FrameDecoder",
    "Message",
    "ProtocolError",
    "encode",
    "pack_bytes",
    "pack_srtp_key",
    "unpack_bytes",
    "unpack_srtp_key",
]

Message = dict[str, Any]

MAX_FRAME = 1 << 20  # an SDP or a SIP INFO body is far below; anything larger is a bug
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(message: Message) -> bytes:
    """One frame holding `message` (a JSON object)."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a message of {len(body)} bytes is over the {MAX_FRAME} limit")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Reassembles frames from a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """The whole messages completed by `data`, in order; raises `ProtocolError`."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if length > MAX_FRAME:
                raise ProtocolError(f"a frame of {length} bytes is over the {MAX_FRAME} limit")
            end = offset + _HEADER.size + length
            if len(buffer) < end:
                break
            messages.append(_decode(bytes(buffer[offset + _HEADER.size : end])))
            offset = end
        del buffer[:offset]
        return messages


def _decode(body: bytes) -> Message:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"a frame that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame that is not a JSON object: {type(message).__name__}")
    return message


def pack_bytes(data: bytes) -> str:
    return data.decode("latin-1")


def unpack_bytes(text: str) -> bytes:
    return text.encode("latin-1")


def pack_srtp_key(suite: str, material: bytes) -> dict[str, str]:
    return {"suite": suite, "key": base64.b64encode(material).decode("ascii")}


def unpack_srtp_key(packed: Any) -> SrtpKey | None:
    """The key `pack_srtp_key` made, None for None; `ProtocolError` (without the key)
    for anything else."""
    if packed is None:
        return None
    try:
        return SrtpKey(str(packed["suite"]), base64.b64decode(packed["key"], validate=True))
    except (KeyError, TypeError, binascii.Error, ValueError) as exc:
        raise ProtocolError(f"a malformed SRTP key ({type(exc).__name__})") from None
