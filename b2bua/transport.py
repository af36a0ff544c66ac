"""Thin asyncio SIP transports: UDP datagrams and TCP streams on one listening address,
and TLS streams on another.

Everything protocol-related happens in the sans-IO layers; this module only moves bytes
between sockets and a `receive(data, peer)` callback, and keeps TCP within its limits.

TLS (`b2bua.tls.TlsSettings`, from `[sip] tls_*`) is TCP with an SSL context: the same
connection class, framing, caps and timeouts, with `Peer.transport` "tls". A TLS
connection counts against the TCP caps from its accept on, while its handshake runs,
and the handshake must end within `handshake_timeout` or the connection is closed; a
failed handshake (no client certificate when one is required, a certificate `tls_ca`
did not sign, plain SIP sent to the TLS port) is logged at most once a second. Handshakes
run in their own tasks, so a slow one never holds the accept loop. Outgoing TLS (to the
trunk) verifies the peer's certificate for the host connected to (SNI is that host).
A connection is found by its `Peer` (address, port and transport): responses and
requests to a phone go back over the connection it opened, whichever of TCP or TLS.

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

Tasks: the transport owns its background tasks (the accept loops, the expiry loop, one per
TLS handshake under way and one per outgoing connection being set up). `close()` cancels
and awaits every one of them, so a stopped transport leaves nothing running; a task that
fails is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from b2bua.message import SipParseError, StreamFramer
from b2bua.peer import Peer
from b2bua.tls import TlsSettings

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
STREAM_TRANSPORTS = ("tcp", "tls")
# Port 0 (tests): UDP draws a port; when its TCP side is taken, draw again this often.
ANY_PORT_ATTEMPTS = 8


class ListenError(OSError):
    """callrec cannot listen on an address; str() names it, e.g.
    "cannot listen on 127.0.0.1:5060/udp: address in use"."""

    def __init__(self, host: str, port: int, kind: str, cause: OSError) -> None:
        shown = f"[{host}]" if ":" in host else host
        if cause.errno is None and isinstance(cause.__cause__, OSError):
            cause = cause.__cause__  # uvloop raises its own OSError from the socket's
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


class _StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection (`kind`); for TLS, `connection_made` comes after the
    handshake."""

    def __init__(self, owner: SipTransport, kind: str) -> None:
        self.owner = owner
        self.kind = kind
        limits = owner.limits
        self.framer = StreamFramer(limits.max_message_bytes, limits.max_header_bytes)
        self.clock = ConnectionClock(time.monotonic())
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(str(host), int(port), self.kind)
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
    """Listens for SIP on UDP and TCP at one address (and TLS at another when `tls` is
    given) and sends to peers on any of them."""

    def __init__(
        self,
        host: str,
        port: int,
        receive: Receiver,
        limits: TcpLimits | None = None,
        *,
        tls: TlsSettings | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.receive = receive
        self.limits = limits if limits is not None else TcpLimits()
        self.tls = tls
        self.tls_port: int | None = None
        self.udp: _UdpProtocol | None = None
        self.tcp_listener: socket.socket | None = None
        self.tls_listener: socket.socket | None = None
        # Every stream connection, TCP and TLS, by its peer (address, port, transport).
        self.tcp_connections: dict[Peer, _StreamConnection] = {}
        # Connections callrec opened to a peer named otherwise than by the address it
        # resolved to (the trunk by host name): the name it was asked for.
        self._outgoing: dict[Peer, _StreamConnection] = {}
        self.per_source: dict[str, int] = {}
        # TLS connections accepted whose handshake is under way, per source address.
        self.handshaking: dict[str, int] = {}
        self.refused = 0
        self.accept_failures = 0
        self.handshake_failures = 0
        self._pending_tcp: dict[Peer, asyncio.Task[None]] = {}
        self._tcp_backlog: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._refused_log = RateLimitedLog()
        self._accept_error_log = RateLimitedLog()
        self._closed_log = RateLimitedLog()
        self._expired_log = RateLimitedLog()
        self._handshake_log = RateLimitedLog()
        self._no_tls_log = RateLimitedLog()
        # Told when a connection to a peer could not be opened (the owner's transaction
        # layer ends what was waiting for it).
        self.on_unreachable: Callable[[Peer], None] | None = None

    async def start(self) -> None:
        """Bind UDP then TCP on the same port, then TLS on its own; ListenError names
        what could not be bound. With port 0, a port whose TCP side is taken is given
        back and another one drawn (a few times)."""
        udp = await self._bind_udp_and_tcp()
        sock = udp.get_extra_info("socket")
        if sock is not None:
            # Bursts (a registration storm, a flood of garbage) should queue, not drop.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        assert self.tcp_listener is not None
        if self.tls is not None:
            try:
                self.tls_listener = _listen_tcp(self.tls.host, self.tls.port)
            except OSError as exc:
                udp.close()
                self.tcp_listener.close()
                raise ListenError(self.tls.host, self.tls.port, "tls", exc) from exc
            self.tls_port = int(self.tls_listener.getsockname()[1])
            self._spawn(self._accept_forever(self.tls_listener, "tls"), "sip-tls-accept")
        self._spawn(self._accept_forever(self.tcp_listener), "sip-tcp-accept")
        self._spawn(self._expire_forever(), "sip-tcp-expire")

    async def _bind_udp_and_tcp(self) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        any_port = self.port == 0
        attempt = 0
        while True:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self.receive), local_addr=(self.host, self.port)
                )
            except OSError as exc:
                raise ListenError(self.host, self.port, "udp", exc) from exc
            udp = protocol.transport
            assert udp is not None
            if any_port:
                self.port = int(udp.get_extra_info("sockname")[1])
            try:
                self.tcp_listener = _listen_tcp(self.host, self.port)
            except OSError as exc:
                udp.close()
                attempt += 1
                if not any_port or exc.errno != errno.EADDRINUSE or attempt == ANY_PORT_ATTEMPTS:
                    raise ListenError(self.host, self.port, "tcp", exc) from exc
                self.port = 0
                continue
            self.udp = protocol
            return udp

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` as a task of this transport: `close()` cancels and awaits it."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("SIP transport task %s failed", task.get_name(), exc_info=exc)

    # ------------------------------------------------------------------ accepting
    async def _accept_forever(self, listener: socket.socket, kind: str = "tcp") -> None:
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
            reason = admission(
                self.limits,
                len(self.tcp_connections) + sum(self.handshaking.values()),
                self.per_source.get(host, 0) + self.handshaking.get(host, 0),
            )
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
            if kind == "tls":
                # Counted from now: a client that never finishes its handshake holds a
                # descriptor too.
                self.handshaking[host] = self.handshaking.get(host, 0) + 1
                self._spawn(self._handshake(connection, host), "sip-tls-handshake")
                continue
            try:
                await loop.connect_accepted_socket(
                    lambda: _StreamConnection(self, "tcp"), connection
                )
            except OSError as exc:
                connection.close()
                log.debug("tcp connection from %s lost at once: %s", host, exc)

    async def _handshake(self, connection: socket.socket, host: str) -> None:
        """Take an accepted TLS connection through its handshake, within the timeout."""
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        timeout = self.tls.handshake_timeout
        try:
            # wait_for as well: the loop's own handshake timeout does not cover a peer
            # that stops reading in the middle of it on every event loop.
            await asyncio.wait_for(
                loop.connect_accepted_socket(
                    lambda: _StreamConnection(self, "tls"),
                    connection,
                    ssl=self.tls.server,
                    ssl_handshake_timeout=timeout,
                ),
                timeout + 1.0,
            )
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            connection.close()
            self.handshake_failures += 1
            count = self._handshake_log.note(time.monotonic())
            if count:
                log.warning(
                    "%d TLS handshake(s) failed, latest from %s: %s",
                    count,
                    host,
                    _handshake_error(exc, timeout),
                )
        finally:
            left = self.handshaking.get(host, 1) - 1
            if left > 0:
                self.handshaking[host] = left
            else:
                self.handshaking.pop(host, None)

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
    def _opened(self, connection: _StreamConnection) -> None:
        peer = connection.peer
        assert peer is not None
        self.tcp_connections[peer] = connection
        self.per_source[peer.host] = self.per_source.get(peer.host, 0) + 1

    def _closed(self, connection: _StreamConnection) -> None:
        peer = connection.peer
        if peer is None:
            return
        for name in [name for name, known in self._outgoing.items() if known is connection]:
            del self._outgoing[name]
        if self.tcp_connections.get(peer) is connection:
            del self.tcp_connections[peer]
            left = self.per_source.get(peer.host, 1) - 1
            if left > 0:
                self.per_source[peer.host] = left
            else:
                self.per_source.pop(peer.host, None)

    def _dropped(self, connection: _StreamConnection, reason: str, *, quiet: bool = False) -> None:
        if not quiet:
            count = self._closed_log.note(time.monotonic())
            if count:
                log.warning(
                    "closed %d TCP/TLS connection(s), latest from %s: %s",
                    count,
                    connection.peer,
                    reason,
                )
        else:
            log.debug("closed TCP connection from %s: %s", connection.peer, reason)
        connection.abort()

    # ------------------------------------------------------------------ sending
    def send(self, data: bytes, peer: Peer) -> None:
        """Send to `peer` over its transport: a datagram, or the stream connection to it
        (opened first when there is none; what is sent meanwhile waits for it)."""
        if peer.transport in STREAM_TRANSPORTS:
            self._send_stream(data, peer)
            return
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.sendto(data, (peer.host, peer.port))

    def _connection_to(self, peer: Peer) -> _StreamConnection | None:
        return self.tcp_connections.get(peer) or self._outgoing.get(peer)

    def _send_stream(self, data: bytes, peer: Peer) -> None:
        connection = self._connection_to(peer)
        if connection is not None:
            connection.send(data)
            return
        if self._stopped:
            log.debug("not connecting to %s: the transport is closed", peer)
            return
        if peer.transport == "tls" and self.tls is None:
            if self._no_tls_log.note(time.monotonic()):
                log.warning("cannot send to %s: SIP over TLS is not configured", peer)
            return
        self._tcp_backlog.setdefault(peer, []).append(data)
        if peer not in self._pending_tcp:
            name = f"sip-{peer.transport}-connect-{peer.host}:{peer.port}"
            self._pending_tcp[peer] = self._spawn(self._connect(peer), name)

    async def _connect(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        kind = peer.transport
        try:
            if kind == "tls":
                assert self.tls is not None
                _, opened = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _StreamConnection(self, kind),
                        peer.host,
                        peer.port,
                        ssl=self.tls.client,
                        server_hostname=peer.host,
                        ssl_handshake_timeout=self.tls.handshake_timeout,
                    ),
                    self.tls.handshake_timeout + 5.0,
                )
            else:
                _, opened = await loop.create_connection(
                    lambda: _StreamConnection(self, kind), peer.host, peer.port
                )
            if opened.peer != peer and opened.peer in self.tcp_connections:
                self._outgoing[peer] = opened
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.warning("%s connect to %s:%s failed: %s", kind, peer.host, peer.port, exc)
            failed = True
        else:
            failed = False
        finally:
            self._pending_tcp.pop(peer, None)
            backlog = self._tcp_backlog.pop(peer, [])
            connection = self._connection_to(peer)
            if connection is not None:
                for data in backlog:
                    connection.send(data)
        if failed and connection is None and self.on_unreachable is not None:
            self.on_unreachable(peer)

    async def close(self) -> None:
        """Stop listening, end every task of the transport and close its connections."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Failures were logged by _task_done; here only their end matters.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        for listener in (self.tcp_listener, self.tls_listener):
            if listener is not None:
                listener.close()
        self.tcp_listener = self.tls_listener = None
        for connection in list(self.tcp_connections.values()):
            if connection.transport is not None:
                connection.transport.close()


def _handshake_error(exc: BaseException, timeout: float) -> str:
    """What went wrong in a TLS handshake, in a few words."""
    if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
        return f"not completed within {timeout:g} s (tls_handshake_timeout)"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return str(exc) or type(exc).__name__


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
