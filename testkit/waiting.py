"""Waiting in tests for something to happen, never for a fixed time.

`wait_until` polls a check until it holds (returns a truthy value), up to a deadline,
and fails with what was awaited and the last value seen. `wait_until_async` is the
same inside an event loop: it sleeps on the loop between checks, so the code under test
runs. A test that needs a moment to pass waits for the state that moment brings (a
row in the store, a log line, a bound port, a counter reaching a figure) through one of
these; `port_bound` is a check for "the other process is listening now".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = ["WaitTimeout", "port_bound", "wait_until", "wait_until_async"]


class WaitTimeout(AssertionError):
    """The awaited state did not come before the deadline."""


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """The first truthy value of `check()`, polled every `interval` s for at most
    `timeout` s; WaitTimeout (an AssertionError) naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"no {what} within {timeout:g} s (last: {value!r})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def wait_until_async(
    check: Callable[[], T | Awaitable[T | None] | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.01,
) -> T:
    """`wait_until` in an event loop: `check` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        value = await result if isinstance(result, Awaitable) else result
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"no {what} within {timeout:g} s (last: {value!r})")
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def port_bound(port: int, transport: str = "udp") -> bool:
    """True once some process on this machine has bound `port` (UDP, or TCP listening).

    Read from /proc/net rather than probed with a bind: a probe would hold the port for
    an instant and could make the other process's own bind fail.
    """
    tables = ("udp", "udp6") if transport == "udp" else ("tcp", "tcp6")
    wanted = f":{port:04X}"
    for table in tables:
        try:
            lines = Path("/proc/net", table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or not fields[1].endswith(wanted):
                continue
            # TCP state 0A is LISTEN; a UDP socket is bound as soon as it is listed.
            if transport == "udp" or fields[3] == "0A":
                return True
    return False
