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
All methods here are blocking file-system calls: async callers run them with
`asyncio.to_thread`.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath

from callrec.policy import FORMATS
from storage.errors import InvalidValue
from storage.models import ExportJob

__all__ = ["NewRecording", "RecordingFiles"]

RECORDINGS_FOLDER = "recordings"
EXPORTS_FOLDER = "exports"
_EXTENSIONS = FORMATS  # the file extension is the recording format


@dataclass(frozen=True)
class NewRecording:
    """Where a new recording goes: `relative` (stored in its row) and `absolute`."""

    relative: str
    absolute: Path


class RecordingFiles:
    """The recording files and export ZIPs under one storage directory."""

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = Path(storage_dir)
        self.recordings_dir = self.storage_dir / RECORDINGS_FOLDER
        self.exports_dir = self.storage_dir / EXPORTS_FOLDER

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
