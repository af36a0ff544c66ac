"""Recording files and export ZIPs on disk: their layout, safe paths and deletion.

`RecordingFiles` is the one owner of the files under a storage directory; every other
module asks it rather than joining paths itself:

- layout: a recording is `<storage>/recordings/YYYY/MM/DD/<uuid>.<ext>` (UTC day of its
  start), stored in its row as the path relative to the storage directory
  (`recordings/YYYY/MM/DD/<uuid>.<ext>`); a month's export ZIP is
  `<storage>/exports/<id>-<YYYY-MM>.zip`;
- `resolve(relative)` is the one check on a stored path: anything that is absolute,
  climbs with `..` or (through a symlink) lands outside the recordings folder is refused
  with `InvalidValue("path")`, so a tampered row can never make callrec read or delete
  another file;
- `delete` removes a recording's file (the retention purge; nothing else deletes one);
  a read-only (sealed) file goes too: unlinking needs write access to the folder.

The file itself is written by `media.writer`, which is handed the absolute path
`new_recording` chose (media does not import storage). The writer also seals it as it
closes it (read-only, SHA-256 and size in its summary, which the recording manager
files): sealing needs the last bytes written, and the writer is the one that has them.
The plain methods are blocking file-system calls: async callers run them with
`asyncio.to_thread`.

Two backends behind this one interface. The local folder is the default. With an
object store (`objects`, a `storage.objects.S3Objects`: `[storage] objects =
"s3://bucket/prefix"`) a recording is still written here while its call lasts (crash-safe
as ever), then `upload` sends it with its SHA-256 and verifies it, and only then is the
local copy deleted (`delete_local`; `storage.uploads` drives that queue). Readers do not
care where a file is: `open_audio` (the portal: a local file, or the object streamed for
the client's Range), `open_for_copy` (the month's ZIP, in a thread) and
`delete_recording` (the purge) look on the local disk first, then in the object store.
A path's safety is checked the same way for both (`safe_relative`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import BinaryIO, Protocol

from callrec.policy import FORMATS
from storage.errors import InvalidValue, NotFound
from storage.models import ExportJob
from storage.objects import ObjectInfo, ObjectStream, S3Objects, S3Settings

__all__ = ["NewRecording", "RecordingFiles", "StorageValues"]

RECORDINGS_FOLDER = "recordings"
EXPORTS_FOLDER = "exports"
_EXTENSIONS = FORMATS  # the file extension is the recording format


@dataclass(frozen=True)
class NewRecording:
    """Where a new recording goes: `relative` (stored in its row) and `absolute`."""

    relative: str
    absolute: Path


class StorageValues(Protocol):
    """What `RecordingFiles.from_config` reads (`callrec.config.StorageConfig`)."""

    @property
    def dir(self) -> Path: ...
    @property
    def objects(self) -> str | None: ...
    @property
    def s3_endpoint(self) -> str | None: ...
    @property
    def s3_region(self) -> str | None: ...
    @property
    def s3_access_key(self) -> str | None: ...
    @property
    def s3_secret_key(self) -> str | None: ...


class RecordingFiles:
    """The recording files and export ZIPs under one storage directory, and the
    recordings' objects when an object store is configured."""

    def __init__(self, storage_dir: Path, objects: S3Objects | None = None) -> None:
        self.storage_dir = Path(storage_dir)
        self.recordings_dir = self.storage_dir / RECORDINGS_FOLDER
        self.exports_dir = self.storage_dir / EXPORTS_FOLDER
        self.objects = objects

    @classmethod
    def from_config(cls, storage: StorageValues) -> RecordingFiles:
        """The local folder, with the object store `[storage] objects` names if any."""
        if storage.objects is None:
            return cls(storage.dir)
        if importlib.util.find_spec("aiobotocore") is None:
            raise InvalidValue(
                "objects",
                "[storage] objects needs aiobotocore: pip install 'callrec[cluster]'",
            )
        settings = S3Settings.parse(
            storage.objects,
            endpoint=storage.s3_endpoint,
            region=storage.s3_region,
            access_key=storage.s3_access_key,
            secret_key=storage.s3_secret_key,
        )
        return cls(storage.dir, S3Objects(settings))

    @property
    def remote(self) -> bool:
        """True when finished recordings go to an object store."""
        return self.objects is not None

    async def ready(self) -> None:
        """Connect to the object store (if any) on this event loop now, so that worker
        threads can read objects through it (`open_for_copy`)."""
        if self.objects is not None:
            await self.objects.ready()

    async def close(self) -> None:
        if self.objects is not None:
            await self.objects.close()

    # -- recordings ------------------------------------------------------------------------

    def new_recording(self, extension: str, at: float) -> NewRecording:
        """A fresh, unused name for a recording started at `at` (unix seconds)."""
        if extension not in _EXTENSIONS:
            raise InvalidValue(
                "format", f"recording format {extension!r} is not one of {', '.join(_EXTENSIONS)}"
            )
        day = time.strftime("%Y/%m/%d", time.gmtime(at))
        relative = f"{RECORDINGS_FOLDER}/{day}/{uuid.uuid4()}.{extension}"
        return NewRecording(relative, self.storage_dir / relative)

    def resolve(self, relative: str) -> Path:
        """The absolute file of a recording row's `path`; InvalidValue("path") unless it
        lies inside the recordings folder (no absolute path, no `..`, no symlink out)."""
        base = self.recordings_dir.resolve()
        candidate = None
        if isinstance(relative, str) and relative and "\x00" not in relative:
            # An absolute `relative` replaces the base in the join; resolve() undoes `..`
            # and symlinks: whatever the trick, it ends up outside `base`.
            candidate = (self.storage_dir / relative).resolve()
        if candidate is None or candidate == base or not candidate.is_relative_to(base):
            raise InvalidValue(
                "path", f"refusing a recording path outside the recordings folder: {relative!r}"
            )
        return candidate

    def existing(self, relative: str) -> Path | None:
        """The recording's file if the path is safe and the file is there, else None."""
        try:
            path = self.resolve(relative)
        except InvalidValue:
            return None
        return path if path.is_file() else None

    def delete(self, relative: str) -> bool:
        """Delete a recording's file: True if deleted, False if it was already missing.
        Raises InvalidValue for an unsafe path, OSError if the file cannot go."""
        try:
            os.unlink(self.resolve(relative))
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def safe_relative(relative: str) -> str:
        """`relative` if it names a file inside the recordings folder by its text alone
        (what an object key may be): InvalidValue("path") otherwise."""
        pure = PurePosixPath(relative) if isinstance(relative, str) else None
        if (
            pure is None
            or not relative
            or "\x00" in relative
            or "\\" in relative
            or pure.is_absolute()
            or ".." in pure.parts
            or len(pure.parts) < 2
            or pure.parts[0] != RECORDINGS_FOLDER
            or str(pure) != relative
        ):
            raise InvalidValue(
                "path", f"refusing a recording path outside the recordings folder: {relative!r}"
            )
        return relative

    # -- either backend ----------------------------------------------------------------------

    async def open_audio(self, relative: str, byte_range: str | None) -> Path | ObjectStream:
        """What to serve for a recording: its local file (the caller serves ranges), or
        its object streamed for `byte_range` (an HTTP Range value, passed to the store).
        NotFound if neither has it; InvalidValue for an unsafe path;
        `storage.objects.RangeNotSatisfiable` for a range outside the object."""
        local = await asyncio.to_thread(self.existing, relative)
        if local is not None:
            return local
        if self.objects is None:
            raise NotFound(f"no file for {relative}")
        return await self.objects.get(self.safe_relative(relative), byte_range)

    def open_for_copy(self, relative: str) -> BinaryIO:
        """A blocking reader of a recording's bytes, local or remote, for a worker thread
        (the month's ZIP). FileNotFoundError if neither backend has it."""
        local = self.existing(relative)
        if local is not None:
            try:
                return local.open("rb")
            except FileNotFoundError:
                pass  # uploaded and deleted meanwhile: read the object
        if self.objects is None:
            raise FileNotFoundError(relative)
        return self.objects.open_sync(self.safe_relative(relative))

    async def delete_recording(self, relative: str) -> bool:
        """Delete a recording wherever it is (the local file, the object): True if
        something was deleted, False if it was already gone. InvalidValue for an unsafe
        path; OSError or a StorageError if it cannot go."""
        deleted = False
        try:
            deleted = await asyncio.to_thread(self.delete, relative)
        except InvalidValue:
            if self.objects is None:
                raise
        if self.objects is not None:
            deleted = await self.objects.delete(self.safe_relative(relative)) or deleted
        return deleted

    async def upload(self, relative: str, sha256: str | None) -> ObjectInfo:
        """Send a finished recording to the object store and verify it there (the local
        copy stays: `delete_local` once the upload is recorded)."""
        if self.objects is None:
            raise InvalidValue("objects", "no object store is configured")
        path = self.resolve(relative)
        return await self.objects.put_file(self.safe_relative(relative), path, sha256)

    async def remote_info(self, relative: str) -> ObjectInfo | None:
        """The object of a recording (size, SHA-256), None if the store has none."""
        if self.objects is None:
            return None
        return await self.objects.head(self.safe_relative(relative))

    async def delete_local(self, relative: str) -> bool:
        """Delete the local copy of an uploaded recording."""
        return await asyncio.to_thread(self.delete, relative)

    # -- exports ---------------------------------------------------------------------------

    def export_zip(self, export_id: int, month: str) -> Path:
        """Where the server builds a month's ZIP."""
        return self.exports_dir / f"{export_id}-{month}.zip"

    def stored_export_path(self, target: Path) -> str:
        """What an export row keeps: relative to the storage folder, or absolute for a
        ZIP the CLI wrote elsewhere (the operator's file)."""
        try:
            return str(target.relative_to(self.storage_dir))
        except ValueError:
            return str(target.resolve())

    def export_file(self, job: ExportJob) -> Path | None:
        """The ZIP of a ready export built by the server (in the exports folder and
        present), else None."""
        if job.status != "ready" or job.path is None:
            return None
        path = self._server_export(job.path)
        return path if path is not None and path.is_file() else None

    def delete_export(self, job: ExportJob) -> bool:
        """Delete an export's ZIP if the server built it (in the exports folder); a ZIP
        the CLI wrote elsewhere is the operator's file and stays. True if deleted."""
        path = self._server_export(job.path) if job.path is not None else None
        if path is None:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def _server_export(self, stored: str) -> Path | None:
        pure = PurePath(stored)
        if pure.is_absolute() or ".." in pure.parts:
            return None
        path = self.storage_dir / pure
        return path if path.parent == self.exports_dir else None
