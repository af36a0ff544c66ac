"""The upload queue: finished recordings on their way to the object store.

A recording's row says where its file is (`storage_state`, migration 9):
- `local`: on this node's disk: the local folder is the backend, or the call is still
  being recorded;
- `uploading`: finished and waiting (or being sent) to the object store; the local file
  is the only copy;
- `remote`: in the object store, verified; the local copy is deleted.

The queue is these rows, so it survives a restart: nothing is held in memory that a
crash could lose. `UploadQueue` works it in the background: each recording is uploaded
with its sealed SHA-256 and verified (`RecordingFiles.upload`), its row is marked
`remote`, and only then is the local copy deleted. A crash between two of those steps
repeats the upload (the same key, the same bytes) or leaves a local copy that is
deleted the next time round.

When the object store is down an attempt fails fast (timeouts) and the queue waits,
1 s doubling to `max_backoff_s`, before it tries again; nothing is dropped, the files
wait on the local disk. Past `alarm_at` recordings waiting, it logs an ERROR once per
`alarm_interval_s` and the depth is a gauge (`depth`, served on /metrics). Recordings
whose bytes do not match their sealed SHA-256 cannot be uploaded as sealed: they are
logged and sent as they are, with the SHA-256 of what is there. A recording with no
file at all (nor an object) leaves the queue as `local`, with an ERROR line, so one
broken row cannot hold the queue up; `queue_local_files` at the next start tries it
again. Each node uploads the files on its own disk: a queued row names the node
(`upload_node`, its host name and storage folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.connection import Database
from storage.errors import InvalidValue, NotFound, StorageError, StorageUnavailable
from storage.files import RecordingFiles
from storage.objects import ChecksumMismatch

__all__ = [
    "STORAGE_STATES",
    "UPLOADABLE_STATUSES",
    "PendingUpload",
    "UploadQueue",
    "Uploads",
    "node_name",
]

log = logging.getLogger("callrec.uploads")

STORAGE_STATES = ("local", "uploading", "remote")
# What goes to the object store: the playable recordings (an `error` or `unrecordable`
# one has no usable file; it stays local until its retention ends).
UPLOADABLE_STATUSES = ("complete", "recovered", "partial")
_UPLOADABLE_SQL = ", ".join(f"'{status}'" for status in UPLOADABLE_STATUSES)


@dataclass(frozen=True)
class PendingUpload:
    """A recording waiting for the object store."""

    id: int
    path: str
    sha256: str | None


class Uploads:
    """The `storage_state` of recording rows: the persistent upload queue. A queued row
    names the node that holds its file (`upload_node`): each node uploads its own."""

    database: Database

    async def queue_upload(self, recording_id: int, node: str) -> bool:
        """Queue a finished recording, whose file is on `node`, for the object store
        (`local` → `uploading`); False if it is not one that goes (still recording,
        unplayable, purged) or is queued already."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE recordings SET storage_state = 'uploading', upload_node = ?"
                f" WHERE id = ? AND storage_state = 'local' AND status IN ({_UPLOADABLE_SQL})",
                (node, recording_id),
            )
        return bool(changed)

    async def local_recordings(self, after_id: int, limit: int) -> list[PendingUpload]:
        """Finished, playable recordings still `local` (made before the object store was
        configured, or filed by a process that stopped before queuing them), by id."""
        async with self.database.read() as session:
            rows = await session.all(
                "SELECT id, path, sha256 FROM recordings WHERE storage_state = 'local'"
                f" AND status IN ({_UPLOADABLE_SQL}) AND id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        return [PendingUpload(int(row["id"]), str(row["path"]), row["sha256"]) for row in rows]

    async def pending_uploads(self, node: str, limit: int) -> list[PendingUpload]:
        """The oldest recordings waiting on `node` for the object store, at most `limit`."""
        async with self.database.read() as session:
            rows = await session.all(
                "SELECT id, path, sha256 FROM recordings WHERE storage_state = 'uploading'"
                f" AND upload_node = ? AND status IN ({_UPLOADABLE_SQL}) ORDER BY id LIMIT ?",
                (node, limit),
            )
        return [PendingUpload(int(row["id"]), str(row["path"]), row["sha256"]) for row in rows]

    async def upload_queue_depth(self, node: str | None = None) -> int:
        """How many recordings wait for the object store (on `node`; None: on any)."""
        sql = (
            "SELECT COUNT(*) AS n FROM recordings WHERE storage_state = 'uploading'"
            f" AND status IN ({_UPLOADABLE_SQL})"
        )
        params: tuple[str, ...] = ()
        if node is not None:
            sql += " AND upload_node = ?"
            params = (node,)
        async with self.database.read() as session:
            row = await session.one(sql, params)
        return int(row["n"]) if row is not None else 0

    async def mark_uploaded(self, recording_id: int, sha256: str) -> None:
        """The recording is verified in the object store (with the SHA-256 it holds)."""
        async with self.database.transaction() as session:
            await session.execute(
                "UPDATE recordings SET storage_state = 'remote', upload_node = NULL,"
                " sha256 = COALESCE(sha256, ?) WHERE id = ?",
                (sha256, recording_id),
            )

    async def unqueue_upload(self, recording_id: int) -> None:
        """Take a recording that cannot be uploaded out of the queue (back to `local`)."""
        async with self.database.transaction() as session:
            await session.execute(
                "UPDATE recordings SET storage_state = 'local', upload_node = NULL"
                " WHERE id = ? AND storage_state = 'uploading'",
                (recording_id,),
            )

    async def storage_state(self, recording_id: int) -> str | None:
        async with self.database.read() as session:
            row = await session.one(
                "SELECT storage_state FROM recordings WHERE id = ?", (recording_id,)
            )
        return str(row["storage_state"]) if row is not None else None


def node_name(storage_dir: Path) -> str:
    """A node's name on a shared store (its calls, its upload queue): the host and its
    storage folder (each node has its own local disk)."""
    return f"{socket.gethostname()}:{storage_dir}"


def default_node(files: RecordingFiles) -> str:
    """This node's name in the upload queue (`node_name` of its storage folder)."""
    return node_name(files.storage_dir)


class UploadQueue:
    """Works the upload queue in the background (`run_forever`, in the owner's task
    group); `wake()` when a recording was queued."""

    def __init__(
        self,
        store: Uploads,
        files: RecordingFiles,
        *,
        node: str | None = None,
        alarm_at: int,
        alarm_interval_s: float = 60.0,
        batch: int = 20,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        idle_poll_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.files = files
        self.node = node if node is not None else default_node(files)
        self.alarm_at = alarm_at
        self.alarm_interval_s = alarm_interval_s
        self.batch = batch
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_poll_s = idle_poll_s
        self.monotonic = monotonic
        self.depth = 0
        self.uploaded = 0
        self.failures = 0
        self.backoff_s = 0.0
        self._wake = asyncio.Event()
        self._alarmed_at: float | None = None

    def wake(self) -> None:
        self._wake.set()

    async def queue_local_files(self) -> int:
        """Queue the finished recordings still `local` whose files are on this node's
        disk; how many."""
        queued, after = 0, 0
        while batch := await self.store.local_recordings(after, 500):
            after = batch[-1].id
            for item in batch:
                here = await asyncio.to_thread(self.files.existing, item.path)
                if here is not None and await self.store.queue_upload(item.id, self.node):
                    queued += 1
        return queued

    async def run_forever(self) -> None:
        try:
            queued = await self.queue_local_files()
        except StorageError as exc:
            log.error("upload queue: cannot look for local recordings: %s", exc)
        else:
            if queued:
                log.info("queued %d local recording(s) for the object store", queued)
        while True:
            try:
                progressed = await self.run_once()
            except StorageError as exc:
                # The database itself failed: the queue is safe there; try again later.
                log.error("upload queue: %s", exc)
                progressed = False
            if progressed:
                continue
            wait = self.backoff_s if self.backoff_s > 0 else self.idle_poll_s
            self._wake.clear()
            if self.backoff_s > 0:
                await asyncio.sleep(wait)  # a store that is down is not woken early
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def run_once(self) -> bool:
        """One batch: True if it uploaded something and more may wait (go on at once),
        False if the queue is empty or the store is down (wait)."""
        self.depth = await self.store.upload_queue_depth(self.node)
        self._check_alarm()
        if self.depth == 0:
            self.backoff_s = 0.0
            return False
        pending = await self.store.pending_uploads(self.node, self.batch)
        done = 0
        for item in pending:
            try:
                await self._upload(item)
            except (StorageUnavailable, ChecksumMismatch) as exc:
                self.failures += 1
                self.backoff_s = min(
                    self.max_backoff_s, max(self.first_backoff_s, self.backoff_s * 2)
                )
                log.warning(
                    "upload of recording %d postponed %.0f s (%d waiting): %s",
                    item.id,
                    self.backoff_s,
                    self.depth - done,
                    exc,
                )
                self.depth = await self.store.upload_queue_depth(self.node)
                self._check_alarm()
                return False
            except (StorageError, OSError) as exc:
                # Nothing to send (no file anywhere) or a file that cannot be read: it
                # stays local, out of the queue, and the log says why.
                log.error("recording %d not uploaded; it stays local: %s", item.id, exc)
                await self.store.unqueue_upload(item.id)
                continue
            done += 1
        self.backoff_s = 0.0
        self.depth = await self.store.upload_queue_depth(self.node)
        self._check_alarm()
        return done > 0 and self.depth > 0

    async def _upload(self, item: PendingUpload) -> None:
        files = self.files
        if await asyncio.to_thread(files.existing, item.path) is None:
            # No local copy: a crash after the upload, before the row said so?
            info = await files.remote_info(item.path)
            if info is not None and (item.sha256 is None or info.sha256 in (None, item.sha256)):
                await self.store.mark_uploaded(item.id, info.sha256 or item.sha256 or "")
                log.info("recording %d was already in the object store", item.id)
                return
            raise NotFound(f"no local file and no object for {item.path}")
        try:
            info = await files.upload(item.path, item.sha256)
        except ChecksumMismatch:
            log.error(
                "recording %d: %s does not match its sealed SHA-256; uploading it as it is",
                item.id,
                item.path,
            )
            info = await files.upload(item.path, None)
        # Verified: the row first, then the local copy (a crash in between leaves a
        # local copy the next pass finds uploaded, never a row pointing at nothing).
        await self.store.mark_uploaded(item.id, info.sha256 or item.sha256 or "")
        try:
            await files.delete_local(item.path)
        except (OSError, InvalidValue) as exc:
            log.error("recording %d uploaded; its local copy stays: %s", item.id, exc)
        self.uploaded += 1
        log.info("recording %d uploaded to the object store (%d bytes)", item.id, info.size)

    def _check_alarm(self) -> None:
        if self.depth <= self.alarm_at:
            if self._alarmed_at is not None:
                log.warning("upload queue back to %d (alarm at %d)", self.depth, self.alarm_at)
            self._alarmed_at = None
            return
        now = self.monotonic()
        if self._alarmed_at is None or now - self._alarmed_at >= self.alarm_interval_s:
            self._alarmed_at = now
            log.error(
                "ALARM: %d recording(s) wait to be uploaded to the object store (limit %d);"
                " they are kept on the local disk until it takes them",
                self.depth,
                self.alarm_at,
            )
