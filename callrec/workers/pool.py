"""The media workers of `callrec serve`, from the SIP process: start, assign, restart.

`WorkerPool` starts `workers` processes (`callrec.workers.process`), each owning one
slice of the RTP port range (`media.ports.split_port_range`) and talking over its own
Unix socket pair (`callrec.workers.protocol`). It is the SIP side's `MediaFactory`:
`open` gives a new call a `RemoteMedia` on the least-loaded live worker (fewest calls,
then most free ports), and tries the next one if a worker's slice is full.

A worker is live from its `ready` event until its channel reaches end-of-file. When a
worker dies (a crash, kill -9) the pool notices the end-of-file, reaps the process, fails
what was waiting on it, marks its sessions lost and hands the calls still open to
`on_lost` (`callrec.app` ends them with a BYE carrying a Reason), then starts a new
worker on the same slice after a bounded backoff: BACKOFF_FIRST_S doubling up to
BACKOFF_MAX_S while restarts keep failing, back to the first step once a worker has
lived STABLE_S. New calls never go to a dead worker; until its successor is ready they
go to the others.

The SIP process knows each worker's port pool from what the worker reports (its size
at `ready`, its free count with every answer to `open` and every `closed` event):
`port_stats()` sums them. `stop()` closes the channels (each worker then seals its
recordings and exits) and waits for the processes, killing one that does not exit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from b2bua.services import MediaUnavailable
from callrec.config import Config
from callrec.workers.channel import read_messages
from callrec.workers.protocol import Message, ProtocolError, encode
from callrec.workers.remote import RemoteMedia
from media.ports import split_port_range

__all__ = ["PortStats", "WorkerPool", "WorkerStartError", "WorkerStatus"]

log = logging.getLogger("callrec.workers")

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
STABLE_S = 30.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class WorkerStartError(OSError):
    """The media workers did not start; str() says which and why."""


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as the SIP process sees it now."""

    index: int
    pid: int | None
    alive: bool
    first_port: int
    last_port: int
    port_pairs: int  # the size of its slice of the RTP range, in pairs
    port_pairs_free: int  # 0 while it is down
    calls: int  # sessions open on it


@dataclass(frozen=True)
class PortStats:
    """The RTP port pool over all workers: pairs in all and free now (live workers)."""

    size: int
    free: int
    workers: tuple[WorkerStatus, ...]


class _Worker:
    """One worker slot: a slice of the port range and the process serving it now."""

    def __init__(self, index: int, first: int, last: int) -> None:
        self.index = index
        self.first = first
        self.last = last
        self.pairs = (last - first + 1) // 2
        self.free = 0
        self.pid: int | None = None
        self.alive = False
        self.ready = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.sessions: dict[int, RemoteMedia] = {}
        self.pending: dict[int, asyncio.Future[Message]] = {}
        self.task: asyncio.Task[Any] | None = None

    @property
    def calls(self) -> int:
        return sum(1 for media in self.sessions.values() if not media.closed)

    def send(self, message: Message) -> None:
        writer = self.writer
        if self.alive and writer is not None and not writer.is_closing():
            writer.write(encode(message))

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            index=self.index,
            pid=self.pid if self.alive else None,
            alive=self.alive,
            first_port=self.first,
            last_port=self.last,
            port_pairs=self.pairs,
            port_pairs_free=self.free if self.alive else 0,
            calls=self.calls,
        )


class WorkerPool:
    """The media workers; a `b2bua.services.MediaFactory`."""

    def __init__(
        self,
        *,
        address: str,
        first_port: int,
        last_port: int,
        workers: int,
        spawn: Spawn,
        silence_timeout: float | None = 30.0,
        idle_timeout: float | None = None,
        nat: bool = True,
        latch_window: float = 3.0,
        loop: str = "auto",
    ) -> None:
        self.address = address
        self.loop = loop
        self.spawn = spawn
        self.silence_timeout = silence_timeout
        self.idle_timeout = idle_timeout
        self.nat = nat
        self.latch_window = latch_window
        self.workers = [
            _Worker(index, first, last)
            for index, (first, last) in enumerate(split_port_range(first_port, last_port, workers))
        ]
        # Told of the sessions a dead worker took with it that were still open.
        self.on_lost: Callable[[list[RemoteMedia]], None] | None = None
        self.restarts = 0
        # Packets of the sessions closed so far, as their workers reported them.
        self.packets_relayed = 0
        self.packets_dropped = 0
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._stopping = False

    @classmethod
    def from_config(cls, config: Config, *, spawn: Spawn) -> WorkerPool:
        media = config.media
        return cls(
            address=media.address,
            first_port=media.rtp_port_first,
            last_port=media.rtp_port_last,
            workers=media.workers,
            spawn=spawn,
            silence_timeout=media.rtp_timeout,
            idle_timeout=media.hangup_after_silence or None,
            nat=media.nat,
            latch_window=media.latch_window,
            loop=config.server.loop,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start every worker and wait until each is ready; `WorkerStartError` if one
        is not ready within `timeout` seconds (the others are stopped again)."""
        for worker in self.workers:
            worker.task = self.spawn(self._supervise(worker))
        waits = [asyncio.ensure_future(worker.ready.wait()) for worker in self.workers]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for wait in pending:
            wait.cancel()
        if pending:
            late = [str(w.index) for w in self.workers if not w.ready.is_set()]
            await self.stop()
            raise WorkerStartError(
                f"media worker(s) {', '.join(late)} not ready within {timeout:g} s;"
                " see the log above"
            )
        stats = self.port_stats()
        log.info(
            "media: %d worker(s), %d RTP port pairs, %d free (%s)",
            len(self.workers),
            stats.size,
            stats.free,
            ", ".join(f"worker {w.index}: {w.first}-{w.last}" for w in self.workers),
        )

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Close every channel and wait for the workers to exit (each seals its
        recordings first); a worker still running after `timeout` is killed."""
        self._stopping = True
        for worker in self.workers:
            writer = worker.writer
            if writer is not None and not writer.is_closing():
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
        tasks = [w.task for w in self.workers if w.task is not None and not w.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------ MediaFactory
    async def open(
        self, *, on_silence: Callable[[str], None], on_idle: Callable[[], None]
    ) -> RemoteMedia:
        """A relay session for a new call on the least-loaded live worker; raises
        `MediaUnavailable` if no worker is live or none has free ports."""
        candidates = sorted(
            (w for w in self.workers if w.alive), key=lambda w: (w.calls, -w.free, w.index)
        )
        if not candidates:
            raise MediaUnavailable("no media worker is running")
        error = MediaUnavailable("no media worker could open a session")
        for worker in candidates:
            sid = next(self._ids)
            media = RemoteMedia(
                worker.index,
                sid,
                self.address,
                worker.send,
                on_silence=on_silence,
                on_idle=on_idle,
                on_closed=self._closed,
            )
            worker.sessions[sid] = media  # counted at once: concurrent opens spread out
            try:
                reply = await self._request(
                    worker,
                    {
                        "op": "open",
                        "sid": sid,
                        "silence_timeout": self.silence_timeout,
                        "idle_timeout": self.idle_timeout,
                        "nat": self.nat,
                        "latch_window": self.latch_window,
                    },
                )
            except MediaUnavailable as exc:
                error = exc
                continue
            if not reply.get("ok"):
                worker.sessions.pop(sid, None)
                error = MediaUnavailable(f"media worker {worker.index}: {reply.get('error')}")
                continue
            first, second = reply["ports"]
            media.ports = (int(first), int(second))
            return media
        raise error

    async def _request(self, worker: _Worker, message: Message) -> Message:
        if not worker.alive:
            raise MediaUnavailable(f"media worker {worker.index} is down")
        request_id = next(self._request_ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        worker.pending[request_id] = future
        worker.send({"id": request_id, **message})
        try:
            return await future
        finally:
            worker.pending.pop(request_id, None)

    def _closed(self, media: RemoteMedia) -> None:
        worker = self.workers[media.worker]
        if not media.recording:
            worker.sessions.pop(media.sid, None)

    # ------------------------------------------------------------------ figures
    def port_stats(self) -> PortStats:
        """Port pairs over all workers, and free now (a dead worker has none free)."""
        workers = tuple(worker.status() for worker in self.workers)
        return PortStats(
            size=sum(w.port_pairs for w in workers),
            free=sum(w.port_pairs_free for w in workers),
            workers=workers,
        )

    def worker_status(self) -> list[WorkerStatus]:
        return [worker.status() for worker in self.workers]

    @property
    def alive(self) -> int:
        return sum(1 for worker in self.workers if worker.alive)

    # ------------------------------------------------------------------ supervision
    async def _supervise(self, worker: _Worker) -> None:
        """Run `worker`'s process, and start a new one each time it dies, until stop."""
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run_once(worker)
            except OSError as exc:
                log.error("media worker %d cannot start: %s", worker.index, exc)
            if self._stopping:
                return
            failures = 0 if time.monotonic() - started >= STABLE_S else failures + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1)) if failures else 0
            self.restarts += 1
            log.warning("media worker %d: restart %d in %.1f s", worker.index, self.restarts, delay)
            if delay:
                await asyncio.sleep(delay)

    async def _run_once(self, worker: _Worker) -> None:
        """Start `worker`'s process, serve its channel until end-of-file, clean up."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(worker),
                "--fd",
                str(child_end.fileno()),
                pass_fds=(child_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        worker.writer = writer
        worker.pid = process.pid
        try:
            await self._read_events(worker, reader)
        finally:
            worker.alive = False
            worker.ready.clear()
            writer.close()
            worker.writer = None
            try:
                code = await asyncio.wait_for(process.wait(), timeout=2.0)
            except TimeoutError:
                # The channel broke but the process lives on: it must not keep its ports.
                process.kill()
                code = await process.wait()
            self._lost(worker, code)

    def command(self, worker: _Worker) -> list[str]:
        """The worker's command line, less the `--fd` of its channel."""
        return [
            sys.executable,
            "-m",
            "callrec.workers.process",
            "--index",
            str(worker.index),
            "--address",
            self.address,
            "--ports",
            f"{worker.first}-{worker.last}",
            "--parent",
            str(os.getpid()),
            "--loop",
            self.loop,
        ]

    async def _read_events(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            async for message in read_messages(reader):
                try:
                    self._on_message(worker, message)
                except Exception:
                    log.exception("media worker %d: cannot handle %s", worker.index, message)
        except ProtocolError as exc:
            log.error("media worker %d: broken control channel: %s", worker.index, exc)

    def _on_message(self, worker: _Worker, message: Message) -> None:
        if "id" in message:
            future = worker.pending.get(int(message["id"]))
            if "free" in message:
                worker.free = int(message["free"])
            if future is not None and not future.done():
                future.set_result(message)
            return
        event = message.get("ev")
        if event == "ready":
            worker.pid = int(message["pid"])
            worker.pairs = int(message["pairs"])
            worker.free = int(message["free"])
            worker.alive = True
            worker.ready.set()
            log.info(
                "media worker %d ready (pid %d, RTP ports %d-%d, %d pairs)",
                worker.index,
                worker.pid,
                worker.first,
                worker.last,
                worker.pairs,
            )
            return
        if event == "closed" and "free" in message:
            worker.free = int(message["free"])
            self.packets_relayed += int(message.get("relayed") or 0)
            self.packets_dropped += int(message.get("dropped") or 0)
        media = worker.sessions.get(int(message.get("sid", 0)))
        if media is None:
            return
        media.on_event(message)
        if event == "recorded" and media.closed:
            worker.sessions.pop(media.sid, None)

    def _lost(self, worker: _Worker, code: int) -> None:
        """`worker`'s process is gone: fail what waited on it, and end its calls."""
        worker.free = 0
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(MediaUnavailable(f"media worker {worker.index} was lost"))
        worker.pending.clear()
        sessions = list(worker.sessions.values())
        worker.sessions.clear()
        open_calls = [media for media in sessions if not media.closed]
        for media in sessions:
            media.lost()
        if self._stopping and code == 0:
            log.info("media worker %d stopped", worker.index)
            return
        log.error(
            "media worker %d (pid %s) is gone (exit status %s); %d call(s) on it end",
            worker.index,
            worker.pid,
            code,
            len(open_calls),
        )
        if open_calls and self.on_lost is not None:
            try:
                self.on_lost(open_calls)
            except Exception:
                log.exception("media worker %d: ending its calls failed", worker.index)
