"""The composition root: `serve(config)` builds callrec's parts, wires them and runs them.

Only the CLI imports this module. It is the one place that knows every layer: the store,
the media relay, the recorder, the SIP side, the retention and export services and the
portal. Each part gets what it needs through its constructor; background work runs in
one task group that shutdown cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from b2bua.call import CallState
from b2bua.server import B2bua
from b2bua.transport import ListenError
from callrec.config import Config, HostPort
from callrec.directory import CachedDirectory
from callrec.logs import configure_logging
from callrec.recording.manager import RecordingManager
from callrec.services.export import fail_interrupted_exports
from callrec.services.retention import RetentionTask
from callrec.workers import RemoteMedia, WorkerPool
from media.writer import repair
from portal.app import start_portal
from portal.metrics import MetricsSource, SetupLatency
from portal.services import PortalServices
from storage.connection import POSTGRESQL, redact_url
from storage.database import Store
from storage.errors import EmptyDatabase, StorageError
from storage.files import RecordingFiles
from storage.uploads import node_name

log = logging.getLogger("callrec.app")

# Starts a background task in the process's task group (`background_tasks`).
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


# RFC 3326: the BYE says why callrec ends a call whose media worker died.
WORKER_LOST_REASON = 'SIP ;cause=500 ;text="media worker lost"'


def end_calls_of_lost_worker(b2bua: B2bua, lost: list[RemoteMedia]) -> None:
    """A media worker died with these sessions: end their calls (BYE with a Reason to
    both legs when answered, CANCEL/487 while set up) and mark their call records.
    Their recordings come back to the recording manager as lost, to be repaired."""
    gone = set(lost)
    for call in list(b2bua.calls):
        if call.media not in gone:
            continue
        answered = call.state == CallState.CONFIRMED
        log.warning("call %s: its media worker was lost; ending the call", call.call_id)
        call.hang_up(reason=WORKER_LOST_REASON)
        b2bua.record_cdr(call, disposition="interrupted" if answered else "failed")


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is inside it, as people typed it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def open_store(config: Config, *, init: bool = False) -> Store:
    """The store for `serve`: a missing database is a first start and is created; an
    existing empty or unreadable one is refused (StorageError, one line), unless `init`
    asks for a new one in place of an empty file. A PostgreSQL URL (`[storage] db`)
    names a database that is migrated as needed; one that cannot be reached is refused."""
    location = config.storage.database
    if isinstance(location, str):
        try:
            return await Store.open(location, default_domain=config.sip.realm)
        except StorageError as exc:
            raise StorageError(f"cannot use the database {redact_url(location)}: {exc}") from exc
    path = location
    new = not path.exists() or path.stat().st_size == 0
    try:
        store = await Store.open(path, create_empty=init, default_domain=config.sip.realm)
    except EmptyDatabase:
        raise StorageError(
            f"the database {_shown(path)} is empty; run callrec serve --init to create a new one"
        ) from None
    except StorageError as exc:
        raise StorageError(f"cannot use the database {_shown(path)}: {exc}") from exc
    if new:
        log.warning("created a new database %s", _shown(path))
    return store


def raise_open_file_limit(config: Config) -> None:
    """Take the hard RLIMIT_NOFILE (the media workers inherit it): the SIP process needs
    descriptors for its TCP connections and the portal, each media worker for its slice
    of the RTP ports and its recordings, and running out refuses calls."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    needed = open_files_needed(config)
    if soft < needed + 256:
        log.warning(
            "the open-file limit %d is below what one process needs (%d: [sip]"
            " tcp_max_connections, or a media worker's share of the RTP ports): lower"
            " tcp_max_connections, add [media] workers or raise the limit (ulimit -n)",
            soft,
            needed,
        )


def open_files_needed(config: Config) -> int:
    """The most descriptors one callrec process needs, beyond a fixed 256: the SIP
    process its TCP connections (RTP is in the workers), a worker its share of the RTP
    ports (two per pair) and one recording file per call."""
    media = config.media
    ports = media.rtp_port_last - media.rtp_port_first + 1
    per_worker = -(-ports // max(1, media.workers))
    return max(config.sip.tcp_max_connections, per_worker + per_worker // 4)


async def close_interrupted_calls(store: Store, storage_dir: Path) -> int:
    """Close the calls a crash left open, at the last write of their recording. Runs
    before the recordings are repaired (a repair writes the file, moving its mtime)."""

    def last_write(path: str) -> float | None:
        try:
            return (storage_dir / path).stat().st_mtime
        except OSError:
            return None

    closed = await store.close_interrupted_calls(last_write)
    for call in closed:
        log.warning("call %s was interrupted by a crash; closed as interrupted", call.sip_call_id)
    return len(closed)


class NodeWatch:
    """This node's heartbeat on a store nodes share, and the take-over of dead nodes'
    calls (`storage.nodes`). `beat(now)` runs every `[cluster] node_timeout` / 3
    seconds (`run_forever`). A node judges the others only once its own heartbeat has
    been written without a failure for a whole timeout: after the store was down, every
    heartbeat is old, and the live nodes must have had the time to write theirs."""

    def __init__(self, store: Store, node: str, timeout: float) -> None:
        self.store = store
        self.node = node
        self.timeout = timeout
        self.healthy_since: float | None = None

    async def beat(self, now: float) -> None:
        try:
            await self.store.heartbeat(self.node, now, starting=self.healthy_since is None)
            if self.healthy_since is None:
                self.healthy_since = now
            if now - self.healthy_since < self.timeout:
                return
            dead = await self.store.take_over_dead_nodes(self.node, now, self.timeout)
        except StorageError as exc:
            if self.healthy_since is not None:
                log.warning("cluster: cannot write this node's heartbeat: %s", exc)
            self.healthy_since = None
            return
        for node in dead:
            log.warning(
                "cluster: node %s silent for %.0f s; closed its %d open call(s) as"
                " interrupted and %d recording(s) as partial (their files wait on its disk)",
                node.name,
                now - node.last_seen,
                len(node.calls),
                node.recordings,
            )

    async def run_forever(self, interval: float) -> None:
        """Beat every `interval` seconds (the first beat is the caller's, at start-up)."""
        while True:
            await asyncio.sleep(interval)
            await self.beat(time.time())


async def seal_taken_over_recordings(store: Store, files: RecordingFiles, node: str) -> int:
    """Repair and file the recordings of this node that another node closed as partial
    while it was dead (`storage.nodes`): the files are here. Their upload follows, with
    the other local recordings (`UploadQueue.queue_local_files`)."""
    rows = await store.taken_over_recordings(node)
    for row in rows:
        try:
            path = files.resolve(row.path)
        except StorageError as exc:
            log.error("recording %d (closed by another node) not repaired: %s", row.id, exc)
            continue
        result = await asyncio.to_thread(repair, path)
        summary = result.summary
        if summary is None:
            log.error(
                "recording %d (closed by another node) not repaired: %s",
                row.id,
                result.error or result.action,
            )
            continue
        await store.seal_taken_over(
            row.id, duration_s=summary.duration_s, sha256=summary.sha256, size=summary.bytes
        )
        log.warning("recording %d, closed by another node while this one was down, filed", row.id)
    return len(rows)


class _Shutdown(Exception):
    """Raised in the task group once the services have stopped in order: leaving the
    group with it cancels what still runs (housekeeping, the ticker, retention, exports)."""


@contextlib.asynccontextmanager
async def background_tasks() -> AsyncIterator[Spawn]:
    """The one owner of the process's background tasks: an `asyncio.TaskGroup`.

    Yields the group's `spawn`. A task that fails is logged once and the others go on:
    the group never sees its exception, so it neither cancels the task's siblings nor
    takes the process down. Leaving the block cancels what still runs and waits for it;
    an error raised in the block comes out as itself, not in an ExceptionGroup.
    """
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            yield functools.partial(_spawn_logged, group)
            raise _Shutdown
    except BaseExceptionGroup as errors:
        # Spawned tasks never raise, so the group holds only the block's own error.
        _, rest = errors.split(_Shutdown)
        error = rest.exceptions[0] if rest is not None else None
    if error is not None:
        raise error  # outside the except: its context stays its own


def _spawn_logged(group: asyncio.TaskGroup, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    name = getattr(work, "__qualname__", type(work).__name__)
    return group.create_task(_logged(work, name), name=name)


async def _logged(work: Coroutine[Any, Any, Any], name: str) -> Any:
    try:
        return await work
    except Exception:
        log.exception("background task %s failed", name)
        return None


async def serve(config: Config, *, init: bool = False) -> None:
    """Run callrec until SIGINT or SIGTERM. Failing to start (a port in use, an empty
    database) raises after closing what was opened, so the process exits."""
    configure_logging(config.server.log_format, os.environ.get("CALLREC_LOG_LEVEL", "INFO"))
    raise_open_file_limit(config)
    store = await open_store(config, init=init)
    # This node's name on a shared store: its calls, and only they, are its to close.
    store.node = node_name(config.storage.dir)
    try:
        await close_interrupted_calls(store, config.storage.dir)
        async with background_tasks() as spawn:
            if store.database.dialect == POSTGRESQL:
                watch = NodeWatch(store, store.node, config.cluster.node_timeout)
                await watch.beat(time.time())
                spawn(watch.run_forever(config.cluster.heartbeat_interval))
            await _run(config, store, spawn)
    finally:
        await store.close()


async def _run(config: Config, store: Store, spawn: Spawn) -> None:
    """Start every part with `spawn` for its background work, serve until signalled,
    then stop in order: the portal, new calls, the calls in progress (their records
    written), the recordings (filed), the media workers. The task group cancels the
    rest."""
    # The one owner of the recording files (the local folder, and the object store when
    # `[storage] objects` names one), shared by filing, retention, export and the portal.
    files = RecordingFiles.from_config(config.storage)
    try:
        await _run_with_files(config, store, spawn, files)
    finally:
        await files.close()


async def _run_with_files(
    config: Config, store: Store, spawn: Spawn, files: RecordingFiles
) -> None:
    recordings = RecordingManager(config, store, spawn=spawn, files=files)
    media = WorkerPool.from_config(config, spawn=spawn)
    directory = CachedDirectory(store, spawn=spawn)  # users and credentials from memory
    shared = store.database.dialect == POSTGRESQL  # nodes may share it
    b2bua = B2bua(
        config, directory, media, recordings, spawn=spawn, auth_ledger=store if shared else None
    )
    if shared and store.node is not None:
        await seal_taken_over_recordings(store, files, store.node)
    media.on_lost = functools.partial(end_calls_of_lost_worker, b2bua)
    await recordings.refresh_settings()
    recovered = await recordings.recover()
    if recovered:
        log.warning("repaired %d recording(s) left unfinished by a crash", recovered)
    await fail_interrupted_exports(store, time.time())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    setup_latency = SetupLatency()
    b2bua.setup_observers.append(setup_latency.observe)
    metrics = MetricsSource(
        workers=media.worker_status,
        restarts=lambda: media.restarts,
        calls_active=lambda: len(b2bua.calls),
        recordings_active=lambda: len(recordings.active),
        packets_relayed=lambda: media.packets_relayed,
        packets_dropped=lambda: media.packets_dropped,
        auth_failures=lambda: b2bua.counters.auth_failures,
        setup_latency=setup_latency,
        upload_queue_depth=(
            (lambda: uploads.depth) if (uploads := recordings.uploads) is not None else None
        ),
    )
    try:
        await media.start()
        try:
            await b2bua.start()
            recordings.start()
            spawn(RetentionTask(store, files).run_forever())
            listen = config.portal.listen
            try:
                portal = await start_portal(
                    config,
                    store,
                    services=PortalServices.from_config(config, store, spawn=spawn, files=files),
                    spawn=spawn,
                    metrics=metrics,
                    health={"objects": files.objects.check} if files.objects is not None else None,
                )
            except OSError as exc:
                raise ListenError(listen.host, listen.port, "tcp", exc) from exc
            try:
                tls = config.sip.listen_tls
                if tls is not None and b2bua.tls_port is not None:
                    transports = f"udp, tcp, tls on {HostPort(tls.host, b2bua.tls_port)}"
                else:
                    transports = "udp, tcp"
                print(
                    f"callrec serving SIP on {b2bua.hostport()} ({transports}),"
                    f" portal on {portal.url}",
                    flush=True,
                )
                await stop.wait()
                log.info("shutting down")
            finally:
                await portal.stop()
        finally:
            await b2bua.stop()
            await recordings.stop()
    finally:
        await media.stop()
