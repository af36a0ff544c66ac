"""Issue 14: RTP that reaches a worker between the answer and the `record` command (the
SIP process asks for the recording after it relayed the 200, and the caller may already
be sending) is held and recorded, so the file still starts at the first packet."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import soundfile

from callrec.workers.protocol import pack_bytes
from callrec.workers.worker import MediaWorker
from media import g711
from testkit.sipp_runner import free_port
from testkit.waiting import wait_until_async
from tests.workers.test_pool import spec_for

HOST = "127.0.0.1"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, into: list[bytes]) -> int:
    while True:
        try:
            into.append(sock.recv(2048))
        except BlockingIOError:
            return len(into)


async def test_packets_before_the_record_command_are_in_the_file(tmp_path: Path) -> None:
    events: list[dict[str, object]] = []
    first = free_port(even=True, span=8)
    worker = MediaWorker(HOST, first, first + 7, events.append)
    caller, callee = udp(), udp()
    try:
        await worker.handle({"op": "open", "id": 1, "sid": 1, "silence_timeout": None})
        ports = events[-1]["ports"]
        assert isinstance(ports, list)
        for leg, sock in (("a", caller), ("b", callee)):
            port = sock.getsockname()[1]
            await worker.handle({"op": "remote", "sid": 1, "leg": leg, "host": HOST, "port": port})
        answered = time.time()
        await worker.handle({"op": "started", "sid": 1})
        rng = np.random.default_rng(14)
        audio = g711.alaw_encode(rng.normal(0, 3000, 160 * 30).astype(np.int16)).tobytes()
        payloads = [audio[i * 160 : (i + 1) * 160] for i in range(30)]
        forwarded: list[bytes] = []

        async def send(index: int) -> None:
            """Like a phone: one packet every 20 ms, once its audio is captured."""
            await asyncio.sleep(0.02)
            header = struct.pack("!BBHII", 0x80, 8, index, 160 * index, 0xCA11)
            caller.sendto(header + payloads[index], (HOST, int(ports[0])))

        # The first ten packets go through the relay before the recording is asked for.
        for index in range(10):
            await send(index)
        await wait_until_async(lambda: drain(callee, forwarded) >= 10, timeout=5, what="relay")
        spec = replace(spec_for(tmp_path, "early"), channels="mono", start_time=answered)
        sdp = {"a": SDP.format(port=caller.getsockname()[1]).encode(), "b": b""}
        packed = {leg: pack_bytes(body) for leg, body in sdp.items() if body}
        await worker.handle({"op": "record", "sid": 1, "spec": asdict(spec), "sdp": packed})
        for index in range(10, 30):
            await send(index)
        await wait_until_async(lambda: drain(callee, forwarded) >= 30, timeout=5, what="relay")
        await worker.handle({"op": "close", "sid": 1, "at": time.time() + 0.3})
        await worker.close_all()
    finally:
        caller.close()
        callee.close()
    outcome = next(e for e in events if e.get("ev") == "recorded")["outcome"]
    assert outcome["status"] == "complete", outcome  # type: ignore[index]
    recorded, _ = soundfile.read(spec.absolute, dtype="int16")
    expected = g711.alaw_decode(np.frombuffer(audio, dtype=np.uint8))
    # The caller's first packet is the file's first audio, and every later one follows.
    start = int(np.flatnonzero(recorded)[0])
    assert np.array_equal(recorded[start : start + expected.size], expected)
