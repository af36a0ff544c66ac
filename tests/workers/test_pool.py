"""`WorkerPool` with real worker processes and real UDP "phones" on 127.0.0.1.

Each test starts the pool as `callrec serve` does (processes of `callrec.workers.process`
over socket pairs) and drives sessions through `RemoteMedia`; nothing here sleeps for a
fixed time: the tests wait for packets, events and counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from b2bua.services import MediaUnavailable
from callrec.app import background_tasks
from callrec.policy import RecordingMode
from callrec.recording.control import RecordingOutcome, RecordingSpec, Toggle
from callrec.workers import RemoteMedia, WorkerPool
from media import g711
from testkit.sipp_runner import free_port
from testkit.waiting import wait_until, wait_until_async

HOST = "127.0.0.1"
PAIRS_PER_WORKER = 6
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)
TONE = g711.alaw_encode((8000 * np.sin(np.arange(160) * 0.3)).astype(np.int16)).tobytes()


def rtp(sequence: int, payload: bytes = TONE, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, 160 * sequence, ssrc) + payload


class Phone:
    """A UDP socket on loopback that sends and counts RTP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def drain(self) -> int:
        while True:
            try:
                self.received.append(self.sock.recv(4096))
            except BlockingIOError:
                return len(self.received)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made = [Phone() for _ in range(6)]
    yield made
    for phone in made:
        phone.close()


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    first = free_port(even=True, span=2 * 2 * PAIRS_PER_WORKER)
    async with background_tasks() as spawn:
        started = WorkerPool(
            address=HOST,
            first_port=first,
            last_port=first + 4 * PAIRS_PER_WORKER - 1,
            workers=2,
            spawn=spawn,
            silence_timeout=None,
        )
        try:
            await started.start()
            yield started
        finally:
            await started.stop()


async def open_media(pool: WorkerPool) -> RemoteMedia:
    return await pool.open(on_silence=lambda _leg: None, on_idle=lambda: None)


def connect(media: RemoteMedia, caller: Phone, callee: Phone) -> None:
    media.set_remote("a", HOST, caller.port)
    media.set_remote("b", HOST, callee.port)


async def relays_both_ways(media: RemoteMedia, caller: Phone, callee: Phone, count: int) -> None:
    """`count` packets each way arrive at the far phone, one after the other. A packet
    not through yet is sent again at each poll: the first ones may arrive before the
    worker has the command naming the phones (the SIP side does not wait for it)."""
    for phone in (caller, callee):
        phone.drain()
        phone.received.clear()
    for sequence in range(count):
        wanted = sequence + 1

        def through(sequence: int = sequence, wanted: int = wanted) -> bool:
            to_callee, to_caller = callee.drain() >= wanted, caller.drain() >= wanted
            if not to_callee:
                caller.sock.sendto(rtp(sequence), (HOST, media.local_port("a")))
            if not to_caller:
                callee.sock.sendto(rtp(sequence, ssrc=0x5678), (HOST, media.local_port("b")))
            return to_callee and to_caller

        await wait_until_async(
            through, timeout=5, what=f"packet {sequence} both ways through {media}"
        )


def spec_for(tmp_path: Path, name: str) -> RecordingSpec:
    return RecordingSpec(
        relative=f"recordings/{name}.wav",
        absolute=str(tmp_path / "recordings" / f"{name}.wav"),
        format="wav",
        channels="stereo",
        internal_leg="a",
        start_time=time.time(),
        mode=RecordingMode.ALWAYS,
        feature_code="*1",
        feature_code_timeout=2.0,
        paused="skip",
        swallow_feature_code=False,
        announcement="none",
        language="en",
        label=name,
    )


# A process that owns a pool of two workers, prints their PIDs and waits for ever.
POOL_OWNER = """
import asyncio, sys
from callrec.app import background_tasks
from callrec.workers import WorkerPool

async def main():
    host, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async with background_tasks() as spawn:
        pool = WorkerPool(address=host, first_port=first, last_port=last, workers=2,
                          spawn=spawn, silence_timeout=None)
        await pool.start()
        print(" ".join(str(w.pid) for w in pool.worker_status()), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


# ---------------------------------------------------------------------------- tests
async def test_calls_go_to_the_least_loaded_worker_and_ports_come_back(pool: WorkerPool) -> None:
    stats = pool.port_stats()
    assert stats.size == 2 * PAIRS_PER_WORKER and stats.free == stats.size
    opened = [await open_media(pool) for _ in range(3)]
    assert [media.worker for media in opened] == [0, 1, 0]
    assert [w.calls for w in pool.worker_status()] == [2, 1]
    assert pool.port_stats().free == stats.size - 6  # two pairs per call
    opened[0].close()
    await wait_until_async(
        lambda: pool.port_stats().free == stats.size - 4, timeout=5, what="ports back"
    )
    # Both have one call now and as many free ports: the first wins the tie.
    fourth = await open_media(pool)
    assert fourth.worker == 0
    for media in [*opened[1:], fourth]:
        media.close()
    await wait_until_async(
        lambda: pool.port_stats().free == stats.size, timeout=5, what="the pool full again"
    )


async def test_a_full_worker_passes_the_call_to_the_next(pool: WorkerPool) -> None:
    opened = [await open_media(pool) for _ in range(PAIRS_PER_WORKER)]  # three per worker
    assert pool.port_stats().free == 0
    with pytest.raises(MediaUnavailable, match="no free RTP port"):
        await open_media(pool)
    for media in opened:
        media.close()


async def test_a_session_relays_and_records_in_its_worker(
    pool: WorkerPool, phones: list[Phone], tmp_path: Path
) -> None:
    media = await open_media(pool)
    caller, callee = phones[:2]
    connect(media, caller, callee)
    toggles: list[Toggle] = []
    spec = spec_for(tmp_path, "relayed")
    media.start_recording(
        spec,
        {"a": SDP.format(port=caller.port).encode(), "b": SDP.format(port=callee.port).encode()},
        toggles.append,
    )
    await relays_both_ways(media, caller, callee, 50)
    assert caller.received[-1] == rtp(49, ssrc=0x5678)  # byte for byte
    assert callee.received[-1] == rtp(49)
    media.close()
    outcome = await asyncio.wait_for(asyncio.ensure_future(media.stop_recording(0)), 10)
    assert outcome.started and outcome.status == "complete" and outcome.media_seen, outcome
    audio, rate = sf.read(spec.absolute, dtype="int16", always_2d=True)
    # Placed by arrival time: the 50 packets went out in well under a second.
    assert rate == 8000 and audio.shape[1] == 2 and len(audio) >= 2 * 160
    assert abs(audio[:, 0]).max() > 1000 and abs(audio[:, 1]).max() > 1000
    assert toggles == []


async def test_a_killed_worker_is_restarted_and_its_calls_reported_lost(
    pool: WorkerPool, phones: list[Phone], tmp_path: Path
) -> None:
    lost: list[list[RemoteMedia]] = []
    pool.on_lost = lost.append
    victim, survivor = await open_media(pool), await open_media(pool)
    assert (victim.worker, survivor.worker) == (0, 1)
    connect(victim, phones[0], phones[1])
    connect(survivor, phones[2], phones[3])
    spec = spec_for(tmp_path, "victim")
    victim.start_recording(spec, {"a": SDP.format(port=phones[0].port).encode()}, print)
    await relays_both_ways(victim, phones[0], phones[1], 60)
    await wait_until_async(
        lambda: Path(spec.absolute).is_file() and Path(spec.absolute).stat().st_size > 8000,
        timeout=5,
        what="audio written by the victim's recorder",
    )
    pid = pool.worker_status()[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_until_async(lambda: lost, timeout=10, what="the lost worker's calls")
    assert lost == [[victim]]
    outcome: RecordingOutcome = await victim.stop_recording(0)
    assert outcome.lost
    assert pool.port_stats().workers[0].port_pairs_free == 0
    # The other worker's call never noticed.
    await relays_both_ways(survivor, phones[2], phones[3], 20)
    await wait_until_async(lambda: pool.alive == 2, timeout=15, what="the worker restarted")
    assert pool.restarts == 1 and pool.worker_status()[0].pid not in (None, pid)
    assert process_gone(pid)
    replacement = await open_media(pool)
    assert replacement.worker == 0  # the least loaded again
    connect(replacement, phones[4], phones[5])
    await relays_both_ways(replacement, phones[4], phones[5], 20)
    for media in (survivor, replacement):
        media.close()
    await wait_until_async(
        lambda: pool.port_stats().free == pool.port_stats().size,
        timeout=5,
        what="the pool full again",
    )


async def test_stop_ends_every_worker_process(pool: WorkerPool) -> None:
    media = await open_media(pool)
    pids = [w.pid for w in pool.worker_status()]
    media.close()
    await pool.stop()
    assert all(pid is not None and process_gone(pid) for pid in pids)
    assert pool.alive == 0


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """No orphans: kill -9 the process that owns the pool, and its workers go too."""
    first = free_port(even=True, span=4 * PAIRS_PER_WORKER)
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_OWNER, HOST, str(first), str(first + 4 * PAIRS_PER_WORKER - 1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(process_gone(pid) for pid in pids)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
    wait_until(
        lambda: all(process_gone(pid) for pid in pids),
        timeout=10,
        what="the workers of a killed parent exiting",
    )


async def test_a_recording_that_cannot_start_still_reports_an_outcome(
    pool: WorkerPool, tmp_path: Path
) -> None:
    media = await open_media(pool)
    bad = dataclasses.replace(spec_for(tmp_path, "bad"), feature_code="#9")
    media.start_recording(bad, {}, print)
    outcome = await asyncio.wait_for(asyncio.ensure_future(media.stop_recording(0)), 10)
    assert not outcome.started and not outcome.lost and outcome.status == "error", outcome
    assert "feature code" in (outcome.error or "")
    media.close()
