"""Thin asyncio SIP transports: UDP datagrams and TCP streams on one listening address.

Everything protocol-related happens in the sans-IO layers; this module only moves bytes
between sockets and a `receive(data, peer)` callback, and keeps TCP within its limits.

TCP limits (`TcpLimits`, from `[sip] tcp_*`). Every TCP connection costs a file
descriptor, and descriptors are shared with the RTP pool, the database and the portal, so
an outsider must not be able to take them all:
- At most `max_connections` connections in all and `max_per_source` from one IP address.
  A connection over either cap is accepted and closed at once (the listening backlog
  must not fill with it), and counted in a log line at most once a second.
- A connection must deliver its first complete SIP message within `idle_timeout`
  seconds, or it is closed. Once it has carried a message (a phone that registered over
  it, the trunk), it stays open while anything arrives, CRLF keep-alives (RFC 5626) too,
  and is closed after `ESTABLISHED_IDLE_TIMEOUT_S` of silence: longer than the longest
  registration (an hour), so a phone that only re-registers keeps its connection.
- A header section over `max_header_bytes`, or a message that takes longer than
  `message_timeout` from its first byte to its last (slowloris), closes the connection.
- When accept() itself fails (EMFILE, ENFILE: out of descriptors) the accept loop backs
  off up to a second and logs at most one line a second, never one per failure.
The UDP path shares none of this: it keeps working when TCP is at its cap.

`ConnectionClock` (when a connection expires) and `admission` (whether to take one) are
sans-IO and take `now`; `SipTransport` only applies what they decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from b2bua.message import SipParseError, StreamFramer
from b2bua.peer import Peer

log = logging.getLogger("callrec.transport")

Receiver = Callable[[bytes, Peer], None]

MAX_TCP_BUFFER = 256 * 1024
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
TCP_BACKLOG = 1024
# Longer than the registrar's longest registration (3600 s): a registered phone that
# sends no keep-alives still re-registers over its connection before this runs out.
ESTABLISHED_IDLE_TIMEOUT_S = 3900.0
# accept() failing for want of descriptors: wait this long at first, doubling up to MAX.
ACCEPT_BACKOFF_S = 0.01
ACCEPT_BACKOFF_MAX_S = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# SO_LINGER {on, 0 s}: close() resets the connection and frees it at once (no TIME_WAIT).
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class ListenError(OSError):
    """callrec cannot listen on an address; str() names it, e.g.
    "cannot listen on 127.0.0.1:5060/udp: address in use"."""

    def __init__(self, host: str, port: int, kind: str, cause: OSError) -> None:
        shown = f"[{host}]" if ":" in host else host
        if cause.errno == errno.EADDRINUSE:
            reason = "address in use"
        elif cause.errno == errno.EADDRNOTAVAIL:
            reason = "address not available on this machine"
        elif cause.errno == errno.EACCES:
            reason = "permission denied"
        else:
            reason = cause.strerror or str(cause)
        super().__init__(f"cannot listen on {shown}:{port}/{kind}: {reason}")
        self.errno = cause.errno


@dataclass(frozen=True)
class TcpLimits:
    """How much TCP one callrec takes (see the module docstring)."""

    max_connections: int = 2000
    max_per_source: int = 200
    idle_timeout: float = 60.0
    message_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_message_bytes: int = MAX_TCP_BUFFER
    established_idle_timeout: float = ESTABLISHED_IDLE_TIMEOUT_S


def admission(limits: TcpLimits, total: int, from_source: int) -> str | None:
    """Why a new connection must be refused (None: take it), given the connections
    open now in all and from its source address."""
    if total >= limits.max_connections:
        return f"{limits.max_connections} TCP connections open (tcp_max_connections)"
    if from_source >= limits.max_per_source:
        return f"{limits.max_per_source} TCP connections from one address (tcp_max_per_source)"
    return None


class ConnectionClock:
    """When one TCP connection last did something, and whether it has expired."""

    __slots__ = ("established", "last_traffic_at", "message_started_at", "opened_at")

    def __init__(self, now: float) -> None:
        self.opened_at = now
        self.last_traffic_at = now
        self.established = False
        self.message_started_at: float | None = None

    def received(self, now: float, complete: int, pending: int) -> None:
        """Bytes arrived: `complete` messages were cut from them and `pending` bytes of
        the next one wait for more."""
        self.last_traffic_at = now
        if complete:
            self.established = True
            self.message_started_at = now if pending else None
        elif pending and self.message_started_at is None:
            self.message_started_at = now

    def sent(self, now: float) -> None:
        """callrec sent a message on it (it is in use, e.g. a connection to the trunk)."""
        self.established = True
        self.last_traffic_at = now

    def expiry(self, now: float, limits: TcpLimits) -> str | None:
        """Why the connection must be closed now, or None."""
        if (
            self.message_started_at is not None
            and now - self.message_started_at > limits.message_timeout
        ):
            return f"message not completed within {limits.message_timeout:g} s"
        if not self.established:
            if now - self.opened_at > limits.idle_timeout:
                return f"no complete message within {limits.idle_timeout:g} s"
        elif now - self.last_traffic_at > limits.established_idle_timeout:
            return f"idle for {limits.established_idle_timeout:g} s"
        return None


class RateLimitedLog:
    """One log line per `interval_s` at most for one kind of event an outsider can cause;
    the line says how many events it stands for."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._held = 0

    def note(self, now: float, count: int = 1) -> int:
        """Count `count` events; returns how many to report now (0: stay quiet)."""
        self._held += count
        if self._last is not None and now - self._last < self.interval_s:
            return 0
        self._last = now
        held, self._held = self._held, 0
        return held


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
        limits = owner.limits
        self.framer = StreamFramer(limits.max_message_bytes, limits.max_header_bytes)
        self.clock = ConnectionClock(time.monotonic())
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(str(host), int(port), "tcp")
        self.owner._opened(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            # A stream that lost its framing cannot be resynchronised: close it.
            self.owner._dropped(self, f"framing error: {exc.reason}")
            return
        pending = self.framer.pending
        self.clock.received(time.monotonic(), len(messages), pending)
        if not messages and not pending and b"\r\n\r\n" in data and self.clock.established:
            self.send(b"\r\n")  # RFC 5626 pong to a double-CRLF ping
        for message in messages:
            self.owner.receive(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._closed(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if data != b"\r\n":
                self.clock.sent(time.monotonic())

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class SipTransport:
    """Listens for SIP on UDP and TCP at one address and sends to peers on either."""

    def __init__(
        self, host: str, port: int, receive: Receiver, limits: TcpLimits | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.receive = receive
        self.limits = limits if limits is not None else TcpLimits()
        self.udp: _UdpProtocol | None = None
        self.tcp_listener: socket.socket | None = None
        self.tcp_connections: dict[tuple[str, int], _TcpConnection] = {}
        self.per_source: dict[str, int] = {}
        self.refused = 0
        self.accept_failures = 0
        self._pending_tcp: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._tcp_backlog: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._refused_log = RateLimitedLog()
        self._accept_error_log = RateLimitedLog()
        self._closed_log = RateLimitedLog()
        self._expired_log = RateLimitedLog()

    async def start(self) -> None:
        """Bind UDP then TCP on the same port; ListenError names what could not be bound."""
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self.receive), local_addr=(self.host, self.port)
            )
        except OSError as exc:
            raise ListenError(self.host, self.port, "udp", exc) from exc
        self.udp = protocol
        assert protocol.transport is not None
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            # Bursts (a registration storm, a flood of garbage) should queue, not drop.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        if self.port == 0:
            self.port = int(protocol.transport.get_extra_info("sockname")[1])
        try:
            self.tcp_listener = _listen_tcp(self.host, self.port)
        except OSError as exc:
            protocol.transport.close()
            raise ListenError(self.host, self.port, "tcp", exc) from exc
        self._tasks = [
            loop.create_task(self._accept_forever(self.tcp_listener)),
            loop.create_task(self._expire_forever()),
        ]

    # ------------------------------------------------------------------ accepting
    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            try:
                connection, address = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    continue  # ECONNABORTED and the like: that client is gone
                self.accept_failures += 1
                backoff = min(max(backoff * 2, ACCEPT_BACKOFF_S), ACCEPT_BACKOFF_MAX_S)
                count = self._accept_error_log.note(time.monotonic())
                if count:
                    log.error(
                        "cannot accept TCP connections: %s (%d time(s)); retrying in %.2f s",
                        exc.strerror or exc,
                        count,
                        backoff,
                    )
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            host = str(address[0])
            reason = admission(self.limits, len(self.tcp_connections), self.per_source.get(host, 0))
            if reason is not None:
                self.refused += 1
                with contextlib.suppress(OSError):
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                connection.close()
                count = self._refused_log.note(time.monotonic())
                if count:
                    log.warning(
                        "refused %d TCP connection(s), latest from %s: %s", count, host, reason
                    )
                continue
            connection.setblocking(False)
            try:
                await loop.connect_accepted_socket(lambda: _TcpConnection(self), connection)
            except OSError as exc:
                connection.close()
                log.debug("tcp connection from %s lost at once: %s", host, exc)

    async def _expire_forever(self) -> None:
        limits = self.limits
        interval = max(0.05, min(1.0, limits.idle_timeout / 4, limits.message_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire(time.monotonic())

    def expire(self, now: float) -> int:
        """Close the connections whose clock says so; returns how many."""
        closed = 0
        for connection in list(self.tcp_connections.values()):
            reason = connection.clock.expiry(now, self.limits)
            if reason is not None:
                closed += 1
                self._dropped(connection, reason, quiet=True)
        if closed:
            count = self._expired_log.note(now, closed)
            if count:
                log.info("closed %d TCP connection(s) that broke a time limit", count)
        return closed

    # ------------------------------------------------------------------ bookkeeping
    def _opened(self, connection: _TcpConnection) -> None:
        assert connection.peer is not None
        key = (connection.peer.host, connection.peer.port)
        self.tcp_connections[key] = connection
        self.per_source[key[0]] = self.per_source.get(key[0], 0) + 1

    def _closed(self, connection: _TcpConnection) -> None:
        if connection.peer is None:
            return
        key = (connection.peer.host, connection.peer.port)
        if self.tcp_connections.get(key) is connection:
            del self.tcp_connections[key]
            left = self.per_source.get(key[0], 1) - 1
            if left > 0:
                self.per_source[key[0]] = left
            else:
                self.per_source.pop(key[0], None)

    def _dropped(self, connection: _TcpConnection, reason: str, *, quiet: bool = False) -> None:
        if not quiet:
            count = self._closed_log.note(time.monotonic())
            if count:
                log.warning(
                    "closed %d TCP connection(s), latest from %s: %s",
                    count,
                    connection.peer,
                    reason,
                )
        else:
            log.debug("closed TCP connection from %s: %s", connection.peer, reason)
        connection.abort()

    # ------------------------------------------------------------------ sending
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
            self.tcp_listener = None
        for connection in list(self.tcp_connections.values()):
            if connection.transport is not None:
                connection.transport.close()


def _listen_tcp(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on host:port (SO_REUSEADDR, as asyncio does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(TCP_BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
