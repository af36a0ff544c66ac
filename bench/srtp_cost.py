"""SRTP cost per packet: libsrtp alone, and the relay's hot path with and without SRTP.

What it times, each over `--packets` G.711 packets (20 ms, 172 bytes of RTP), best of
`--repeat` runs:

* libsrtp (pylibsrtp) alone: `protect` and `unprotect` of one packet, for each suite
  callrec has (AEAD_AES_256_GCM, AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80 and _32);
* the relay: `datagram_received` of a real `media.relay.MediaSession` for a latched
  source, forwarding to a sink transport (no system call, so what remains is the
  Python path callrec runs per packet), for plain to plain, SRTP in (decrypt) to plain,
  plain to SRTP out (encrypt), and SRTP to SRTP (both legs SRTP);
* one `sendto` on loopback, the system call left out of the relay rows, for scale.

Then the CPU that a call-minute costs in the relay on that path: a call carries 50
packets/s each way, 6000 packets a minute through the relay.

Run from the repository root (no network, no root):
    python -m bench.srtp_cost [--packets 20000] [--repeat 5]

`--call-minutes N` measures instead the whole recorded call as a media worker runs it,
in process CPU seconds per call-minute (`time.process_time`, so other load on the
machine counts little): N minutes of a two-leg call, both legs sending 20 ms packets of
speech-like audio in one codec (G.711 A-law, G.722, Opus 32 kbit/s), each packet
through `datagram_received` of a real `MediaSession` (source check, SRTP decrypt, the
forward with SRTP encrypt for the far leg, whose `sendto` is a sink) and its tap, a
`media.recorder.Recorder` ticked every 250 ms of call time that decodes, mixes to stereo
and writes a WAV to a temporary folder. Plain RTP on both legs against SRTP on both legs
(each leg with its own keys, AES_CM_128_HMAC_SHA1_80 and AEAD_AES_256_GCM). Call time is
a fake wall clock (the relay's `wall_clock`, replaced for the run) advancing 10 ms per
packet, so the recorder sees a call in real time. Not counted: the system calls
(`recvfrom`, `sendto`), the event loop, the fsync thread, the senders' encryption.
    python -m bench.srtp_cost --call-minutes 2 [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylibsrtp

import media.relay
from bench.codec_cost import call_frames
from media.ports import PortAllocator
from media.recorder import Recorder
from media.relay import MediaSession, _RtpProtocol
from media.srtp import KEY_LENGTHS, SUITE_PROFILES, SrtpKey
from media.writer import RecordingWriter
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
    key = secrets.token_bytes(KEY_LENGTHS[suite])
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
    for suite in SUITE_PROFILES:
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


class _FakeWallClock:
    """The relay's `wall_clock` during a recorded-call run: call time, set per packet."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def recorded_call_cpu(
    codec: str, pt: int, frames: list[bytes], file_rate: int, suite: str | None
) -> float:
    """Process CPU seconds for one recorded call of `frames` per leg (see the module
    docstring), SRTP on both legs under `suite`, or plain RTP when None."""
    step = {"PCMA": 160, "G722": 160, "OPUS": 960}[codec]
    start = 1_700_000_000.0
    clock = _FakeWallClock(start)
    first = free_port(even=True, span=4)
    with tempfile.TemporaryDirectory() as folder:
        writer = RecordingWriter(Path(folder) / "call.wav", 2, "wav", samplerate=file_rate)
        recorder = Recorder(
            writer, start_time=start, codecs={"a": {pt: codec}, "b": {pt: codec}}, label="bench"
        )
        relay = await MediaSession.create(
            PortAllocator(first, first + 3), "127.0.0.1", silence_timeout=None, tap=recorder
        )
        real_clock = media.relay.wall_clock
        try:
            relay.set_remote("a", *PEER_A)
            relay.set_remote("b", *PEER_B)
            legs = relay._legs  # the bench drives the internals, as relay_cost does
            sink = _Sink()
            for name, peer in (("a", PEER_A), ("b", PEER_B)):
                legs[name].rtp.transport = sink  # type: ignore[assignment]
                legs[name].rtp.latch(peer)
            arriving: dict[str, list[bytes]] = {}
            for name, ssrc in (("a", 0x1111), ("b", 0x2222)):
                plain = [
                    struct.pack("!BBHII", 0x80, pt, n & 0xFFFF, n * step, ssrc) + payload
                    for n, payload in enumerate(frames)
                ]
                if suite is None:
                    arriving[name] = plain
                    continue
                phone_key = secrets.token_bytes(KEY_LENGTHS[suite])
                relay.set_srtp(
                    name,
                    SrtpKey(suite, phone_key),
                    SrtpKey(suite, secrets.token_bytes(KEY_LENGTHS[suite])),
                )
                sender = session(suite, phone_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
                arriving[name] = [sender.protect(packet) for packet in plain]
            receive_a = _RtpProtocol(relay, legs["a"].rtp).datagram_received
            receive_b = _RtpProtocol(relay, legs["b"].rtp).datagram_received
            media.relay.wall_clock = clock  # type: ignore[assignment]
            next_tick = start + 0.25
            began = time.process_time()
            for index in range(len(frames)):
                clock.now = start + (index + 1) * 0.02
                receive_a(arriving["a"][index], PEER_A)
                clock.now += 0.01
                receive_b(arriving["b"][index], PEER_B)
                if clock.now >= next_tick:
                    recorder.tick(clock.now)
                    next_tick += 0.25
            recorder.close(clock.now + 0.02)
            spent = time.process_time() - began
        finally:
            media.relay.wall_clock = real_clock
            relay.close()
        assert sink.sent == 2 * len(frames), (sink.sent, len(frames))
        assert relay.stats("a").srtp_failed == 0 and relay.stats("b").srtp_failed == 0
        assert (Path(folder) / "call.wav").stat().st_size > len(frames) * 0.02 * file_rate * 4 * 0.9
        return spent


async def call_minutes_async(minutes: float, repeat: int) -> None:
    codecs = call_frames(minutes * 60)
    suites: list[tuple[str, str | None]] = [
        ("plain RTP", None),
        ("SRTP AES_CM_128_HMAC_SHA1_80", SUITE_80),
        ("SRTP AEAD_AES_256_GCM", "AEAD_AES_256_GCM"),
    ]
    # One run per codec first, not counted (the first call in a codec pays for warming
    # its decoder's memory). Then round robin over the cells, `repeat` times, the
    # columns in a rotating order: load that comes and goes on a shared machine touches
    # every cell alike. The best run of each cell is kept.
    for _, codec, pt, frames, rate in codecs:
        await recorded_call_cpu(codec, pt, frames[: len(frames) // 4], rate, None)
    runs: dict[tuple[int, int], list[float]] = {}
    for round_number in range(repeat):
        for row, (_, codec, pt, frames, rate) in enumerate(codecs):
            for shift in range(len(suites)):
                column = (round_number + shift) % len(suites)
                spent = await recorded_call_cpu(codec, pt, frames, rate, suites[column][1])
                runs.setdefault((row, column), []).append(spent / minutes)
    print(f"recorded call, both legs, {minutes:g} min, {repeat} runs: CPU s per call-minute")
    print()
    print("| codec (file rate) | " + " | ".join(label for label, _ in suites) + " |")
    print("|---|" + "---|" * len(suites))
    baseline = min(runs[0, 0])
    for row, (label, *_) in enumerate(codecs):
        cells = []
        for column in range(len(suites)):
            best, median = min(runs[row, column]), statistics.median(runs[row, column])
            cells.append(f"{best:.3f} / {median:.3f} (x{best / baseline:.1f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("(best / median of the runs; xN: best against the best of plain G.711)")
    print()
    print(
        "| SRTP on both legs adds, CPU s per call-minute (best minus best) | "
        + " | ".join(label for label, _ in suites[1:])
        + " |"
    )
    print("|---|" + "---|" * (len(suites) - 1))
    for row, (label, *_) in enumerate(codecs):
        plain = min(runs[row, 0])
        deltas = [min(runs[row, column]) - plain for column in range(1, len(suites))]
        print(f"| {label} | " + " | ".join(f"{delta:+.3f}" for delta in deltas) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.srtp_cost")
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--call-minutes", type=float, help="recorded-call CPU per call-minute")
    args = parser.parse_args(argv)
    if args.call_minutes:
        asyncio.run(call_minutes_async(args.call_minutes, args.repeat))
        return 0
    asyncio.run(main_async(args.packets, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
