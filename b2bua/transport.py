"""Thin asyncio SIP transports: UDP datagrams and TCP streams on one listening address.

Everything protocol-related happens in the sans-IO layers; this module only moves bytes
between sockets and a `receive(data, peer)` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from b2bua.message import SipParseError, StreamFramer
from b2bua.peer import Peer

log = logging.getLogger("callrec.transport")

Receiver = Callable[[bytes, Peer], None]

MAX_TCP_BUFFER = 256 * 1024
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Receiver) -> None:
        self.receive = receive
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.receive(data, Peer(str(addr[0]), int(addr[1]), "udp"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction timers deal with the loss.
        log.debug("udp error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(str(host), int(port), "tcp")
        self.owner.tcp_connections[(self.peer.host, self.peer.port)] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            # A stream that lost its framing cannot be resynchronised: close it.
            log.warning("tcp framing error from %s: %s", self.peer, exc.reason)
            self.transport.close()
            return
        for message in messages:
            self.owner.receive(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.owner.tcp_connections.get(key) is self:
                del self.owner.tcp_connections[key]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipTransport:
    """Listens for SIP on UDP and TCP at one address and sends to peers on either."""

    def __init__(self, host: str, port: int, receive: Receiver) -> None:
        self.host = host
        self.port = port
        self.receive = receive
        self.udp: _UdpProtocol | None = None
        self.tcp_server: asyncio.Server | None = None
        self.tcp_connections: dict[tuple[str, int], _TcpConnection] = {}
        self._pending_tcp: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._tcp_backlog: dict[tuple[str, int], list[bytes]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.receive), local_addr=(self.host, self.port)
        )
        self.udp = protocol
        assert protocol.transport is not None
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            # Bursts (a registration storm, a flood of garbage) should queue, not drop.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        if self.port == 0:
            assert protocol.transport is not None
            self.port = int(protocol.transport.get_extra_info("sockname")[1])
        self.tcp_server = await loop.create_server(
            lambda: _TcpConnection(self), self.host, self.port
        )

    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "tcp":
            self._send_tcp(data, peer)
            return
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.sendto(data, (peer.host, peer.port))

    def _send_tcp(self, data: bytes, peer: Peer) -> None:
        key = (peer.host, peer.port)
        connection = self.tcp_connections.get(key)
        if connection is not None:
            connection.send(data)
            return
        self._tcp_backlog.setdefault(key, []).append(data)
        if key not in self._pending_tcp:
            self._pending_tcp[key] = asyncio.get_running_loop().create_task(self._connect(key))

    async def _connect(self, key: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _TcpConnection(self), key[0], key[1])
        except OSError as exc:
            log.warning("tcp connect to %s:%s failed: %s", key[0], key[1], exc)
        finally:
            self._pending_tcp.pop(key, None)
            backlog = self._tcp_backlog.pop(key, [])
            connection = self.tcp_connections.get(key)
            if connection is not None:
                for data in backlog:
                    connection.send(data)

    async def close(self) -> None:
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        for connection in list(self.tcp_connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
            await self.tcp_server.wait_closed()
