"""Allocation of RTP/RTCP port pairs from the configured range, sans-IO."""

from __future__ import annotations

from collections import deque

from media.rtp import MediaError

__all__ = ["PortAllocator"]


class PortAllocator:
    """Hands out even RTP ports in [first, last] (RTCP is port + 1, also within range).

    Free ports form a FIFO queue, so a released port goes to the back and is reused only
    after every other free port: late packets of an ended call do not land in a new one.
    """

    def __init__(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= 65535:
            raise MediaError(f"bad RTP port range {first}-{last}")
        start = first + (first & 1)
        ports = range(start, last, 2)  # stop at `last` so that port + 1 <= last
        if not ports:
            raise MediaError(f"RTP port range {first}-{last} holds no even/odd port pair")
        self.first = first
        self.last = last
        self._free: deque[int] = deque(ports)
        self._in_use: set[int] = set()
        self._valid = frozenset(ports)

    @property
    def in_use(self) -> int:
        """How many RTP ports (pairs) are allocated."""
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        """How many port pairs the range holds."""
        return len(self._valid)

    def allocate(self) -> int:
        """Return a free even RTP port; raise `MediaError` if every pair is in use."""
        if not self._free:
            raise MediaError(
                f"no free RTP port in {self.first}-{self.last}: "
                f"all {self.capacity} pairs are in use"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return `port` to the pool; raise `MediaError` if it is not allocated, since a
        double release would let two calls share one port."""
        if port not in self._in_use:
            raise MediaError(f"RTP port {port} is not allocated")
        self._in_use.remove(port)
        self._free.append(port)
