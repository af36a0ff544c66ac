"""Retention: how long recordings are kept, and the purge that deletes expired files.

A recording gets `retention_days` (and so `expires_at`) when it is filed, from its
organisation's setting in force then; changing the setting later changes only new
recordings. The purge deletes the file of every recording whose `expires_at` is at or
before `now` and marks
its row `purged` (metadata kept) with an audit entry. Nothing else deletes a recording.

The files themselves belong to `storage.files.RecordingFiles`: the purge asks it to
delete each one wherever it is, the local file or the object in the object store (it
refuses any path outside the recordings folder), and export expiry asks it to delete
the ZIPs the server built. An object store that is down fails those recordings'
deletion; they stay unpurged and the next pass tries again.

The purge is the platform's: one pass covers every organisation (each recording
carries its own expiry), and each purge is audited in the recording's organisation.

`purge_expired` takes `now` from its caller, so tests drive it on a fake clock;
`RetentionTask` runs it periodically inside `callrec serve`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from callrec.config import Config
from callrec.policy import (
    EXPORT_LINK_LIFETIME_S,
    InvalidRetention,
    PolicyError,
    RecordingSettings,
    SettingKey,
    check_settings,
    parse_retention_days,
)
from storage.database import Store
from storage.errors import InvalidValue, StorageError
from storage.files import RecordingFiles
from storage.models import OrgScope, Recording

__all__ = [
    "RETENTION_SETTING",
    "ExpiredExport",
    "PurgeFailure",
    "PurgeReport",
    "PurgedRecording",
    "RetentionTask",
    "current_retention_days",
    "expire_exports",
    "purge_expired",
    "set_retention_days",
    "validate_retention_days",
]

log = logging.getLogger("callrec.retention")

RETENTION_SETTING = SettingKey.RETENTION_DAYS.value
PURGE_ACTOR = "retention"


def validate_retention_days(value: object) -> int:
    """The retention in days if `value` (an int or a string of digits) is allowed
    (`callrec.policy.parse_retention_days`), as an InvalidValue otherwise."""
    try:
        return parse_retention_days(value)
    except InvalidRetention as exc:
        raise InvalidValue(exc.field, exc.message) from None


async def current_retention_days(store: Store, config: Config, org: OrgScope) -> int:
    """The retention `org`'s new recordings get: its stored setting, else `[retention]
    default_days`."""
    stored = await store.get_org_setting(org, RETENTION_SETTING)
    if stored is None:
        return config.retention.default_days
    try:
        return validate_retention_days(stored)
    except InvalidValue:
        log.warning(
            "setting %s=%r is invalid; using the default %d days",
            RETENTION_SETTING,
            stored,
            config.retention.default_days,
        )
        return config.retention.default_days


async def set_retention_days(
    store: Store, org: OrgScope, days: object, *, actor: str, address: str | None = None
) -> int:
    """Change `org`'s retention for new recordings (existing ones keep theirs); audited.
    Refused (InvalidValue, field bulk_download) below the bulk-download threshold while
    bulk download is on."""
    checked = validate_retention_days(days)
    stored = await store.org_settings(org)
    after = RecordingSettings().with_stored({**stored, RETENTION_SETTING: str(checked)})
    try:
        check_settings(after)
    except PolicyError as exc:
        raise InvalidValue(exc.field, exc.message) from None
    previous = stored.get(RETENTION_SETTING)
    await store.set_org_setting(org, RETENTION_SETTING, str(checked))
    await store.audit(
        org,
        actor,
        "settings.retention",
        RETENTION_SETTING,
        address=address,
        detail=f"{previous or 'default'} -> {checked} days (new recordings only)",
    )
    return checked


@dataclass(frozen=True)
class PurgedRecording:
    """A recording the purge deleted; `file_found` is False if its file was missing."""

    id: int
    path: str
    expires_at: float
    file_found: bool


@dataclass(frozen=True)
class PurgeFailure:
    """An expired recording whose file could not be deleted; it stays unpurged."""

    id: int
    path: str
    error: str


@dataclass
class PurgeReport:
    """What one purge pass did."""

    now: float
    purged: list[PurgedRecording] = field(default_factory=list)
    failed: list[PurgeFailure] = field(default_factory=list)

    @property
    def missing(self) -> list[PurgedRecording]:
        return [item for item in self.purged if not item.file_found]


async def _delete_files(files: RecordingFiles, rows: Sequence[Recording]) -> list[bool | str]:
    """Per row: True deleted, False already missing, or why it could not be deleted."""
    outcomes: list[bool | str] = []
    for row in rows:
        try:
            outcomes.append(await files.delete_recording(row.path))
        except StorageError as exc:
            outcomes.append(exc.message)
        except OSError as exc:
            outcomes.append(str(exc))
    return outcomes


async def purge_expired(
    store: Store, files: RecordingFiles, now: float, *, limit: int | None = None
) -> PurgeReport:
    """Delete the files of recordings expired at `now` (at most `limit` of them) and
    mark their rows purged, one audit entry each."""
    report = PurgeReport(now)
    rows = await store.expired_recordings(now, limit)
    if not rows:
        return report
    outcomes = await _delete_files(files, rows)
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, str):
            log.error("recording %d: cannot delete %s: %s", row.id, row.path, outcome)
            report.failed.append(PurgeFailure(row.id, row.path, outcome))
            continue
        if not outcome:
            log.warning("recording %d: file %s was already missing", row.id, row.path)
        detail = (
            f"expired {row.retention_days} days after start; "
            + ("file deleted" if outcome else "file was already missing")
            + f": {row.path}"
        )
        marked = await store.mark_recording_purged(row.id, at=now, actor=PURGE_ACTOR, detail=detail)
        if marked:
            report.purged.append(PurgedRecording(row.id, row.path, row.expires_at, outcome))
    if report.purged:
        log.info("purged %d expired recording(s)", len(report.purged))
    return report


@dataclass(frozen=True)
class ExpiredExport:
    """An export whose ZIP (and link) outlived `EXPORT_LINK_LIFETIME_S`."""

    id: int
    path: str | None


async def expire_exports(store: Store, files: RecordingFiles, now: float) -> list[ExpiredExport]:
    """Delete export ZIPs built more than the link lifetime ago (only those the server
    built: a CLI export written elsewhere is the operator's file); mark them expired."""
    expired: list[ExpiredExport] = []
    for job in await store.exports_finished_before(now - EXPORT_LINK_LIFETIME_S):
        if job.status == "ready":
            await asyncio.to_thread(files.delete_export, job)
        await store.update_export(job.id, "expired")
        await store.audit(
            OrgScope(job.org_id, ""), PURGE_ACTOR, "export.expired", f"export {job.id}", at=now
        )
        expired.append(ExpiredExport(job.id, job.path))
    return expired


class RetentionTask:
    """Runs the purge (and export expiry) every `interval_s` inside `callrec serve`.

    Each pass handles at most `batch` recordings, so one pass stays short; a backlog
    drains over the following passes."""

    def __init__(
        self,
        store: Store,
        files: RecordingFiles,
        *,
        interval_s: float = 3600.0,
        batch: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.files = files
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self.last_report: PurgeReport | None = None
        self.passes = 0

    async def run_once(self) -> PurgeReport:
        """One pass now."""
        now = self.clock()
        report = await purge_expired(self.store, self.files, now, limit=self.batch)
        await expire_exports(self.store, self.files, now)
        self.last_report = report
        self.passes += 1
        return report

    async def run_forever(self) -> None:
        """A pass now and then one every `interval_s`, until cancelled (`callrec serve`
        runs it in its task group; a pass in progress ends between two recordings, its
        thread finishing its current batch)."""
        while True:
            try:
                await self.run_once()
            except (StorageError, OSError) as exc:
                # A locked or full disk must not end retention for good: retry next pass.
                log.error("retention pass failed: %s", exc)
            except Exception:
                log.exception("retention pass failed unexpectedly")
            await asyncio.sleep(self.interval_s)
