"""SRTP cost per packet: libsrtp alone, and the relay's hot path with and without SRTP.

What it times, each over `--packets` G.711 packets (20 ms, 172 bytes of RTP), best of
`--repeat` runs:

* libsrtp (pylibsrtp) alone: `protect` and `unprotect` of one packet, for
  AES_CM_128_HMAC_SHA1_80 and _32;
* the relay: `datagram_received` of a real `media.relay.MediaSession` for a latched
  source, forwarding to a sink transport (no system call, so what remains is the
  Python path callrec runs per packet), for plain to plain, SRTP in (decrypt) to plain,
  plain to SRTP out (encrypt), and SRTP to SRTP (both legs SRTP);
* one `sendto` on loopback, the system call left out of the relay rows, for scale.

Then the CPU that a call-minute costs in the relay on that path: a call carries 50
packets/s each way, 6000 packets a minute through the relay.

Run from the repository root (no network, no root):
    python -m bench.srtp_cost [--packets 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

from media.ports import PortAllocator
from media.relay import MediaSession, _RtpProtocol
from media.srtp import SUITE_PROFILES, SrtpKey
from testkit.sipp_runner import free_port

PACKETS_PER_CALL_MINUTE = 2 * 50 * 60
SUITE_80, SUITE_32 = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"
PEER_A, PEER_B = ("127.0.0.1", 41000), ("127.0.0.1", 41002)


def rtp(sequence: int, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, ssrc) + bytes(160)


def session(suite: str, key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=SUITE_PROFILES[suite])
    return pylibsrtp.Session(policy)


def best_us(run: Callable[[], None], packets: int, repeat: int) -> float:
    """Best of `repeat` timings of `run` (which handles `packets` packets), µs/packet."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / packets * 1e6


def sendto_cost(packets: int, repeat: int) -> float:
    """µs per `sendto` of one RTP packet on loopback: the system call the relay makes
    for every packet it forwards, which the relay rows leave out."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        address = receiver.getsockname()
        packet = rtp(1)

        def send() -> None:
            for _ in range(packets):
                sender.sendto(packet, address)

        return best_us(send, packets, repeat)
    finally:
        sender.close()
        receiver.close()


def libsrtp_costs(suite: str, packets: int, repeat: int) -> tuple[float, float]:
    """(protect, unprotect) µs per packet with libsrtp alone."""
    key = secrets.token_bytes(30)
    plain = [rtp(n) for n in range(packets)]
    protected: list[bytes] = []

    def protect() -> None:
        sender = session(suite, key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        protected[:] = [sender.protect(packet) for packet in plain]

    def unprotect() -> None:
        receiver = session(suite, key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        for packet in protected:
            receiver.unprotect(packet)

    protect_us = best_us(protect, packets, repeat)
    return protect_us, best_us(unprotect, packets, repeat)


class _Sink:
    """A datagram transport that only counts (the cost of `sendto` itself is left out)."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, address: Any = None) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


async def relay_cost(srtp_in: bool, srtp_out: bool, packets: int, repeat: int) -> float:
    """µs per packet through `datagram_received`, leg a to leg b."""
    first = free_port(even=True, span=4)
    relay = await MediaSession.create(
        PortAllocator(first, first + 3), "127.0.0.1", silence_timeout=None
    )
    try:
        relay.set_remote("a", *PEER_A)
        relay.set_remote("b", *PEER_B)
        phone_key, callrec_key = secrets.token_bytes(30), secrets.token_bytes(30)
        if srtp_in:
            relay.set_srtp("a", SrtpKey(SUITE_80, phone_key), SrtpKey(SUITE_80, callrec_key))
        if srtp_out:
            relay.set_srtp("b", SrtpKey(SUITE_80, phone_key), SrtpKey(SUITE_80, callrec_key))
        leg_a, leg_b = relay._legs["a"], relay._legs["b"]  # the bench drives the internals
        real = leg_a.rtp.transport, leg_b.rtp.transport
        sink = _Sink()
        for channel in (leg_a.rtp, leg_b.rtp):
            channel.transport = sink  # type: ignore[assignment]
        leg_a.rtp.latch(PEER_A)
        leg_b.rtp.latch(PEER_B)
        protocol = _RtpProtocol(relay, leg_a.rtp)
        base = 0
        best = float("inf")
        for _ in range(repeat):
            plain = [rtp(base + n) for n in range(packets)]
            base += packets
            if srtp_in:
                sender = session(SUITE_80, phone_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
                arriving = [sender.protect(packet) for packet in plain]
            else:
                arriving = plain
            receive = protocol.datagram_received
            started = time.perf_counter()
            for packet in arriving:
                receive(packet, PEER_A)
            best = min(best, time.perf_counter() - started)
            # A new sender session per run restarts its index: so must the relay's.
            if srtp_in:
                relay.set_srtp("a", None, None)
                relay.set_srtp("a", SrtpKey(SUITE_80, phone_key), SrtpKey(SUITE_80, callrec_key))
        assert relay.stats("a").srtp_failed == 0 and sink.sent == packets * repeat
        leg_a.rtp.transport, leg_b.rtp.transport = real
        return best / packets * 1e6
    finally:
        relay.close()


async def main_async(packets: int, repeat: int) -> None:
    print(f"{packets} packets of 172 bytes (G.711, 20 ms), best of {repeat}")
    print()
    print("| per packet | µs |")
    print("|---|---|")
    for suite in (SUITE_80, SUITE_32):
        protect_us, unprotect_us = libsrtp_costs(suite, packets, repeat)
        for name, cost in (("protect", protect_us), ("unprotect", unprotect_us)):
            print(f"| libsrtp {name}, {suite} | {cost:.2f} |")
    costs: dict[tuple[bool, bool], float] = {}
    for label, srtp_in, srtp_out in (
        ("relay plain -> plain", False, False),
        ("relay SRTP -> plain (decrypt)", True, False),
        ("relay plain -> SRTP (encrypt)", False, True),
        ("relay SRTP -> SRTP (decrypt + encrypt)", True, True),
    ):
        costs[srtp_in, srtp_out] = await relay_cost(srtp_in, srtp_out, packets, repeat)
        print(f"| {label} | {costs[srtp_in, srtp_out]:.2f} |")
    print(f"| sendto on loopback (not in the relay rows) | {sendto_cost(packets, repeat):.2f} |")
    half = PACKETS_PER_CALL_MINUTE // 2
    plain = costs[False, False] * PACKETS_PER_CALL_MINUTE / 1e6
    one_leg = (costs[True, False] + costs[False, True]) * half / 1e6
    both = costs[True, True] * PACKETS_PER_CALL_MINUTE / 1e6
    print()
    print(f"| relay CPU per call-minute ({PACKETS_PER_CALL_MINUTE} packets) | CPU ms | vs plain |")
    print("|---|---|---|")
    for label, value in (
        ("plain RTP both legs", plain),
        ("SRTP on the phone leg, plain trunk", one_leg),
        ("SRTP on both legs", both),
    ):
        print(f"| {label} | {value * 1000:.1f} | x{value / plain:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.srtp_cost")
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.packets, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
