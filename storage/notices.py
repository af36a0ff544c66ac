"""Each organisation's own legal notice on disk, and the record of which one is in force.

`NoticeFiles` owns the files, as `RecordingFiles` owns the recordings (a sibling owner
under the same storage directory): `<storage>/notices/<org id>/<sha256[:16]>.wav`, the
notice already converted to 8 kHz mono 16-bit PCM (`media.notice_upload`). A file is
named by its content, so a new upload is a new path: a media worker that cached the
previous notice by its path never plays a stale one. Writing is atomic (a temporary file,
fsync, rename). The previous notice stays beside the current one, for a call that was
set up with it a moment before the upload; older ones are deleted.

Which notice is in force is an organisation setting outside the product's keys
(`NOTICE_SETTING`, JSON: the file, the uploaded file's name, its length, when and by
whom); the announcement setting "uploaded" (`callrec.policy.ANNOUNCEMENT_UPLOADED`)
says that it is what callers hear. All methods here are blocking file-system calls:
async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import suppress
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from storage.errors import InvalidValue

__all__ = ["NOTICES_FOLDER", "NOTICE_SETTING", "NoticeFiles", "UploadedNotice"]

NOTICES_FOLDER: Final = "notices"
NOTICE_SETTING: Final = "uploaded_notice"
_FILE_NAME: Final = re.compile(r"[0-9a-f]{16}\.wav")
_KEPT: Final = 2  # the current notice and the one before it
_SHOWN_NAME: Final = re.compile(r"[^\w .()+-]")


@dataclass(frozen=True)
class UploadedNotice:
    """An organisation's uploaded notice: its `file` under the notices folder, the
    `name` it was uploaded as (for people), its length, when and by whom."""

    file: str
    name: str
    seconds: float
    uploaded_at: float
    uploaded_by: str

    def to_setting(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_setting(cls, text: str | None) -> UploadedNotice | None:
        """The stored record, or None if there is none or it is not one of ours."""
        if not text:
            return None
        try:
            data = json.loads(text)
            notice = cls(
                file=str(data["file"]),
                name=str(data["name"]),
                seconds=float(data["seconds"]),
                uploaded_at=float(data["uploaded_at"]),
                uploaded_by=str(data["uploaded_by"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return notice if _FILE_NAME.fullmatch(notice.file) else None


def shown_name(uploaded: str) -> str:
    """An uploaded file's name as the portal may show it: no folders, no control or
    markup characters, at most 80 characters."""
    # Some clients percent-encode the name in the form (aiohttp all of it, browsers
    # quotes and line breaks).
    base = unquote(uploaded).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SHOWN_NAME.sub("_", base).strip() or "notice.wav"
    return cleaned[:80]


class NoticeFiles:
    """The organisations' notice files under one storage directory."""

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = Path(storage_dir)
        self.notices_dir = self.storage_dir / NOTICES_FOLDER

    def folder(self, org_id: int) -> Path:
        if isinstance(org_id, bool) or not isinstance(org_id, int) or org_id <= 0:
            raise InvalidValue("org_id", f"invalid organisation id {org_id!r}")
        return self.notices_dir / str(org_id)

    def path(self, org_id: int, file: str) -> Path:
        """Where `org_id`'s notice `file` is; InvalidValue("file") for a name that is
        not one this class gives (no folders, no `..`)."""
        if not _FILE_NAME.fullmatch(file):
            raise InvalidValue("file", f"not a notice file name: {file!r}")
        return self.folder(org_id) / file

    def existing(self, org_id: int, file: str) -> Path | None:
        """The notice's file if its name is valid and it is there, else None."""
        try:
            path = self.path(org_id, file)
        except InvalidValue:
            return None
        return path if path.is_file() else None

    def remove_all(self, org_id: int) -> int:
        """Delete every notice of `org_id` (the organisation is being removed) and its
        folder; returns how many notices went."""
        folder = self.folder(org_id)
        if not folder.is_dir():
            return 0
        removed = 0
        for entry in folder.iterdir():
            if _FILE_NAME.fullmatch(entry.name) or entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
                removed += 1
        with suppress(OSError):  # not empty: something that is not ours stays
            folder.rmdir()
        return removed

    def save(self, org_id: int, wav: bytes) -> str:
        """Write a converted notice (atomically) and return its file name; the notices
        of `org_id` but this one and the one before it are deleted."""
        folder = self.folder(org_id)
        folder.mkdir(parents=True, exist_ok=True)
        file = sha256(wav).hexdigest()[:16] + ".wav"
        target = folder / file
        if not target.is_file():
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(wav)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        os.utime(target)  # the newest notice is the current one
        notices = sorted(
            (entry for entry in folder.iterdir() if _FILE_NAME.fullmatch(entry.name)),
            key=lambda entry: entry.stat().st_mtime_ns,
            reverse=True,
        )
        for old in notices[_KEPT:]:
            old.unlink(missing_ok=True)
        return file
