"""UDP sockets on loopback standing in for the RTP and RTCP ports of phones (and of an
attacker), for the relay's tests. Import `close_endpoints` into a test module: that
autouse fixture closes every endpoint a test opened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

RECEIVE_TIMEOUT = 2.0

_Datagram = tuple[bytes, tuple[Any, ...]]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[_Datagram]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable for a sprayed port nobody listens on


@dataclass
class Endpoint:
    """A UDP socket standing in for one port of a phone, bound at `host`; the relay
    under test listens at `relay_host`."""

    transport: asyncio.DatagramTransport
    queue: asyncio.Queue[_Datagram]
    host: str
    relay_host: str

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        """Send to the relay's `port`."""
        self.transport.sendto(data, (self.relay_host, port))

    async def receive(self) -> _Datagram:
        return await asyncio.wait_for(self.queue.get(), RECEIVE_TIMEOUT)

    async def receive_data(self) -> bytes:
        return (await self.receive())[0]


@dataclass
class Phone:
    rtp: Endpoint
    rtcp: Endpoint


_open: list[asyncio.DatagramTransport] = []


async def open_endpoint(host: str = "127.0.0.1") -> Endpoint:
    """An endpoint at `host` (127.0.0.2 plays a host other than the phones') sending to
    the relay on the loopback address of the same family."""
    queue: asyncio.Queue[_Datagram] = asyncio.Queue()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Receiver(queue), local_addr=(host, 0)
    )
    _open.append(transport)
    return Endpoint(transport, queue, host, "::1" if ":" in host else "127.0.0.1")


async def open_phone(host: str = "127.0.0.1") -> Phone:
    return Phone(await open_endpoint(host), await open_endpoint(host))


@pytest.fixture(autouse=True)
async def close_endpoints() -> AsyncIterator[None]:
    yield
    while _open:
        _open.pop().close()
    await asyncio.sleep(0)  # one loop turn (not a time): transports close their sockets then
