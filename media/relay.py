"""The asyncio RTP/RTCP relay: one `MediaSession` per call, two legs, packets unchanged.

Leg "a" faces the caller and leg "b" the callee. Each leg owns an RTP socket on an even
port and an RTCP socket on the next port. What arrives on one leg leaves, byte for byte,
from the same kind of socket on the other leg, towards that leg's remote address.

This is the hot path of callrec: `datagram_received` does a few integer checks, one
`sendto` and one tap call, and nothing per packet is logged or allocated beyond the
datagram asyncio already made.

Announcements (`MediaSession.play`) are the one exception to "unchanged": once a prompt
has been played towards a leg, the RTP forwarded towards it goes through that leg's
`media.announce.StreamContinuity`, which rewrites sequence number, timestamp and SSRC (one
copy of the packet) so the phone keeps seeing one continuous stream. Until then packets
stay byte for byte; the relay only keeps a reference to the last one sent.

SRTP (`set_srtp`, `media.srtp`): a leg may run SRTP with keys of its own. What arrives
from it is authenticated and decrypted right after the source check, before anything
else sees it (the tap records plaintext); what leaves towards it is encrypted last, just
before `sendto`, RTCP as SRTCP likewise. A packet that fails authentication or libsrtp's
replay check is dropped and counted (`LegStats.srtp_failed`), logged at most once per
`_SRTP_LOG_INTERVAL`, and does not count as media (the silence checks ignore it). A
plain leg costs one attribute test per packet.

Where a leg's packets may come from (strict source, against RTP hijacking):

- Before a leg's SDP is known, nothing is accepted on it.
- Packets from the exact address its SDP names (RTP port, RTCP port) are accepted.
- NAT: when the leg's SDP names another host than the one its SIP came from (a phone
  behind NAT puts its private address in SDP), packets from the SIP host are accepted
  too, from whatever port, but only while the leg is learning: for `latch_window`
  seconds after its SDP arrived and again after the call is answered. The first such
  packet latches that port; until then the relay sends towards the SIP host at the SDP
  port (never to the private address, which it cannot reach). `nat=False` turns this off.
- Whatever was accepted first is latched: later packets from that address take the fast
  path (one tuple comparison). Any other source is dropped before it is counted,
  forwarded or tapped (the recorder never sees it), and counted as `foreign` per leg;
  the session logs those drops at most once per `_FOREIGN_LOG_INTERVAL` seconds and once
  more, as a summary, when it closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from time import time as wall_clock
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from media.announce import FRAME_SECONDS, INJECTABLE_CODECS, Injection, StreamContinuity
from media.ports import PortAllocator
from media.rtp import BadMediaAddress, MediaError, is_rtcp, rtp_header_valid
from media.srtp import SRTP_FAILURES, SrtpError, SrtpKey, SrtpLeg

__all__ = ["LEGS", "LegStats", "MediaSession", "MediaTap", "check_remote"]

log = logging.getLogger(__name__)

LEGS = ("a", "b")
_HOLD_HOSTS = frozenset({"0.0.0.0", "::"})
_TAP_ERROR_LOG_INTERVAL = 10.0
_FOREIGN_LOG_INTERVAL = 5.0
_SRTP_LOG_INTERVAL = 5.0
_BIND_ATTEMPTS = 32
_RTCP_MIN_SIZE = 4  # the RTCP common header

Address = tuple[Any, ...]  # (host, port) or, for IPv6, (host, port, flowinfo, scope_id)


class MediaTap(Protocol):
    """Receives a copy of every valid packet a session relays (the recorder, DTMF).

    `leg` is the leg the packet came FROM ("a" caller side, "b" callee side), `kind` is
    "rtp" or "rtcp", `arrival` is `time.time()`. `data` must not be kept beyond the call
    unless copied; it is the very bytes object that was forwarded. Must be fast: it runs
    inline on the event loop for every packet.
    """

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None: ...


@dataclass
class LegStats:
    """Packet counters of one leg; `MediaSession.stats` returns a snapshot.

    `*_in` count valid packets accepted on this leg's sockets, `*_out` packets sent out of
    them. `dropped` counts valid packets that arrived on this leg and were not forwarded:
    the far leg's remote is unknown or on hold, its socket is congested, or (counted in
    `foreign` too) they came from a source the leg does not accept (not its SDP address,
    not its latched source, not its NAT host while learning). `replaced` counts
    RTP packets that arrived on this leg while an announcement played towards the other
    leg (not forwarded, not in `dropped`); `injected` counts announcement packets sent out
    of this leg (also in `rtp_out`). `srtp_failed` counts SRTP/SRTCP packets from this
    SRTP leg that failed authentication or the replay check (dropped, not in `*_in`);
    packets from it that could not be encrypted towards an SRTP far leg are in `dropped`.
    """

    rtp_in: int = 0
    rtp_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    garbled: int = 0
    dropped: int = 0
    foreign: int = 0
    send_errors: int = 0
    last_packet_at: float | None = None  # wall clock of the last accepted packet
    replaced: int = 0
    injected: int = 0
    srtp_failed: int = 0


class _Channel:
    """One socket of one leg (its RTP or its RTCP socket) and where its packets go."""

    __slots__ = (
        "congested",
        "continuity",
        "dest",
        "dropped",
        "far",
        "foreign",
        "garbled",
        "injected",
        "kind",
        "last_at",
        "last_forwarded",
        "learn_until",
        "leg",
        "muxed_rtcp_in",
        "muxed_rtcp_out",
        "nat_host",
        "packets_in",
        "packets_out",
        "port",
        "replaced",
        "sdp_address",
        "send_errors",
        "send_to",
        "source",
        "srtp_failed",
        "transport",
    )

    def __init__(self, leg: _Leg, kind: str) -> None:
        self.leg = leg
        self.kind = kind
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.far: _Channel = self  # wired to the other leg's channel by the session
        self.source: Address | None = None  # latched remote (symmetric RTP)
        self.sdp_address: Address | None = None  # (host, port) the SDP names: accepted
        # NAT: the host the leg's SIP came from, whose packets are accepted from any port
        # until `learn_until` (session clock) while nothing is latched; None = strict.
        self.nat_host: str | None = None
        self.learn_until = 0.0
        self.send_to: Address | None = None  # where to send until a source is latched
        self.dest: Address | None = None  # where to send now; None = drop
        self.congested = False
        self.packets_in = 0
        self.packets_out = 0
        self.muxed_rtcp_in = 0  # RFC 5761 RTCP on the RTP socket
        self.muxed_rtcp_out = 0
        self.garbled = 0
        self.dropped = 0
        self.foreign = 0
        self.send_errors = 0
        self.last_at: float | None = None
        # Outgoing RTP state for announcements: the last packet sent out of this channel
        # while nothing was ever injected, then the rewriter that keeps it continuous.
        self.last_forwarded: bytes | None = None
        self.continuity: StreamContinuity | None = None
        self.replaced = 0
        self.injected = 0
        self.srtp_failed = 0

    def refresh_dest(self) -> None:
        if self.leg.on_hold or self.congested:
            self.dest = None
        else:
            self.dest = self.source if self.source is not None else self.send_to

    def latch(self, source: Address) -> None:
        self.source = source
        self.refresh_dest()


class _Leg:
    """The two channels of one leg plus its hold and silence state."""

    __slots__ = (
        "name",
        "on_hold",
        "rtcp",
        "rtp",
        "silence_progress_at",
        "silence_seen",
        "silence_watching",
        "silent",
        "srtp",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.on_hold = False
        self.srtp: SrtpLeg | None = None  # None: plain RTP
        self.rtp = _Channel(self, "rtp")
        self.rtcp = _Channel(self, "rtcp")
        self.silence_watching = False
        self.silence_seen = 0
        self.silence_progress_at = 0.0
        self.silent = False


class _ChannelProtocol(asyncio.DatagramProtocol):
    """Shared socket callbacks; subclasses implement `datagram_received`."""

    __slots__ = ("channel", "session")

    def __init__(self, session: MediaSession, channel: _Channel) -> None:
        self.session = session
        self.channel = channel

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for a remote that went away: counted, never logged per packet.
        self.channel.send_errors += 1

    def pause_writing(self) -> None:
        # Late audio is useless: drop while the kernel buffer is full instead of queueing.
        self.channel.congested = True
        self.channel.refresh_dest()

    def resume_writing(self) -> None:
        self.channel.congested = False
        self.channel.refresh_dest()


class _RtpProtocol(_ChannelProtocol):
    __slots__ = ()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        channel = self.channel
        # The source check comes first: a foreign packet is not even looked at. Once a
        # source is latched, its packets cost one tuple comparison here.
        if addr != channel.source and not self.session._admit(channel, addr):
            return
        # Fast path: a plain version-2 header with no CSRC, extension or padding.
        if len(data) < 12 or data[0] != 0x80 or 192 <= data[1] <= 223:
            if is_rtcp(data):
                self._muxed_rtcp_received(data)
                return
            if not rtp_header_valid(data):
                channel.garbled += 1
                return
        srtp = channel.leg.srtp
        if srtp is not None:
            try:
                data = srtp.unprotect(data)
            except SRTP_FAILURES:
                self.session._srtp_failed(channel)
                return
        arrival = wall_clock()
        channel.packets_in += 1
        channel.last_at = arrival
        rtp_filter = self.session.rtp_filter
        if rtp_filter is None or rtp_filter(channel.leg.name, data, arrival):
            _forward_rtp(channel, data, arrival)
        else:
            channel.dropped += 1
        tap = self.session.tap
        if tap is not None:
            try:
                tap.on_packet(channel.leg.name, "rtp", data, arrival)
            except Exception as exc:
                self.session._tap_failed(exc)

    def _muxed_rtcp_received(self, data: bytes) -> None:
        if len(data) < _RTCP_MIN_SIZE:
            self.channel.garbled += 1
            return
        _relay_rtcp(self, data, muxed=True)


def _relay_rtcp(protocol: _ChannelProtocol, data: bytes, *, muxed: bool) -> None:
    """Count, forward and tap one RTCP packet (on its own port or muxed with RTP) whose
    source was admitted."""
    channel = protocol.channel
    srtp = channel.leg.srtp
    if srtp is not None:
        try:
            data = srtp.unprotect_rtcp(data)
        except SRTP_FAILURES:
            protocol.session._srtp_failed(channel)
            return
    arrival = wall_clock()
    if muxed:
        channel.muxed_rtcp_in += 1
    else:
        channel.packets_in += 1
    channel.last_at = arrival
    far = channel.far
    dest = far.dest
    out: bytes | None = data
    srtp = far.leg.srtp
    if srtp is not None and dest is not None:
        out = _protect(srtp.protect_rtcp, data)
    if dest is None or out is None:
        channel.dropped += 1
    else:
        far.transport.sendto(out, dest)  # type: ignore[union-attr]
        if muxed:
            far.muxed_rtcp_out += 1
        else:
            far.packets_out += 1
    protocol.session._tap_packet(channel.leg.name, "rtcp", data, arrival)


def _forward_rtp(channel: _Channel, data: bytes, arrival: float) -> None:
    """Send an RTP packet that arrived on `channel` out of the far leg."""
    far = channel.far
    dest = far.dest
    if dest is None:
        channel.dropped += 1
    elif far.continuity is None:
        far.last_forwarded = data
        srtp = far.leg.srtp
        if srtp is not None:
            protected = _protect(srtp.protect, data)
            if protected is None:
                channel.dropped += 1
                return
            data = protected
        far.transport.sendto(data, dest)  # type: ignore[union-attr]
        far.packets_out += 1
    else:
        rewritten = far.continuity.forward(data, arrival)
        if rewritten is None:
            channel.replaced += 1
            return
        srtp = far.leg.srtp
        if srtp is not None:
            rewritten = _protect(srtp.protect, bytes(rewritten))
            if rewritten is None:
                channel.dropped += 1
                return
        far.transport.sendto(rewritten, dest)  # type: ignore[union-attr]
        far.packets_out += 1


def _protect(protect: Callable[[bytes], bytes], data: bytes) -> bytes | None:
    """`data` encrypted for an SRTP leg, or None when libsrtp refuses it (a sequence
    number it already encrypted: a duplicate from the plain leg is not sent twice)."""
    try:
        return protect(data)
    except SRTP_FAILURES:
        return None


class _RtcpProtocol(_ChannelProtocol):
    __slots__ = ()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        channel = self.channel
        if addr != channel.source and not self.session._admit(channel, addr):
            return
        if len(data) < _RTCP_MIN_SIZE or data[0] & 0xC0 != 0x80:
            channel.garbled += 1
            return
        _relay_rtcp(self, data, muxed=False)


# The most datagrams `_drain` reads from one socket at close: two seconds of 20 ms audio.
DRAIN_LIMIT = 100


def _drain(transport: asyncio.BaseTransport) -> None:
    """Hand `transport`'s protocol the datagrams waiting in its socket's buffer (at most
    DRAIN_LIMIT), read from a duplicate of the socket without blocking."""
    protocol = transport.get_protocol()
    sock = transport.get_extra_info("socket")
    if sock is None or not isinstance(protocol, asyncio.DatagramProtocol):
        return
    try:
        reader = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return
    with reader:
        reader.setblocking(False)
        for _ in range(DRAIN_LIMIT):
            try:
                data, addr = reader.recvfrom(65535)
            except OSError:  # BlockingIOError: nothing left
                break
            protocol.datagram_received(data, addr)


def _allowed(channel: _Channel, addr: Address) -> bool:
    """True if `channel`'s signalling allows a latched source at `addr` to stay."""
    sdp = channel.sdp_address
    if sdp is not None and addr[0] == sdp[0] and addr[1] == sdp[1]:
        return True
    return channel.nat_host is not None and addr[0] == channel.nat_host


def _accepted(channel: _Channel, now: float) -> str:
    """What `channel` accepts now, for a log line."""
    if channel.source is not None:
        return _show_address(channel.source)
    sdp = channel.sdp_address
    if sdp is None:
        return "nothing yet (no SDP)"
    text = _show_address(sdp)
    if channel.nat_host is not None and now < channel.learn_until:
        text += f" or {channel.nat_host} at any port (NAT, learning)"
    return text


def _show_address(addr: Address) -> str:
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class _DropReport:
    """When to log a kind of dropped packet: at most once per `interval` seconds, with
    how many were dropped since the last line."""

    __slots__ = ("interval", "logged_at", "logged_count")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.logged_at: float | None = None
        self.logged_count = 0

    def due(self, now: float, total: int) -> int | None:
        """The count since the last line if a line is due now (and it is taken as
        logged), else None."""
        if self.logged_at is not None and now - self.logged_at < self.interval:
            return None
        since = total - self.logged_count
        self.logged_at, self.logged_count = now, total
        return since


def _returning(protocol: _ChannelProtocol) -> Callable[[], _ChannelProtocol]:
    return lambda: protocol


def check_remote(local_host: str, host: str, port: int, rtcp_port: int | None = None) -> None:
    """Raise `BadMediaAddress` (a ValueError) unless a session bound on `local_host` can
    take `host:port` as a leg's remote (`MediaSession.set_remote`); port 0 or host
    0.0.0.0 / :: is hold, always fine. Lets a caller in another process check first."""
    if port == 0 or host in _HOLD_HOSTS:
        return
    address = _parse_host(host)
    if address.version != _parse_host(local_host).version:
        raise BadMediaAddress(f"remote media address {host} is not in the family of {local_host}")
    if not 0 < port < 65536 or (rtcp_port is not None and not 0 < rtcp_port < 65536):
        raise BadMediaAddress(f"bad remote media port {port}/{rtcp_port}")


def _parse_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        # Resolving a name here would block the event loop; SDP carries literals anyway.
        raise BadMediaAddress(f"media address {host!r} is not an IP literal") from None


class MediaSession:
    """The relay for one call: legs "a" and "b", each an RTP/RTCP socket pair.

    Create it with `await MediaSession.create(...)`. Strict source with symmetric RTP
    (see the module docstring): a leg accepts packets only from the address its SDP
    names or, behind NAT, from the host its SIP came from while it is learning; the first
    accepted packet on a leg's RTP (or RTCP) socket latches that leg's remote RTP (or
    RTCP) address to its source. Everything else is dropped and counted as `foreign`.
    `clock` (default `time.monotonic`) times the learning window, the silence and idle
    checks and the rate limit of the logs, so tests can drive them with a fake clock.

    Silence: once a leg has received RTP, or after `mark_media_started()`, a leg that gets
    no RTP for `silence_timeout` seconds triggers `on_silence(leg)` once, and again only
    after its RTP has resumed and stopped again. Idle: once both legs have had no RTP for
    `idle_timeout` seconds (neither leg on hold), `on_idle()` is called once, and again
    only after RTP has resumed and stopped again; the call controller uses it to end
    calls whose BYE was lost. A periodic check (at most every second) does both; the
    precision is about a quarter of the shorter timeout.
    """

    def __init__(
        self,
        allocator: PortAllocator,
        host: str,
        *,
        tap: MediaTap | None = None,
        silence_timeout: float | None = 30.0,
        on_silence: Callable[[str], None] | None = None,
        idle_timeout: float | None = None,
        on_idle: Callable[[], None] | None = None,
        nat: bool = True,
        latch_window: float = 3.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        """Prefer `create()`; a session made here has no sockets until `open()`."""
        address = _parse_host(host)
        self.host = str(address)
        self.family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self.tap = tap
        # Decides, per RTP packet from a leg, whether it is forwarded (e.g. to keep a
        # feature code from the far end); None forwards everything.
        self.rtp_filter: Callable[[str, bytes, float], bool] | None = None
        self.silence_timeout = silence_timeout
        self.on_silence = on_silence
        self.idle_timeout = idle_timeout
        self.on_idle = on_idle
        self.nat = nat
        self.latch_window = latch_window
        self.clock = clock
        # Names the session in its log lines; the owner may set it to the call's id.
        self.label: str | None = None
        self._foreign_report = _DropReport(_FOREIGN_LOG_INTERVAL)
        self._srtp_report = _DropReport(_SRTP_LOG_INTERVAL)
        self._idle_reported = False
        self._check_every: float | None = None  # how often to check for silence; open() sets it
        self._allocator = allocator
        self._legs = {name: _Leg(name) for name in LEGS}
        leg_a, leg_b = self._legs["a"], self._legs["b"]
        leg_a.rtp.far, leg_b.rtp.far = leg_b.rtp, leg_a.rtp
        leg_a.rtcp.far, leg_b.rtcp.far = leg_b.rtcp, leg_a.rtcp
        self._allocated_ports: list[int] = []
        self._closed = False
        self._monitor: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tap_errors = 0
        self._tap_error_logged_at = -_TAP_ERROR_LOG_INTERVAL
        self._announcements: dict[str, asyncio.Task[int]] = {}

    @classmethod
    async def create(
        cls,
        allocator: PortAllocator,
        host: str,
        *,
        tap: MediaTap | None = None,
        silence_timeout: float | None = 30.0,
        on_silence: Callable[[str], None] | None = None,
        idle_timeout: float | None = None,
        on_idle: Callable[[], None] | None = None,
        nat: bool = True,
        latch_window: float = 3.0,
        clock: Callable[[], float] = monotonic,
    ) -> MediaSession:
        """Bind both legs' sockets on `host` with ports from `allocator` and start relaying.

        Raises `MediaError` if no port pair can be bound. `silence_timeout=None` or
        `on_silence=None` turns silence detection off; likewise for the idle check.
        `nat=False` accepts packets only from the SDP address; `latch_window` is how long
        a NAT'ed leg may latch a source port from its SIP host (see the module docstring).
        """
        session = cls(
            allocator,
            host,
            tap=tap,
            silence_timeout=silence_timeout,
            on_silence=on_silence,
            idle_timeout=idle_timeout,
            on_idle=on_idle,
            nat=nat,
            latch_window=latch_window,
            clock=clock,
        )
        await session.open()
        return session

    async def open(self) -> None:
        """Bind the sockets and start the silence check (done by `create`)."""
        if self._loop is not None or self._closed:
            raise MediaError("media session already opened")
        loop = self._loop = asyncio.get_running_loop()
        bound: list[tuple[_Channel, socket.socket, type[_ChannelProtocol]]] = []
        try:
            for leg in self._legs.values():
                rtp_sock, rtcp_sock = self._bind_pair(leg)
                bound.append((leg.rtp, rtp_sock, _RtpProtocol))
                bound.append((leg.rtcp, rtcp_sock, _RtcpProtocol))
            # All four endpoints at once: each waits a loop iteration for its protocol,
            # and on a worker's busy loop an iteration can take milliseconds (the call's
            # setup waits for this).
            results = await asyncio.gather(
                *(
                    loop.create_datagram_endpoint(_returning(cls(self, channel)), sock=sock)
                    for channel, sock, cls in bound
                ),
                return_exceptions=True,
            )
            failure: BaseException | None = None
            for (channel, _, _), result in zip(bound, results, strict=True):
                if isinstance(result, BaseException):
                    failure = failure or result
                else:
                    channel.transport = result[0]
            if failure is not None:
                raise failure
        except BaseException:
            for channel, sock, _ in bound:
                if channel.transport is None:
                    sock.close()
            self.close()
            raise
        self._check_every = self._monitor_interval()
        if self._check_every is not None:
            self._schedule_monitor()

    def _bind_pair(self, leg: _Leg) -> tuple[socket.socket, socket.socket]:
        last_error: OSError | None = None
        for _ in range(min(_BIND_ATTEMPTS, self._allocator.capacity)):
            port = self._allocator.allocate()
            opened: list[socket.socket] = []
            try:
                for number in (port, port + 1):
                    sock = socket.socket(self.family, socket.SOCK_DGRAM)
                    opened.append(sock)
                    sock.setblocking(False)
                    sock.bind((self.host, number))
            except OSError as exc:
                # Taken by another process: put it at the back of the queue, try the next.
                last_error = exc
                for sock in opened:
                    sock.close()
                self._allocator.release(port)
                continue
            self._allocated_ports.append(port)
            leg.rtp.port, leg.rtcp.port = port, port + 1
            return opened[0], opened[1]
        raise MediaError(f"cannot bind an RTP port pair on {self.host}: {last_error}")

    # -- public API ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def local_port(self, leg: str) -> int:
        """The RTP port of `leg` (its RTCP port is this + 1), to put in that leg's SDP."""
        return self._leg(leg).rtp.port

    def local_rtcp_port(self, leg: str) -> int:
        return self._leg(leg).rtcp.port

    def set_remote(
        self,
        leg: str,
        host: str,
        port: int,
        *,
        rtcp_port: int | None = None,
        relatch: bool = False,
        signalled_from: str | None = None,
    ) -> None:
        """`leg`'s SDP says it takes media at `host:port` (RTCP at `rtcp_port`, default
        port + 1); `signalled_from` is the host that SDP's SIP message came from.

        Packets are accepted from that address, and, when `host` differs from
        `signalled_from` (NAT) and `nat` is on, from `signalled_from` at any port while
        the leg learns (`latch_window` seconds from now, and again after
        `mark_media_started`). They are sent to the latched source, else to the SDP
        address (or, behind NAT with a private SDP address, to `signalled_from` at the SDP
        port). Port 0 or host 0.0.0.0 / :: puts the leg on hold (nothing is sent to it).
        `relatch=True` (new SDP) forgets the latched sources and restarts the learning;
        without it a latched source is kept while the new SDP still allows it.
        `signalled_from` that is not an IP literal of the session's family is ignored.
        """
        state = self._leg(leg)
        if port == 0 or host in _HOLD_HOSTS:
            state.on_hold = True
            if relatch:
                # A held phone may still send (music on hold) from where it did before.
                learn_until = self.clock() + self.latch_window
                for channel in (state.rtp, state.rtcp):
                    channel.source = None
                    channel.learn_until = learn_until
        else:
            check_remote(self.host, host, port, rtcp_port)
            address = _parse_host(host)
            state.on_hold = False
            nat_host = self._nat_host(address, signalled_from)
            # A private SDP address behind NAT cannot be reached from here: until the
            # phone's first packet shows its public port, guess the SDP port at its host.
            send_host = (
                nat_host
                if nat_host is not None and address.is_private and not address.is_loopback
                else str(address)
            )
            learn_until = self.clock() + self.latch_window
            for channel, number in (
                (state.rtp, port),
                (state.rtcp, rtcp_port if rtcp_port is not None else port + 1),
            ):
                channel.sdp_address = (str(address), number)
                channel.send_to = (send_host, number)
                channel.nat_host = nat_host
                source = channel.source
                if relatch or (source is not None and not _allowed(channel, source)):
                    channel.source = None
                if channel.source is None:
                    channel.learn_until = learn_until
        state.rtp.refresh_dest()
        state.rtcp.refresh_dest()

    def _nat_host(
        self,
        sdp_host: ipaddress.IPv4Address | ipaddress.IPv6Address,
        signalled_from: str | None,
    ) -> str | None:
        """The host to learn a NAT'ed leg's source port from, or None (strict SDP)."""
        if not self.nat or signalled_from is None:
            return None
        try:
            sip_host = ipaddress.ip_address(signalled_from.strip("[]"))
        except ValueError:
            return None
        if sip_host == sdp_host or (sip_host.version == 6) != (self.family == socket.AF_INET6):
            return None
        return str(sip_host)

    def remote(self, leg: str, kind: str = "rtp") -> tuple[str, int] | None:
        """Where `leg`'s RTP (or RTCP) goes now: the latched source, else the SDP
        address (behind NAT with a private SDP address: the SIP host at the SDP port);
        None while unknown or on hold."""
        state = self._leg(leg)
        channel = state.rtp if kind == "rtp" else state.rtcp
        dest = channel.dest
        return None if dest is None else (dest[0], dest[1])

    def is_latched(self, leg: str, kind: str = "rtp") -> bool:
        state = self._leg(leg)
        return (state.rtp if kind == "rtp" else state.rtcp).source is not None

    def set_srtp(self, leg: str, receive: SrtpKey | None, send: SrtpKey | None) -> None:
        """From now on `leg` runs SRTP: what arrives from it is decrypted with `receive`
        (its key), what goes to it encrypted with `send` (ours); both None: plain RTP.
        A direction whose key did not change keeps its libsrtp session (a re-INVITE that
        keeps the keys keeps the replay window and rollover counter). Raises `SrtpError`
        for a key that cannot be used, or when only one of the two is given."""
        state = self._leg(leg)
        if receive is None and send is None:
            state.srtp = None
        elif receive is None or send is None:
            raise SrtpError("an SRTP leg needs a key for each direction")
        else:
            state.srtp = SrtpLeg(receive, send, previous=state.srtp)

    @property
    def srtp_failures(self) -> int:
        """Packets from either leg that failed SRTP (see `LegStats.srtp_failed`)."""
        return sum(ch.srtp_failed for leg in self._legs.values() for ch in (leg.rtp, leg.rtcp))

    @property
    def foreign_packets(self) -> int:
        """Packets dropped on either leg because of their source (see `LegStats.foreign`)."""
        return sum(ch.foreign for leg in self._legs.values() for ch in (leg.rtp, leg.rtcp))

    def stats(self, leg: str) -> LegStats:
        """A snapshot of `leg`'s counters."""
        state = self._leg(leg)
        rtp, rtcp = state.rtp, state.rtcp
        last = [t for t in (rtp.last_at, rtcp.last_at) if t is not None]
        return LegStats(
            rtp_in=rtp.packets_in,
            rtp_out=rtp.packets_out,
            rtcp_in=rtcp.packets_in + rtp.muxed_rtcp_in,
            rtcp_out=rtcp.packets_out + rtp.muxed_rtcp_out,
            garbled=rtp.garbled + rtcp.garbled,
            dropped=rtp.dropped + rtcp.dropped,
            foreign=rtp.foreign + rtcp.foreign,
            send_errors=rtp.send_errors + rtcp.send_errors,
            last_packet_at=max(last) if last else None,
            replaced=rtp.replaced,
            injected=rtp.injected,
            srtp_failed=rtp.srtp_failed + rtcp.srtp_failed,
        )

    def play(
        self, leg: str, pcm: npt.NDArray[np.int16], payload_type: int, codec: str
    ) -> asyncio.Task[int]:
        """Play `pcm` (8 kHz mono int16) to the phone on `leg`, in its codec, paced at 20 ms.

        `payload_type` and `codec` (PCMU, PCMA, G722 or OPUS: `media.announce`
        `INJECTABLE_CODECS`) are what that leg's SDP negotiated.
        The packets continue the stream the phone receives (same SSRC, next sequence
        number, timestamp advanced with the elapsed time; a fresh random stream if nothing
        was sent to it yet); what the other leg sends towards it is dropped meanwhile and
        forwarded again afterwards, renumbered to stay continuous. The task's result is
        the number of packets played. Playing again on the same leg stops the previous
        announcement there. Raises `MediaError` for a closed session, an unknown leg or a
        codec it cannot encode.
        """
        channel = self._leg(leg).rtp
        if self._closed or self._loop is None:
            raise MediaError("cannot play an announcement on a closed or unopened session")
        if codec.upper() not in INJECTABLE_CODECS:
            raise MediaError(f"cannot play an announcement in codec {codec!r}")
        now = wall_clock()
        continuity = channel.continuity
        if continuity is None:
            continuity = StreamContinuity(channel.last_forwarded, channel.far.last_at)
            channel.continuity = continuity
            channel.last_forwarded = None
        injection = continuity.start_injection(pcm, payload_type, codec, now)
        previous = self._announcements.get(leg)
        if previous is not None:
            previous.cancel()
        task = self._loop.create_task(self._play(channel, injection))
        self._announcements[leg] = task
        return task

    def forward(self, from_leg: str, data: bytes) -> None:
        """Send `data` on as if it had just arrived from `from_leg` (a held packet)."""
        if not self._closed:
            _forward_rtp(self._leg(from_leg).rtp, data, wall_clock())

    def playing(self, leg: str) -> bool:
        """True while an announcement is being played towards `leg`."""
        continuity = self._leg(leg).rtp.continuity
        return continuity is not None and continuity.injecting

    def mark_media_started(self) -> None:
        """The call is answered: start the silence clock of legs that have not sent RTP
        yet, and let NAT'ed legs that latched nothing yet learn for another window (a
        phone may send only once the call is answered)."""
        now = self.clock()
        for leg in self._legs.values():
            for channel in (leg.rtp, leg.rtcp):
                if channel.source is None and channel.nat_host is not None:
                    channel.learn_until = now + self.latch_window
            if not leg.silence_watching:
                leg.silence_watching = True
                leg.silence_seen = leg.rtp.packets_in
                leg.silence_progress_at = now

    def _idle(self, now: float) -> bool:
        """Both legs watched, neither on hold, and no RTP from either for idle_timeout."""
        if self._idle_reported or not self.idle_timeout:
            return False
        return all(
            leg.silence_watching
            and not leg.on_hold
            and now - leg.silence_progress_at >= self.idle_timeout
            for leg in self._legs.values()
        )

    def close(self) -> None:
        """Close the sockets and give the ports back; safe to call more than once.

        What already reached a socket and waits in its kernel buffer is relayed (and
        tapped for the recording) first: a phone that hangs up right after its last
        packet must not lose it because the BYE was read before that packet."""
        if self._closed:
            return
        for leg in self._legs.values():
            for channel in (leg.rtp, leg.rtcp):
                if channel.transport is not None:
                    _drain(channel.transport)
        self._closed = True
        foreign = self.foreign_packets
        if foreign:
            counts = {name: self.stats(name).foreign for name in LEGS}
            log.warning(
                "%s: closed; %d packet(s) from unexpected sources were dropped "
                "(leg a: %d, leg b: %d)",
                self._name(),
                foreign,
                counts["a"],
                counts["b"],
            )
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None
        failed = self.srtp_failures
        if failed:
            counts = {name: self.stats(name).srtp_failed for name in LEGS}
            log.warning(
                "%s: closed; %d SRTP packet(s) failed authentication or the replay check "
                "(leg a: %d, leg b: %d)",
                self._name(),
                failed,
                counts["a"],
                counts["b"],
            )
        for task in self._announcements.values():
            task.cancel()
        self._announcements.clear()
        for leg in self._legs.values():
            for channel in (leg.rtp, leg.rtcp):
                if channel.transport is not None:
                    channel.transport.close()
                channel.dest = None
        for port in self._allocated_ports:
            self._allocator.release(port)
        self._allocated_ports.clear()

    # -- internals ----------------------------------------------------------------------

    async def _play(self, channel: _Channel, injection: Injection) -> int:
        """Send `injection` out of `channel` on a 20 ms grid of the loop clock.

        Deadlines are computed from the start, not from the previous send, so pacing does
        not drift; a late loop sends the frames it owes at once (they are timestamped).
        After the last packet it waits out that frame before forwarding resumes.
        """
        loop = asyncio.get_running_loop()
        continuity = channel.continuity
        assert continuity is not None
        start = loop.time()
        index = 0
        try:
            while not self._closed:
                packet = injection.next_packet(wall_clock())
                if packet is None:
                    break
                dest = channel.dest
                srtp = channel.leg.srtp
                if srtp is not None:
                    packet = _protect(srtp.protect, packet)
                if dest is not None and channel.transport is not None and packet is not None:
                    channel.transport.sendto(packet, dest)
                    channel.packets_out += 1
                    channel.injected += 1
                index += 1
                delay = start + index * FRAME_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            continuity.end_injection(injection)
            if self._announcements.get(channel.leg.name) is asyncio.current_task():
                del self._announcements[channel.leg.name]
        return injection.sent

    def _leg(self, leg: str) -> _Leg:
        try:
            return self._legs[leg]
        except KeyError:
            raise MediaError(f"unknown leg {leg!r}, expected 'a' or 'b'") from None

    def _tap_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        tap = self.tap
        if tap is not None:
            try:
                tap.on_packet(leg, kind, data, arrival)
            except Exception as exc:
                self._tap_failed(exc)

    def _tap_failed(self, exc: Exception) -> None:
        self._tap_errors += 1
        now = self.clock()
        if now - self._tap_error_logged_at >= _TAP_ERROR_LOG_INTERVAL:
            self._tap_error_logged_at = now
            log.error(
                "media tap failed (%d failures in this session so far); forwarding goes on",
                self._tap_errors,
                exc_info=exc,
            )

    def _monitor_interval(self) -> float | None:
        """How often to check for silence; None when no check is wanted."""
        timeouts = [
            timeout
            for timeout, callback in (
                (self.silence_timeout, self.on_silence),
                (self.idle_timeout, self.on_idle),
            )
            if timeout and callback is not None
        ]
        if not timeouts:
            return None
        return min(1.0, max(0.02, min(timeouts) / 4))

    def _schedule_monitor(self) -> None:
        assert self._loop is not None
        assert self._check_every is not None
        self._monitor = self._loop.call_later(self._check_every, self._on_monitor)

    def _on_monitor(self) -> None:
        self.check_silence()
        if not self._closed:  # a callback may have closed the session
            self._schedule_monitor()

    def check_silence(self) -> None:
        """Report silence and idleness as of `clock()` now; a timer calls this every
        `_check_every` seconds, and a test on a fake clock may call it directly."""
        if self._closed:
            return
        now = self.clock()
        on_silence, on_idle = self.on_silence, self.on_idle
        for leg in self._legs.values():
            count = leg.rtp.packets_in
            if count != leg.silence_seen:
                leg.silence_seen = count
                leg.silence_progress_at = now
                leg.silence_watching = True
                leg.silent = False
                self._idle_reported = False
            elif (
                on_silence is not None
                and self.silence_timeout
                and leg.silence_watching
                and not leg.silent
                and now - leg.silence_progress_at >= self.silence_timeout
            ):
                leg.silent = True
                try:
                    on_silence(leg.name)
                except Exception:
                    log.exception("on_silence callback failed for leg %s", leg.name)
        if on_idle is not None and self._idle(now):
            self._idle_reported = True
            try:
                on_idle()
            except Exception:
                log.exception("on_idle callback failed")

    # -- source checks (the slow path: first packet of a source, or a foreign one) -----

    def _admit(self, channel: _Channel, addr: Address) -> bool:
        """Decide on a packet from `addr`, which is not `channel`'s latched source:
        latch it and return True, or count it as foreign and return False."""
        sdp = channel.sdp_address
        host = addr[0]
        if sdp is not None and host == sdp[0] and addr[1] == sdp[1]:
            channel.latch(addr)
            return True
        if (
            channel.source is None
            and host == channel.nat_host
            and self.clock() < channel.learn_until
        ):
            channel.latch(addr)
            return True
        channel.foreign += 1
        channel.dropped += 1
        self._foreign_dropped(channel, addr)
        return False

    def _foreign_dropped(self, channel: _Channel, addr: Address) -> None:
        """Log foreign packets at most once per `_FOREIGN_LOG_INTERVAL` per session."""
        now = self.clock()
        total = self.foreign_packets
        since = self._foreign_report.due(now, total)
        if since is None:
            return
        log.warning(
            "%s: dropped %d packet(s) from unexpected sources (%d since the last report); "
            "latest on leg %s %s from %s, which accepts %s",
            self._name(),
            total,
            since,
            channel.leg.name,
            channel.kind,
            _show_address(addr),
            _accepted(channel, now),
        )

    def _srtp_failed(self, channel: _Channel) -> None:
        """Count a packet that failed SRTP; log at most once per `_SRTP_LOG_INTERVAL`."""
        channel.srtp_failed += 1
        channel.dropped += 1
        total = self.srtp_failures
        since = self._srtp_report.due(self.clock(), total)
        if since is None:
            return
        log.warning(
            "%s: dropped %d SRTP packet(s) that failed authentication or the replay check "
            "(%d since the last report); latest on leg %s %s",
            self._name(),
            total,
            since,
            channel.leg.name,
            channel.kind,
        )

    def _name(self) -> str:
        if self.label is not None:
            return self.label
        ports = "/".join(str(leg.rtp.port) for leg in self._legs.values())
        return f"media session {self.host} ports {ports}"
