"""Count the UDP (RTP) packets that arrive on a network interface, per port.

SIPp's statistics (``-trace_stat``, the screens) count SIP messages only: nothing in
SIPp 3.6 counts RTP packets, neither those it plays from a pcap nor those its
``-rtp_echo`` receives. To measure "RTP packets sent against packets arriving at the far
end", this module sniffs the loopback interface with a Linux ``AF_PACKET`` socket (root
only; tests and CI run as root) and counts UDP datagrams by destination port, and by
source port, within the window between :meth:`RtpCounter.start` and
:meth:`RtpCounter.stop`.

What it counts is what the kernel delivered to the interface (after the sender's socket
buffer, before the receiver's): a packet dropped by a full receive buffer of the far end
still counts. To prove that an application consumed its packets, count what it sends
back: SIPp's ``-rtp_echo`` returns each packet it reads from its media port, so the
echoes seen with that port as *source* are packets SIPp really received.

Example::

    with RtpCounter(range(26000, 26002)) as counter:
        ...  # run the call
    arrived = counter.destination_counts[26000]
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
# Linux >= 4.20: do not hand us the outgoing copy of each packet, which on `lo` would
# otherwise be seen twice (once leaving, once arriving).
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
IPPROTO_UDP = 17
ETHERNET_HEADER_LENGTH = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD


class RtpCounterError(RuntimeError):
    """The sniffer could not start (not root, no such interface, not Linux)."""


def udp_ports(frame: bytes) -> tuple[int, int] | None:
    """(source port, destination port) of an Ethernet frame carrying UDP, else None."""
    datagram = udp_datagram(frame)
    return None if datagram is None else (datagram[0], datagram[1])


def udp_datagram(frame: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an Ethernet frame carrying UDP.

    Loopback frames carry a zeroed Ethernet header. IPv4 options are honoured; IPv6
    extension headers and IPv4 fragments after the first are not followed (RTP never
    uses them on loopback).
    """
    if len(frame) < ETHERNET_HEADER_LENGTH + 20:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    ip = ETHERNET_HEADER_LENGTH
    if ethertype == ETHERTYPE_IPV4 and frame[ip] >> 4 == 4:
        if frame[ip + 9] != IPPROTO_UDP:
            return None
        (flags_fragment,) = struct.unpack_from("!H", frame, ip + 6)
        if flags_fragment & 0x1FFF:
            return None
        udp = ip + (frame[ip] & 0x0F) * 4
    elif ethertype == ETHERTYPE_IPV6 and frame[ip] >> 4 == 6:
        if frame[ip + 6] != IPPROTO_UDP:
            return None
        udp = ip + 40
    else:
        return None
    if len(frame) < udp + 8:
        return None
    source, destination, length = struct.unpack_from("!HHH", frame, udp)
    return source, destination, frame[udp + 8 : udp + max(length, 8)]


class RtpCounter:
    """Counts UDP packets to and from a port range on one interface, in a thread.

    ``start()`` returns once the socket is listening, so nothing sent after it is
    missed. ``stop()`` drains what the kernel already queued and returns the counts by
    destination port. The thread ends by itself after ``max_seconds`` in any case.
    """

    def __init__(
        self,
        ports: range,
        *,
        interface: str = "lo",
        max_seconds: float = 600.0,
        receive_buffer_bytes: int = 16 * 1024 * 1024,
        keep_payloads: bool = False,
    ) -> None:
        self.ports = ports
        self.interface = interface
        self.max_seconds = max_seconds
        self.receive_buffer_bytes = receive_buffer_bytes
        self.keep_payloads = keep_payloads
        # With keep_payloads: the UDP payloads sent to each port of the range, in order.
        self.payloads: dict[int, list[bytes]] = {}
        self.destination_counts: dict[int, int] = {}
        self.source_counts: dict[int, int] = {}
        self.kernel_drops = 0
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> RtpCounter:
        """Open the raw socket on the interface and start counting."""
        if self._socket is not None:
            raise RtpCounterError("RtpCounter already started")
        try:
            sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as error:
            message = f"an AF_PACKET socket needs root (or CAP_NET_RAW): {error}"
            raise RtpCounterError(message) from error
        except (AttributeError, OSError) as error:
            raise RtpCounterError(f"cannot open an AF_PACKET socket: {error}") from error
        try:
            sniffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            # An older kernel refuses it: outgoing copies are then dropped in _count.
            with contextlib.suppress(OSError):
                sniffer.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sniffer.bind((self.interface, ETH_P_ALL))
        except OSError as error:
            sniffer.close()
            raise RtpCounterError(f"cannot listen on {self.interface!r}: {error}") from error
        sniffer.settimeout(0.05)
        self._socket = sniffer
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rtp-counter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[int, int]:
        """Stop counting; the packet count per destination port (ports seen only)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        return dict(self.destination_counts)

    @property
    def total_to_ports(self) -> int:
        """Packets whose destination port is in the range."""
        return sum(self.destination_counts.values())

    @property
    def total_from_ports(self) -> int:
        """Packets whose source port is in the range."""
        return sum(self.source_counts.values())

    def __enter__(self) -> RtpCounter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        sniffer = self._socket
        assert sniffer is not None
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    frame, address = sniffer.recvfrom(65535)
                except TimeoutError:
                    continue
                self._count(frame, address)
            # What the kernel queued before stop() belongs to the window: drain it.
            sniffer.setblocking(False)
            while True:
                try:
                    frame, address = sniffer.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                self._count(frame, address)
            statistics = sniffer.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            _packets, self.kernel_drops = struct.unpack("II", statistics)
        finally:
            self.stopped_at = time.monotonic()
            sniffer.close()
            self._socket = None

    def _count(self, frame: bytes, address: tuple[object, ...]) -> None:
        if len(address) > 2 and address[2] == PACKET_OUTGOING:
            return
        datagram = udp_datagram(frame)
        if datagram is None:
            return
        source, destination, payload = datagram
        if destination in self.ports:
            self.destination_counts[destination] = self.destination_counts.get(destination, 0) + 1
            if self.keep_payloads:
                self.payloads.setdefault(destination, []).append(payload)
        if source in self.ports:
            self.source_counts[source] = self.source_counts.get(source, 0) + 1


def count_pcap_rtp_packets(path: str) -> int:
    """Number of UDP packets in a classic libpcap file (as SIPp's pcaps are)."""
    with open(path, "rb") as pcap:
        data = pcap.read()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a libpcap file (magic {magic.hex()})")
    (link_type,) = struct.unpack_from(endian + "I", data, 20)
    if link_type != 1:
        raise ValueError(f"{path}: link type {link_type}, only Ethernet (1) is read")
    count = 0
    offset = 24
    while offset + 16 <= len(data):
        _seconds, _micros, captured, _original = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        if udp_ports(data[offset : offset + captured]) is not None:
            count += 1
        offset += captured
    return count
