"""What the B2BUA tests on real loopback sockets share: a directory's records, a media
factory that opens nothing, a raw UDP peer (phone or trunk), and a B2BUA started from a
config file with quick transaction timers whose spawned tasks are collected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from b2bua.message import SipMessage, SipResponse, parse_message
from b2bua.server import B2bua
from b2bua.transaction import TransactionLayer
from callrec.config import load_config
from testkit.sipp_runner import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class FakeUser:
    id: int
    extension: str
    name: str
    recording_mode: str = "never"
    org_id: int = 1


@dataclass(frozen=True)
class FakeOrganisation:
    id: int = 1
    domain: str = "callrec"


@dataclass(frozen=True)
class FakeCredentials:
    user: FakeUser
    realm: str
    ha1_md5: str
    ha1_sha256: str


class NoCallsDirectory:
    """The directory calls a test's directory does not care about: no devices, no
    bindings, no trunk routes, CDRs kept in `cdr_log`."""

    def __init__(self) -> None:
        self.cdr_log: list[tuple[str, dict[str, Any]]] = []

    async def route_number(self, number: str) -> None:
        return None

    async def list_devices(self, org_id: int, extension: str) -> list[Any]:
        return []

    async def purge_expired_bindings(self, now: float) -> int:
        return 0

    async def create_call(self, org_id: int, **fields: Any) -> int:
        self.cdr_log.append(("create", fields))
        return len(self.cdr_log)

    async def update_call(self, call_id: int, **fields: Any) -> None:
        self.cdr_log.append(("update", fields))


class FakeMedia:
    def __init__(self) -> None:
        self.closed = False

    def local_port(self, leg: str) -> int:
        return 40_000 if leg == "a" else 40_002

    def set_remote(self, leg: str, host: str, port: int, **_: object) -> None:
        pass

    def mark_media_started(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeMediaFactory:
    opened: list[FakeMedia] = field(default_factory=list)

    async def open(self, **_: object) -> FakeMedia:
        media = FakeMedia()
        self.opened.append(media)
        return media


class UdpPeer(asyncio.DatagramProtocol):
    """A raw UDP socket on loopback; what arrives waits in a queue."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, SipMessage]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait((data, parse_message(data)))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def next(self, timeout: float = 5.0) -> tuple[bytes, SipMessage]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def response(self, status: int, timeout: float = 5.0) -> tuple[bytes, SipResponse]:
        """The next response with `status`; others before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            data, message = await self.next(max(0.0, deadline - time.monotonic()))
            if isinstance(message, SipResponse) and message.status == status:
                return data, message

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


async def udp_peer(port: int = 0) -> UdpPeer:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(UdpPeer, local_addr=(HOST, port))
    return protocol


@asynccontextmanager
async def running_b2bua(
    tmp_path: Path,
    directory: object,
    media: FakeMediaFactory,
    trunk: UdpPeer,
    tasks: list[asyncio.Task[Any]],
    *,
    sip_extra: str = "",
) -> AsyncIterator[B2bua]:
    """A B2BUA on a free loopback port with `directory` and `media`, its trunk `trunk`,
    every task it spawns appended to `tasks` and cancelled at the end. Short timers keep
    the tests quick: Timer G from 50 ms, Timer I 200 ms."""
    config_path = tmp_path / "callrec.toml"
    config_path.write_text(
        f'[sip]\nlisten = "{HOST}:{free_port()}"\n{sip_extra}'
        f'[trunk]\nuri = "sip:{HOST}:{trunk.port}"\n'
        f'[storage]\ndir = "{tmp_path}"\n'
    )

    def spawn(work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        tasks.append(task)
        return task

    b2bua = B2bua(load_config(config_path), directory, media, spawn=spawn)  # type: ignore[arg-type]
    b2bua.transactions = TransactionLayer(t1=0.05, t2=0.4, t4=0.2)
    await b2bua.start()
    try:
        yield b2bua
    finally:
        await b2bua.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
