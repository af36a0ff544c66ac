"""Recording fidelity bench: known audio through a real `callrec serve`, impaired on the way.

Each condition is one call from a scripted phone (201, mode `always`) to a scripted trunk,
both in this process: a minimal SIP UAC/UAS over UDP (b2bua.message for the messages,
b2bua.digest for the 407) and an RTP sender per party sending G.711 µ-law band-limited
noise (a different noise for each party), 20 ms per packet, on a steady clock. Each RTP
stream goes sender -> impairment proxy -> callrec's relay port (the port in callrec's
SDP); callrec latches the proxy's address. The proxy drops packets (`loss`), delays each
one by a random 0..`jitter` ms, and with `reorder` also holds 5% of the packets 25-45 ms
so that they arrive after their successors; without `reorder`, jittered packets keep
their order (a FIFO with variable delay).

The truth: the recorder's contract puts each packet's last sample at the instant it was
captured, i.e. sent on an ideal network. The sender keeps a steady 20 ms clock, so sample
`s` of the source was "spoken" at `clock_start + s / 8000`; anything later (the sender's
own scheduling, the proxy, callrec's event loop) is network delay. The reference is the
G.711 round trip of the source (what a perfect recorder writes) on that clock, against
the file's clock (its first sample is the recorder's start, `recordings.started_at` in
the store, read-only). The file is stereo, so each party is measured alone, and the table
shows the worse of the two legs:

* lag, whole call: the file against the reference by cross-correlation (+: file late);
* packet offset: where each packet that is in the file (found within 60 ms, error under
  1% of its energy) sits against its true place: median, worst, and the share > 20 ms;
* samples recovered: the share of the source samples (every sample of every packet sent
  inside the call, lost ones included) found sample for sample within 20 ms of their
  place; 5% loss caps it near 95%. A stream re-anchored a few samples earlier (a less
  delayed packet arrived) loses those few samples at the seam;
* SNR vs G.711, per packet: each packet at its best place within 60 ms, lost packets
  counting as errors ("exact": identical to the G.711 round trip);
* SNR vs G.711, one lag: the whole call at the single best lag. The source is noise up to
  3.4 kHz, which decorrelates within one sample, so every sub-millisecond re-anchoring
  shows here: it measures sample-exact continuity, not audible quality.

Run from the repository root (loopback only, no root needed):
    python -m bench.fidelity [--seconds 8] [--parallel 6] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import soundfile as sf

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import (
    Headers,
    SipRequest,
    SipResponse,
    generate_branch,
    generate_call_id,
    generate_tag,
    make_response,
    parse_message,
)
from b2bua.sdp import parse_sdp
from media import g711
from testkit.audio import lag_between
from testkit.harness import HOST, CallrecServer, make_server

RATE = 8000
PACKET_SAMPLES = 160
PACKET_S = PACKET_SAMPLES / RATE
PAYLOAD_TYPE = 0  # PCMU
REORDER_PROBABILITY = 0.05
REORDER_HOLD_S = (0.025, 0.045)
# A sample counts as recovered if it is in the file within 20 ms of its true place;
# packets are looked for within 60 ms to measure how far off the others are.
RECOVERED_WITHIN = 160
SEARCH_SAMPLES = 480
PASSWORD = "bench-201"
SIP_TIMEOUT_S = 5.0

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Condition:
    """One network impairment, applied to both parties' RTP towards callrec."""

    loss: float
    jitter_ms: float
    reorder: bool

    @property
    def label(self) -> str:
        return (
            f"{100 * self.loss:g}% loss, {self.jitter_ms:g} ms jitter, "
            f"reorder {'on' if self.reorder else 'off'}"
        )


def all_conditions(quick: bool) -> list[Condition]:
    if quick:
        return [
            Condition(0.0, 0.0, False),
            Condition(0.01, 20.0, True),
            Condition(0.05, 60.0, True),
        ]
    return [
        Condition(loss, jitter, reorder)
        for loss in (0.0, 0.01, 0.05)
        for jitter in (0.0, 20.0, 60.0)
        for reorder in (False, True)
    ]


# ---------------------------------------------------------------------------- media
def band_limited_noise(seconds: float, seed: int) -> Int16Array:
    """300-3400 Hz Gaussian noise at about -14 dBFS: a sharp, unambiguous correlation."""
    rng = np.random.default_rng(seed)
    size = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequencies = np.fft.rfftfreq(size, 1 / RATE)
    spectrum[(frequencies < 300) | (frequencies > 3400)] = 0
    noise = np.fft.irfft(spectrum, size)
    noise *= 0.2 * 32767 / np.sqrt(np.mean(noise**2))
    return np.clip(noise, -32768, 32767).astype(np.int16)


class ImpairmentProxy(asyncio.DatagramProtocol):
    """Forwards datagrams to `target` with loss, jitter and reordering; drops the return."""

    def __init__(self, condition: Condition, rng: random.Random) -> None:
        self.condition = condition
        self.rng = rng
        self.target: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.last_departure = 0.0
        self.forwarded = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.target is None or addr == self.target or self.transport is None:
            return  # callrec's RTP back to the party is not measured
        if self.rng.random() < self.condition.loss:
            self.dropped += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        departure = now + self.rng.uniform(0.0, self.condition.jitter_ms / 1000)
        if self.condition.reorder:
            if self.rng.random() < REORDER_PROBABILITY:
                departure += self.rng.uniform(*REORDER_HOLD_S)
        else:
            departure = max(departure, self.last_departure)
            self.last_departure = departure
        loop.call_at(departure, self._send, data)

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and self.target is not None:
            transport.sendto(data, self.target)
            self.forwarded += 1


@dataclass
class RtpStream:
    """What one party sent: the source audio, on the sender's clock.

    Sample `s` of `source` was "spoken" at wall time `clock_start + s / RATE`; packet `k`
    (samples k*160 to (k+1)*160) is due once they are all spoken. The sender's own
    scheduling delays count as network delay, like the proxy's.
    """

    source: Int16Array
    clock_start: float = 0.0
    packets: int = 0


class Party:
    """One party's media: an RTP socket, the proxy in front of callrec, the sender."""

    def __init__(self, condition: Condition, seed: int, seconds: float) -> None:
        self.condition = condition
        self.rng = random.Random(seed)
        self.stream = RtpStream(band_limited_noise(seconds + 2.0, seed))
        self.rtp: asyncio.DatagramTransport | None = None
        self.proxy: ImpairmentProxy | None = None
        self.proxy_transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> int:
        """Bind the party's RTP socket and its proxy; the RTP port for the SDP."""
        loop = asyncio.get_running_loop()
        self.rtp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0)
        )
        proxy = ImpairmentProxy(self.condition, self.rng)
        self.proxy_transport, _ = await loop.create_datagram_endpoint(
            lambda: proxy, local_addr=(HOST, 0)
        )
        self.proxy = proxy
        return int(self.rtp.get_extra_info("sockname")[1])

    def start(self, callrec_port: int, seconds: float) -> None:
        assert self.proxy is not None and self.proxy_transport is not None
        self.proxy.target = (HOST, callrec_port)
        proxy_port = int(self.proxy_transport.get_extra_info("sockname")[1])
        self._task = asyncio.get_running_loop().create_task(self._send(proxy_port, seconds))

    async def _send(self, proxy_port: int, seconds: float) -> None:
        assert self.rtp is not None
        encoded = g711.encode("PCMU", self.stream.source).tobytes()
        ssrc = secrets.randbits(32)
        count = min(int(seconds / PACKET_S), len(encoded) // PACKET_SAMPLES)
        sequence0 = secrets.randbits(16)
        timestamp0 = secrets.randbits(32)
        start = time.monotonic()
        self.stream.clock_start = time.time()
        for index in range(count):
            # A phone sends a packet once its 20 ms of audio are captured.
            due = start + (index + 1) * PACKET_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            header = struct.pack(
                "!BBHII",
                0x80,
                PAYLOAD_TYPE | (0x80 if index == 0 else 0),
                (sequence0 + index) & 0xFFFF,
                (timestamp0 + index * PACKET_SAMPLES) & 0xFFFFFFFF,
                ssrc,
            )
            payload = encoded[index * PACKET_SAMPLES : (index + 1) * PACKET_SAMPLES]
            if self.rtp.is_closing():
                return
            self.rtp.sendto(header + payload, (HOST, proxy_port))
            self.stream.packets += 1

    async def finish(self) -> None:
        if self._task is not None:
            await self._task

    def close(self) -> None:
        for transport in (self.rtp, self.proxy_transport):
            if transport is not None:
                transport.close()


# ---------------------------------------------------------------------------- SIP
def sdp_offer(port: int) -> bytes:
    return (
        f"v=0\r\no=bench 1 1 IN IP4 {HOST}\r\ns=fidelity\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def audio_port(body: bytes) -> int:
    for media in parse_sdp(body).media:
        if media.kind == "audio" and media.port:
            return media.port
    raise RuntimeError(f"no audio port in SDP: {body!r}")


class SipSocket(asyncio.DatagramProtocol):
    """A UDP SIP endpoint whose parsed messages wait in a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[SipRequest | SipResponse, tuple[str, int]]] = (
            asyncio.Queue()
        )
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        with contextlib.suppress(ValueError):
            self.queue.put_nowait((parse_message(data), (str(addr[0]), int(addr[1]))))

    def send(self, message: SipRequest | SipResponse, peer: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(message.to_bytes(), peer)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


class Phone:
    """A scripted UAC: INVITE (answering the 407), ACK, audio for `seconds`, BYE."""

    def __init__(self, server: CallrecServer, callee: str, party: Party) -> None:
        self.server = server
        self.callee = callee
        self.party = party
        self.proxy_peer = (HOST, server.sip_port)
        self.call_id = generate_call_id()
        self.tag = generate_tag()
        self.uri = f"sip:{callee}@{HOST}:{server.sip_port}"

    def _request(
        self, sip: SipSocket, method: str, uri: str, cseq: int, to: str, branch: str
    ) -> SipRequest:
        headers = Headers(
            [
                ("Via", f"SIP/2.0/UDP {HOST}:{sip.port};branch={branch};rport"),
                ("From", f"<sip:201@{HOST}>;tag={self.tag}"),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:201@{HOST}:{sip.port}>"),
                ("Max-Forwards", "70"),
            ]
        )
        return SipRequest(method, uri, headers)

    async def _final(self, sip: SipSocket, request: SipRequest) -> SipResponse:
        """Send `request` (retransmitted on T1 doubling) and return its final response."""
        deadline = time.monotonic() + SIP_TIMEOUT_S
        interval = 0.5
        sip.send(request, self.proxy_peer)
        while time.monotonic() < deadline:
            try:
                message, _ = await asyncio.wait_for(sip.queue.get(), interval)
            except TimeoutError:
                sip.send(request, self.proxy_peer)
                interval = min(interval * 2, 4.0)
                continue
            if (
                isinstance(message, SipResponse)
                and message.status >= 200
                and message.headers.get("CSeq") == request.headers.get("CSeq")
            ):
                return message
        raise RuntimeError(f"no final response to {request.method} {request.uri}")

    async def call(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        sip = SipSocket()
        transport, _ = await loop.create_datagram_endpoint(lambda: sip, local_addr=(HOST, 0))
        try:
            rtp_port = await self.party.open()
            to = f"<{self.uri}>"
            invite = self._request(sip, "INVITE", self.uri, 1, to, generate_branch())
            invite.headers.set("Content-Type", "application/sdp")
            invite.body = sdp_offer(rtp_port)
            answer = await self._final(sip, invite)
            if answer.status in (401, 407):
                sip.send(self._ack(sip, invite, answer), self.proxy_peer)
                header = "Proxy-Authenticate" if answer.status == 407 else "WWW-Authenticate"
                challenge = preferred_challenge(answer.headers.get_all(header))
                invite = self._request(sip, "INVITE", self.uri, 2, to, generate_branch())
                invite.headers.set("Content-Type", "application/sdp")
                invite.body = sdp_offer(rtp_port)
                authorization = build_authorization(
                    challenge, "INVITE", self.uri, "201", PASSWORD, invite.body
                )
                name = "Proxy-Authorization" if answer.status == 407 else "Authorization"
                invite.headers.set(name, authorization)
                answer = await self._final(sip, invite)
            if answer.status != 200:
                raise RuntimeError(f"call {self.callee}: {answer.status} {answer.reason}")
            to = answer.headers.get("To") or to
            target = self._remote_target(answer)
            ack = self._request(sip, "ACK", target, self._cseq(invite), to, generate_branch())
            sip.send(ack, self.proxy_peer)
            self.party.start(audio_port(answer.body), seconds)
            await self.party.finish()
            bye = self._request(sip, "BYE", target, self._cseq(invite) + 1, to, generate_branch())
            ended = await self._final(sip, bye)
            if ended.status != 200:
                raise RuntimeError(f"BYE {self.callee}: {ended.status}")
        finally:
            transport.close()
            self.party.close()

    @staticmethod
    def _cseq(request: SipRequest) -> int:
        return int((request.headers.get("CSeq") or "1").split()[0])

    @staticmethod
    def _remote_target(response: SipResponse) -> str:
        contact = response.headers.get("Contact") or ""
        if "<" in contact:
            return contact.split("<", 1)[1].split(">", 1)[0]
        return contact.split(";", 1)[0].strip()

    def _ack(self, sip: SipSocket, invite: SipRequest, response: SipResponse) -> SipRequest:
        """ACK of a non-2xx final response: the INVITE's branch and CSeq number."""
        via = invite.headers.get("Via") or ""
        branch = via.split("branch=", 1)[1].split(";", 1)[0]
        to = response.headers.get("To") or ""
        return self._request(sip, "ACK", invite.uri, self._cseq(invite), to, branch)


class Trunk(asyncio.DatagramProtocol):
    """A scripted UAS on the trunk port: answers each INVITE with its party's audio."""

    def __init__(self, parties: dict[str, Party], seconds: float) -> None:
        self.parties = parties
        self.seconds = seconds
        self.transport: asyncio.DatagramTransport | None = None
        self.answers: dict[str, SipResponse] = {}
        self.errors: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            message = parse_message(data)
        except ValueError:
            return
        if isinstance(message, SipRequest):
            peer = (str(addr[0]), int(addr[1]))
            asyncio.get_running_loop().create_task(self._handle(message, peer))

    async def _handle(self, request: SipRequest, peer: tuple[str, int]) -> None:
        assert self.transport is not None
        call_id = request.headers.get("Call-ID") or ""
        if request.method == "INVITE":
            answer = self.answers.get(call_id)
            if answer is None:
                callee = request.uri.split(":", 1)[1].split("@", 1)[0]
                party = self.parties.get(callee)
                if party is None:
                    self.transport.sendto(make_response(request, 404).to_bytes(), peer)
                    return
                rtp_port = await party.open()
                answer = make_response(request, 200, to_tag=generate_tag())
                answer.headers.set("Contact", f"<sip:{callee}@{HOST}:{self._port}>")
                answer.headers.set("Content-Type", "application/sdp")
                answer.body = sdp_offer(rtp_port)
                self.answers[call_id] = answer
                party.start(audio_port(request.body), self.seconds)
            self.transport.sendto(answer.to_bytes(), peer)
        elif request.method != "ACK":  # BYE, and anything else in the dialog
            self.transport.sendto(make_response(request, 200).to_bytes(), peer)

    @property
    def _port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


# ---------------------------------------------------------------------------- analysis
@dataclass
class LegScore:
    """Fidelity of one party's channel against what it sent."""

    lag_ms: float  # the whole call, by cross-correlation (+: the file is late)
    median_offset_ms: float  # |offset| of each packet found, from its true place
    worst_offset_ms: float
    beyond_20ms: float  # share of the packets found that sit more than 20 ms off
    recovered: float
    snr_db: float  # each packet at its best place within 20 ms
    fixed_lag_snr_db: float  # the whole call at one lag
    packets_sent: int


@dataclass
class Outcome:
    condition: Condition
    legs: dict[str, LegScore]
    status: str
    length_error_ms: float


def reference_track(stream: RtpStream, start: float, length: int) -> tuple[Int16Array, IntArray]:
    """The G.711 round trip of what was sent, on the file's clock; and each packet's start."""
    round_trip = g711.decode("PCMU", g711.encode("PCMU", stream.source))
    sent = round_trip[: stream.packets * PACKET_SAMPLES]
    first = round((stream.clock_start - start) * RATE)
    track = np.zeros(length, dtype=np.int16)
    lo, hi = max(first, 0), min(first + len(sent), length)
    if lo < hi:
        track[lo:hi] = sent[lo - first : hi - first]
    starts = first + PACKET_SAMPLES * np.arange(stream.packets, dtype=np.int64)
    return track, starts


def score_leg(stream: RtpStream, channel: Int16Array, start: float) -> LegScore:
    length = len(channel)
    reference, packet_starts = reference_track(stream, start, length)
    lag = lag_between(reference, channel, RATE // 4)
    # Every packet sent wholly inside the file (with room to search around it).
    round_trip = g711.decode("PCMU", g711.encode("PCMU", stream.source))
    inside = np.flatnonzero(
        (packet_starts - SEARCH_SAMPLES >= 0)
        & (packet_starts + PACKET_SAMPLES + SEARCH_SAMPLES <= length)
    )
    if not inside.size:
        raise RuntimeError("no packet of the source lies inside the recording")
    columns = np.arange(PACKET_SAMPLES)
    expected = round_trip[inside[:, None] * PACKET_SAMPLES + columns]
    most_matches = np.zeros(inside.size, dtype=np.int64)
    least_error = np.full(inside.size, np.inf)
    offset = np.zeros(inside.size, dtype=np.int64)
    for shift in range(-SEARCH_SAMPLES, SEARCH_SAMPLES + 1):
        found = channel[packet_starts[inside][:, None] + shift + columns]
        if abs(shift) <= RECOVERED_WITHIN:
            most_matches = np.maximum(most_matches, np.sum(found == expected, axis=1))
        error = np.sum((found.astype(np.float64) - expected) ** 2, axis=1)
        better = error < least_error
        offset[better] = shift
        least_error[better] = error[better]
    recovered = float(most_matches.sum()) / (inside.size * PACKET_SAMPLES)
    # Where each packet that is there (a small error) sits against its true place.
    placed = least_error <= 0.01 * np.sum(expected.astype(np.float64) ** 2, axis=1)
    offsets_ms = np.abs(offset[placed]) * 1000 / RATE
    # The whole call at one lag: sub-millisecond moves of the stream count as noise here.
    lo = int(max(0, packet_starts.min() + lag))
    hi = int(min(length, packet_starts.max() + lag + PACKET_SAMPLES))
    shifted = np.zeros(length, dtype=np.int16)
    if lag >= 0:
        shifted[lag:] = reference[: length - lag]
    else:
        shifted[:lag] = reference[-lag:]
    signal = shifted[lo:hi].astype(np.float64)
    error_total = float(np.sum((channel[lo:hi].astype(np.float64) - signal) ** 2))
    return LegScore(
        lag_ms=1000 * lag / RATE,
        median_offset_ms=float(np.median(offsets_ms)) if offsets_ms.size else float("nan"),
        worst_offset_ms=float(offsets_ms.max()) if offsets_ms.size else float("nan"),
        beyond_20ms=float(np.mean(offsets_ms > 20.0)) if offsets_ms.size else float("nan"),
        recovered=recovered,
        snr_db=snr_db(float(np.sum(expected.astype(np.float64) ** 2)), least_error.sum()),
        fixed_lag_snr_db=snr_db(float(np.sum(signal**2)), error_total),
        packets_sent=stream.packets,
    )


def snr_db(signal_energy: float, noise_energy: float) -> float:
    if noise_energy == 0:
        return float("inf")
    return float(10 * np.log10(signal_energy / noise_energy))


def recording_start(server: CallrecServer, row: dict[str, Any]) -> float:
    """The wall-clock instant of the file's first sample.

    `recordings list` shows times to the millisecond (truncated); the store keeps the
    recorder's exact start (`recordings.started_at`), read here without writing.
    """
    database = server.data_dir / "callrec.db"
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        ) as connection:
            found = connection.execute(
                "SELECT started_at FROM recordings WHERE id = ?", (row["id"],)
            ).fetchone()
    except sqlite3.Error:
        found = None
    return float(found[0]) if found else wall_time(row["call"]["answered_at"])


def wall_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------- running
async def run_batch(
    server: CallrecServer, conditions: Sequence[tuple[int, Condition]], seconds: float, seed: int
) -> dict[str, tuple[Condition, Party, Party]]:
    """Place one call per condition at once; return {callee: (condition, phone, trunk)}."""
    calls: dict[str, tuple[Condition, Party, Party]] = {}
    for index, condition in conditions:
        callee = f"3{index:03d}"
        phone_party = Party(condition, seed * 1000 + 2 * index, seconds)
        trunk_party = Party(condition, seed * 1000 + 2 * index + 1, seconds)
        calls[callee] = (condition, phone_party, trunk_party)
    loop = asyncio.get_running_loop()
    trunk = Trunk({callee: parties[2] for callee, parties in calls.items()}, seconds)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: trunk, local_addr=(HOST, server.trunk_port)
    )
    try:
        phones = [Phone(server, callee, parties[1]) for callee, parties in calls.items()]
        budget = seconds + 4 * SIP_TIMEOUT_S
        await asyncio.wait_for(asyncio.gather(*(p.call(seconds) for p in phones)), budget)
        await asyncio.sleep(0.3)  # the trunk answers callrec's BYE
    finally:
        transport.close()
        for _, phone_party, trunk_party in calls.values():
            phone_party.close()
            trunk_party.close()
    return calls


def recordings(server: CallrecServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        server.cli("recordings", "list", "--json", "--limit", "1000").stdout
    )
    return rows


def wait_for_recordings(server: CallrecServer, callees: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 15
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        found = {
            row["call"]["callee"]["extension"]: row
            for row in recordings(server)
            if row["call"]["callee"]["extension"] in callees and row["status"] != "recording"
        }
        if set(found) == callees:
            break
        time.sleep(0.3)
    return found


def score_calls(
    server: CallrecServer, calls: dict[str, tuple[Condition, Party, Party]]
) -> list[Outcome]:
    rows = wait_for_recordings(server, set(calls))
    outcomes: list[Outcome] = []
    for callee, (condition, phone_party, trunk_party) in calls.items():
        row = rows.get(callee)
        if row is None:
            outcomes.append(Outcome(condition, {}, "missing", float("nan")))
            continue
        audio, rate = sf.read(server.data_dir / row["path"], dtype="int16", always_2d=True)
        assert rate == RATE and audio.shape[1] == 2, "the bench records in stereo"
        start = recording_start(server, row)
        call = row["call"]
        media_time = wall_time(call["ended_at"]) - wall_time(call["answered_at"])
        legs = {
            "phone": score_leg(phone_party.stream, audio[:, 0], start),
            "trunk": score_leg(trunk_party.stream, audio[:, 1], start),
        }
        outcomes.append(
            Outcome(condition, legs, row["status"], 1000 * (len(audio) / RATE - media_time))
        )
    return outcomes


def markdown_table(outcomes: Sequence[Outcome]) -> str:
    lines = [
        "| loss | jitter | reorder | status | lag, whole call (ms) | packet offset, median "
        "(ms) | packet offset, worst (ms) | packets > 20 ms off | samples recovered | "
        "SNR vs G.711, per packet (dB) | SNR vs G.711, one lag (dB) | file - call length "
        "(ms) |",
        "|---:|---:|:---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for outcome in outcomes:
        condition = outcome.condition
        head = (
            f"| {100 * condition.loss:g}% | {condition.jitter_ms:g} ms | "
            f"{'on' if condition.reorder else 'off'} | {outcome.status} |"
        )
        legs = list(outcome.legs.values())
        if not legs:
            lines.append(head + " | | | | | | | |")
            continue
        lines.append(
            f"{head} {max((leg.lag_ms for leg in legs), key=abs):+.2f} | "
            f"{max(leg.median_offset_ms for leg in legs):.2f} | "
            f"{max(leg.worst_offset_ms for leg in legs):.2f} | "
            f"{100 * max(leg.beyond_20ms for leg in legs):.1f}% | "
            f"{100 * min(leg.recovered for leg in legs):.2f}% | "
            f"{_decibels(min(leg.snr_db for leg in legs))} | "
            f"{_decibels(min(leg.fixed_lag_snr_db for leg in legs))} | "
            f"{outcome.length_error_ms:+.0f} |"
        )
    return "\n".join(lines)


def _decibels(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


def start_server(root: Path) -> CallrecServer:
    server = make_server(
        root, '[recording]\nchannels = "stereo"\nformat = "wav"\nannouncement = "none"\n'
    )
    server.add_user("201", "Bench Phone", PASSWORD, "--mode", "always")
    server.start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per call")
    parser.add_argument("--parallel", type=int, default=6, help="calls at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 conditions only")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60 or not 1 <= args.parallel <= 18:
        parser.error("--seconds must be in 1..60 and --parallel in 1..18")
    conditions = list(enumerate(all_conditions(args.quick)))
    root = Path(tempfile.mkdtemp(prefix="callrec-fidelity-"))
    began = time.monotonic()
    server = start_server(root)
    outcomes: list[Outcome] = []
    try:
        for first in range(0, len(conditions), args.parallel):
            batch = conditions[first : first + args.parallel]
            calls = asyncio.run(run_batch(server, batch, args.seconds, args.seed))
            outcomes.extend(score_calls(server, calls))
    finally:
        server.stop()
        warnings = [
            line for line in server.log().splitlines() if " ERROR " in line or "Traceback" in line
        ]
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"callrec recording fidelity: {len(outcomes)} calls of {args.seconds:g} s, "
        f"stereo WAV, both legs impaired, seed {args.seed}, "
        f"{os.cpu_count()} CPU(s), {time.monotonic() - began:.0f} s\n"
    )
    print(markdown_table(outcomes))
    print(
        "\nWorse of the two legs in each column. Truth: each sample at the instant the "
        "sender's 20 ms clock captured it (see the module docstring)."
    )
    if warnings:
        print("\nserve log errors:\n" + "\n".join(warnings[:20]), file=sys.stderr)
    return 0 if all(o.status == "complete" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
