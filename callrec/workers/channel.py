"""Reading the control channel in asyncio: the messages of a stream, until it ends.

The one thin I/O layer over the sans-IO `callrec.workers.protocol`, used by both ends
(the worker's command loop and the pool's event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from callrec.workers.protocol import FrameDecoder, Message

__all__ = ["read_messages"]

_READ_SIZE = 1 << 16


async def read_messages(reader: asyncio.StreamReader) -> AsyncIterator[Message]:
    """Each message arriving on `reader`, in order, until end-of-file or a reset; raises
    `ProtocolError` when the stream is not frames of the protocol."""
    decoder = FrameDecoder()
    while True:
        try:
            data = await reader.read(_READ_SIZE)
        except ConnectionError:
            return
        if not data:
            return
        for message in decoder.feed(data):
            yield message
