"""The RTP port pool: allocation of RTP/RTCP port pairs from the configured range, sans-IO.

This module is the one owner of the pool. Its rules:

- A pair is an even RTP port and the odd RTCP port after it, both inside the range.
- Ports are handed out at random (from the operating system's random source), so nobody
  can predict which port the next call gets. A fixed order let a host that watched one
  call know where the next would be; spraying the whole range is still possible, and the
  relay's source checks (`media.relay`) are what stop that.
- A released port "cools down" before it is handed out again: it waits behind the
  ports released after it until half the pool has been released since, or until no
  other port is free. Late packets of an ended call then rarely land in a new one.
"""

from __future__ import annotations

import random
from collections import deque

from media.rtp import MediaError

__all__ = ["PortAllocator", "port_pairs", "split_port_range"]


class PortAllocator:
    """Hands out even RTP ports in [first, last] at random (RTCP is port + 1, in range).

    `size` is how many pairs the range holds, `free` how many are free now, `in_use` how
    many are allocated (`size == free + in_use`). `rng` is for tests; the default draws
    from `os.urandom`.
    """

    def __init__(self, first: int, last: int, *, rng: random.Random | None = None) -> None:
        if not 1 <= first <= last <= 65535:
            raise MediaError(f"bad RTP port range {first}-{last}")
        start = first + (first & 1)
        ports = range(start, last, 2)  # stop at `last` so that port + 1 <= last
        if not ports:
            raise MediaError(f"RTP port range {first}-{last} holds no even/odd port pair")
        self.first = first
        self.last = last
        self._rng = rng if rng is not None else random.SystemRandom()
        self._ready: list[int] = list(ports)  # drawn from at random
        self._cooling: deque[int] = deque()  # released, oldest first
        self._cooling_limit = len(ports) // 2
        self._in_use: set[int] = set()
        self._size = len(ports)

    @property
    def size(self) -> int:
        """How many port pairs the range holds."""
        return self._size

    @property
    def capacity(self) -> int:
        """The same as `size` (older name)."""
        return self._size

    @property
    def free(self) -> int:
        """How many port pairs can be allocated now."""
        return len(self._ready) + len(self._cooling)

    @property
    def in_use(self) -> int:
        """How many port pairs are allocated."""
        return len(self._in_use)

    def allocate(self) -> int:
        """Return a free even RTP port; raise `MediaError` if every pair is in use."""
        ready = self._ready
        if ready:
            # Swap-remove a random element: O(1), and order in the list does not matter.
            index = self._rng.randrange(len(ready))
            port = ready[index]
            ready[index] = ready[-1]
            ready.pop()
        elif self._cooling:
            port = self._cooling.popleft()
        else:
            raise MediaError(
                f"no free RTP port in {self.first}-{self.last}: all {self._size} pairs are in use"
            )
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return `port` to the pool; raise `MediaError` if it is not allocated, since a
        double release would let two calls share one port."""
        if port not in self._in_use:
            raise MediaError(f"RTP port {port} is not allocated")
        self._in_use.remove(port)
        self._cooling.append(port)
        if len(self._cooling) > self._cooling_limit:
            self._ready.append(self._cooling.popleft())


def port_pairs(first: int, last: int) -> int:
    """How many even/odd pairs [first, last] holds (what a `PortAllocator` on it hands out)."""
    start = first + (first & 1)
    return len(range(start, last, 2))


def split_port_range(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """[first, last] cut into `parts` contiguous ranges of whole pairs, as even as can be
    (the first ranges get one pair more); each range is (FIRST, LAST), FIRST even.

    Each media worker owns one; raises `MediaError` when a part would get fewer than
    two pairs (a call needs two: one per leg)."""
    start = first + (first & 1)
    pairs = port_pairs(first, last)
    if parts < 1 or pairs < 2 * parts:
        raise MediaError(
            f"RTP port range {first}-{last} holds {pairs} pair(s): too few for {parts} "
            "part(s) of at least two pairs"
        )
    ranges: list[tuple[int, int]] = []
    offset = 0
    for index in range(parts):
        count = pairs // parts + (1 if index < pairs % parts else 0)
        low = start + 2 * offset
        ranges.append((low, low + 2 * count - 1))
        offset += count
    return ranges
