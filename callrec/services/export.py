"""Bulk download: one month of an organisation's recordings as a ZIP with a manifest.

Allowed only while the organisation's bulk-download switch is on, which the product
rules allow only with a retention of at least
`callrec.policy.BULK_DOWNLOAD_MIN_RETENTION_DAYS`. An export holds the recordings of
the organisation that ordered it and nothing else, and its link works only for that
organisation: the token's signature covers the organisation, and the portal serves the
ZIP only to a person logged in to it. The ZIP is written entry by entry with
streaming zipfile writes (each file copied in chunks through
`ZipFile.open(name, "w", force_zip64=True)`), so memory does not grow with the month, and
in a worker thread, so the event loop keeps relaying RTP meanwhile. `manifest.csv` lists
every recording's metadata and the SHA-256 of the bytes actually put in the ZIP.

The portal orders an export through `ExportService.request` (built in a background task
started by the `spawn` callable its owner hands in, then mailed as a signed link valid for
`callrec.policy.EXPORT_LINK_LIFETIME_S`) and checks mailed links with
`ExportService.verify_link`; the CLI awaits `build_export`. Links are
`<portal base url>/exports/download?token=...` where the token is an HMAC-SHA256 of the
export id, its organisation and the expiry time (`sign_download` / `verify_download`).
Where ZIPs go and which recording file is read: `RecordingFiles`. With an object store
the recordings are read from it, each streamed into the ZIP chunk by chunk (its reader
runs on the event loop; the ZIP is written in the worker thread), never copied whole
first. The ZIPs themselves stay on the local disk of the node that built them.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrec.config import Config
from callrec.policy import (
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    EXPORT_LINK_LIFETIME_S,
    SettingKey,
    bulk_download_allowed,
)
from callrec.services.mailer import (
    Mail,
    MailError,
    export_failed_mail,
    export_ready_mail,
    send_mail,
)
from callrec.services.presentation import Presentation, Presentations
from callrec.services.records import recording_file_name as entry_name
from callrec.services.retention import current_retention_days
from storage.database import Store
from storage.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from storage.files import RecordingFiles
from storage.models import ExportJob, OrgScope, RecordingListing, format_timestamp

__all__ = [
    "MANIFEST_COLUMNS",
    "ExportService",
    "MonthExport",
    "Spawn",
    "ZipSummary",
    "build_export",
    "check_bulk_download_allowed",
    "download_url",
    "entry_name",
    "export_status",
    "fail_interrupted_exports",
    "parse_month",
    "portal_secret",
    "sign_download",
    "verify_download",
]

log = logging.getLogger("callrec.export")

PORTAL_SECRET_SETTING = "portal_secret"
COPY_CHUNK_BYTES = 64 * 1024
MANIFEST_COLUMNS = (
    "id",
    "file",
    "call_started_at",
    "call_answered_at",
    "call_ended_at",
    "caller_ext",
    "caller_name",
    "callee_ext",
    "callee_name",
    "duration_s",
    "format",
    "channels",
    "sha256",
    "bytes",
    "retention_days",
    "expires_at",
    "segments",
    "integrity",
)
_NUMBER = re.compile(r"[0-9]{1,19}")
_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_TOKEN_CONTEXT = b"callrec export download v2\n"
_RECENT_EXPORTS = 100
_DEDUPLICATE_WITHIN_S = 6 * 3600.0
# Months and names when no time zone is given (the CLI's --month on a bare store, tests).
_UTC = Presentations().get("en", "UTC")


# -- months and names ------------------------------------------------------------------


def parse_month(month: str, presentation: Presentation | None = None) -> tuple[float, float]:
    """[start, end) in unix seconds of a "YYYY-MM" month in the presentation's time zone
    (UTC without one); raises InvalidValue."""
    match = _MONTH.fullmatch(month) if isinstance(month, str) else None
    if match is None:
        raise InvalidValue("month", f"invalid month {month!r}: expected YYYY-MM, e.g. 2024-05")
    return (presentation or _UTC).month_bounds(month)


# -- the ZIP (blocking; runs in a worker thread) -----------------------------------------


@dataclass
class ZipSummary:
    """What went into a month's ZIP. `missing`: ids whose file was gone (listed in the
    manifest, not in the ZIP); `mismatched`: ids whose bytes differ from the stored
    SHA-256."""

    files: int = 0
    bytes: int = 0
    missing: list[int] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)


class MonthExport:
    """Writes one month's recordings and `manifest.csv` to a ZIP file (blocking)."""

    def __init__(
        self,
        files: RecordingFiles,
        listings: Sequence[RecordingListing],
        *,
        built_at: float,
        presentation: Presentation | None = None,
    ) -> None:
        self.files = files
        self.listings = listings
        self.built_at = built_at
        # Entry names and ZIP times in local time (the manifest keeps ISO-8601 UTC).
        self.presentation = presentation or _UTC

    def write(self, target: Path) -> ZipSummary:
        """Write the ZIP to `target` atomically (a `.part` file renamed at the end)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        summary = ZipSummary()
        try:
            # The manifest is spooled to disk too: a month may hold many thousand rows.
            with (
                tempfile.TemporaryFile("w+b", dir=target.parent) as manifest,
                zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive,
            ):
                text = io.TextIOWrapper(manifest, encoding="utf-8", newline="")
                writer = csv.writer(text, lineterminator="\r\n")
                writer.writerow(MANIFEST_COLUMNS)
                for listing in self.listings:
                    name = entry_name(listing, self.presentation)
                    digest = self._add_file(archive, listing, name, summary)
                    writer.writerow(self._manifest_row(listing, name, digest, summary))
                text.flush()
                manifest.seek(0)
                info = zipfile.ZipInfo("manifest.csv", self.presentation.zip_time(self.built_at))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o444 << 16
                with archive.open(info, "w", force_zip64=True) as entry:
                    shutil.copyfileobj(manifest, entry, COPY_CHUNK_BYTES)
                text.detach()
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        summary.bytes = target.stat().st_size
        return summary

    def _add_file(
        self,
        archive: zipfile.ZipFile,
        listing: RecordingListing,
        name: str,
        summary: ZipSummary,
    ) -> tuple[str, int] | None:
        """Copy one recording into the ZIP in chunks; its (sha256, size) or None."""
        recording = listing.recording
        try:
            handle = self.files.open_for_copy(recording.path)
        except (FileNotFoundError, InvalidValue):
            log.error("export: recording %d: file %s is missing", recording.id, recording.path)
            summary.missing.append(recording.id)
            return None
        digest = hashlib.sha256()
        size = 0
        info = zipfile.ZipInfo(name, self.presentation.zip_time(recording.started_at))
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o444 << 16
        with handle, archive.open(info, "w", force_zip64=True) as entry:
            while chunk := handle.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                entry.write(chunk)
                size += len(chunk)
        summary.files += 1
        sha256 = digest.hexdigest()
        if recording.sha256 is not None and recording.sha256 != sha256:
            log.error("export: recording %d: SHA-256 differs from the stored one", recording.id)
            summary.mismatched.append(recording.id)
        return sha256, size

    @staticmethod
    def _manifest_row(
        listing: RecordingListing,
        name: str,
        digest: tuple[str, int] | None,
        summary: ZipSummary,
    ) -> list[str]:
        recording, call = listing.recording, listing.call
        if digest is None:
            integrity, file_name, sha256, size = "missing", "", recording.sha256 or "", ""
        else:
            file_name, (sha256, byte_count) = name, digest
            size = str(byte_count)
            if recording.sha256 is None:
                integrity = "unverified"
            else:
                integrity = "mismatch" if recording.id in summary.mismatched else "ok"
        return [
            str(recording.id),
            file_name,
            format_timestamp(call.started_at) or "",
            format_timestamp(call.answered_at) or "",
            format_timestamp(call.ended_at) or "",
            call.caller_ext or "",
            call.caller_name or "",
            call.callee_ext or "",
            call.callee_name or "",
            "" if recording.duration_s is None else f"{recording.duration_s:.3f}",
            recording.format,
            str(recording.channels),
            sha256,
            size,
            str(recording.retention_days),
            format_timestamp(recording.expires_at) or "",
            json.dumps([list(span) for span in recording.segments]),
            integrity,
        ]


# -- signed download links ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(secret: bytes, org_id: int, export_id: int, expires: int) -> bytes:
    message = _TOKEN_CONTEXT + f"{org_id}.{export_id}.{expires}".encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).digest()


def sign_download(secret: bytes, org_id: int, export_id: int, expires_at: float) -> str:
    """A URL-safe token `<id>.<expiry>.<HMAC-SHA256>` granting organisation `org_id`
    the download of one of its exports until `expires_at` (unix seconds)."""
    expires = int(expires_at)
    return f"{export_id}.{expires}.{_b64(_signature(secret, org_id, export_id, expires))}"


def verify_download(secret: bytes, token: str, now: float, org_id: int) -> int:
    """The export id of a valid, unexpired token signed for organisation `org_id`;
    raises InvalidValue("token") otherwise (also for another organisation's token)."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or not all(_NUMBER.fullmatch(part) for part in parts[:2]):
        raise InvalidValue("token", "invalid download link")
    export_id, expires = int(parts[0]), int(parts[1])
    expected = _b64(_signature(secret, org_id, export_id, expires))
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
        raise InvalidValue("token", "invalid download link")
    if now >= expires:
        raise InvalidValue("token", "download link expired")
    return export_id


def download_url(config: Config, token: str) -> str:
    """The link put in the mail: `<[portal] public_url>/exports/download?token=...`."""
    return f"{config.portal.base_url}/exports/download?token={token}"


async def portal_secret(store: Store, config: Config) -> bytes:
    """The link-signing key: `[portal] secret`, else a random one kept in the store
    (setting `portal_secret`) so links survive restarts."""
    if config.portal.secret is not None:
        return config.portal.secret.encode("utf-8")
    stored = await store.server_setting_or_default(PORTAL_SECRET_SETTING, secrets.token_hex(32))
    return stored.encode("ascii")


# -- exports in the store ----------------------------------------------------------------


async def check_bulk_download_allowed(store: Store, config: Config, org: OrgScope) -> int:
    """`org`'s retention in force if it may bulk download; raises Conflict (field
    `retention_days`) while the retention is too short, or (field `bulk_download`)
    while its switch is off."""
    days = await current_retention_days(store, config, org)
    if not bulk_download_allowed(days):
        raise Conflict(
            f"bulk download needs retention of {BULK_DOWNLOAD_MIN_RETENTION_DAYS} days"
            f" or more (now {days})",
            SettingKey.RETENTION_DAYS.value,
        )
    settings = config.recording_settings.with_stored(await store.org_settings(org))
    if not settings.bulk_download:
        raise Conflict(
            "bulk download is switched off; an admin switches it on in the settings",
            SettingKey.BULK_DOWNLOAD.value,
        )
    return days


async def export_status(store: Store, org: OrgScope, export_id: int) -> ExportJob | None:
    """`org`'s export (status queued|building|ready|failed|expired), None if unknown."""
    return await store.get_export(org, export_id)


async def build_export(
    store: Store,
    config: Config,
    org: OrgScope,
    month: str,
    *,
    requested_by: str,
    export_id: int | None = None,
    output: Path | None = None,
    clock: Callable[[], float] = time.time,
    presentation: Presentation | None = None,
    files: RecordingFiles | None = None,
) -> ExportJob:
    """Build the month's ZIP now (to `output`, default `<storage>/exports/<id>-<month>.zip`)
    and return the finished row, with `org`'s recordings only. Refused (Conflict) while
    `org` may not bulk download (`check_bulk_download_allowed`); a failed build is
    marked `failed` (with the details) and raised as StorageUnavailable. The month,
    the entry names and their
    times are in the `presentation`'s time zone (default: the one in force). `files`:
    the recording files (default: `[storage]`'s, opened and closed here)."""
    if files is None:
        own = RecordingFiles.from_config(config.storage)
        try:
            return await build_export(
                store,
                config,
                org,
                month,
                requested_by=requested_by,
                export_id=export_id,
                output=output,
                clock=clock,
                presentation=presentation,
                files=own,
            )
        finally:
            await own.close()
    if presentation is None:
        presentation = await Presentations().in_force(store, config, org)
    since, until = parse_month(month, presentation)
    await check_bulk_download_allowed(store, config, org)
    if export_id is None:
        export_id = await store.create_export(org, month, requested_by, clock())
    target = output if output is not None else files.export_zip(export_id, month)
    try:
        await store.update_export(export_id, "building")
        await files.ready()  # the object store's client, before the thread reads it
        listings = await store.export_listings(org, since, until)
        builder = MonthExport(files, listings, built_at=clock(), presentation=presentation)
        summary = await asyncio.to_thread(builder.write, target)
    except (OSError, StorageError, zipfile.LargeZipFile) as exc:
        error = f"export of {month} failed: {exc}"
        log.error("export %d: %s", export_id, error)
        await store.update_export(export_id, "failed", error=error, finished_at=clock())
        await store.audit(org, requested_by, "export.failed", f"export {export_id}", detail=error)
        # The row and the log keep the details; the raised message names no path.
        reason = exc.strerror if isinstance(exc, OSError) else getattr(exc, "message", str(exc))
        raise StorageUnavailable(f"export of {month} failed: {reason}") from exc
    problems = []
    if summary.missing:
        problems.append(f"{len(summary.missing)} file(s) missing: {summary.missing}")
    if summary.mismatched:
        problems.append(f"{len(summary.mismatched)} SHA-256 mismatch(es): {summary.mismatched}")
    stored_path = files.stored_export_path(target)
    finished_at = clock()
    await store.update_export(
        export_id,
        "ready",
        path=stored_path,
        bytes=summary.bytes,
        files=summary.files,
        error="; ".join(problems) or None,
        finished_at=finished_at,
    )
    await store.audit(
        org,
        requested_by,
        "export",
        f"export {export_id}",
        detail=f"month {month}: {summary.files} file(s), {summary.bytes} bytes -> {stored_path}",
        at=finished_at,
    )
    job = await store.get_export(org, export_id)
    assert job is not None
    return job


async def fail_interrupted_exports(store: Store, now: float) -> list[int]:
    """At start-up: exports (of any organisation) left queued or building by a previous
    process can never finish; mark them failed. Returns their ids."""
    interrupted: list[int] = []
    for job in await store.unfinished_exports():
        await store.update_export(
            job.id, "failed", error="interrupted by a restart; order it again", finished_at=now
        )
        interrupted.append(job.id)
    return interrupted


async def _build_and_mail(
    store: Store,
    config: Config,
    secret: bytes,
    org: OrgScope,
    month: str,
    requested_by: str,
    export_id: int,
    email: str | None,
    clock: Callable[[], float],
    presentations: Presentations,
    files: RecordingFiles,
) -> None:
    # The month is read, the files named and the mail written as the settings say now.
    presentation = await presentations.in_force(store, config, org)
    try:
        job = await build_export(
            store,
            config,
            org,
            month,
            requested_by=requested_by,
            export_id=export_id,
            clock=clock,
            presentation=presentation,
            files=files,
        )
    except StorageError as exc:
        if isinstance(exc, Conflict):
            # The retention setting dropped below the bulk threshold between order and build.
            await store.update_export(export_id, "failed", error=exc.message, finished_at=clock())
        if email is not None:
            mail = export_failed_mail(
                email, month=month, error=exc.message, presentation=presentation
            )
            await _mail_quietly(store, config, org, export_id, mail)
        return
    except Exception:
        log.exception("export %d: unexpected failure", export_id)
        await store.update_export(export_id, "failed", error="internal error", finished_at=clock())
        return
    if email is None or job.finished_at is None:
        return
    expires_at = job.finished_at + EXPORT_LINK_LIFETIME_S
    link = download_url(config, sign_download(secret, org.id, export_id, expires_at))
    mail = export_ready_mail(
        email,
        month=month,
        link=link,
        files=job.files or 0,
        size=job.bytes or 0,
        expires_at=expires_at,
        presentation=presentation,
    )
    await _mail_quietly(store, config, org, export_id, mail, job=job)


async def _mail_quietly(
    store: Store,
    config: Config,
    org: OrgScope,
    export_id: int,
    mail: Mail,
    *,
    job: ExportJob | None = None,
) -> None:
    """Send; a failure is logged and noted on the export, never raised."""
    try:
        await send_mail(config.smtp, mail)
    except MailError as exc:
        log.error("export %d: %s", export_id, exc)
        current = job or await store.get_export(org, export_id)
        if current is not None:
            note = f"mail not sent: {exc}"
            error = f"{current.error}; {note}" if current.error else note
            await store.update_export(export_id, current.status, error=error)
        return
    await store.audit(org, "export", "export.mailed", f"export {export_id}", detail=f"to {mail.to}")


# Starts a background task and returns it; `callrec serve` hands in its task group's.
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class ExportService:
    """Bulk download for the portal, bound to one store and config: orders builds (run
    as background tasks through `spawn`; without one, ordering is unavailable) and
    resolves the mailed links. `presentations` (with the catalogues) writes the mails in
    the language in force; without it they are English."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        spawn: Spawn | None,
        clock: Callable[[], float] = time.time,
        presentations: Presentations | None = None,
        files: RecordingFiles | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.presentations = presentations or Presentations()
        self.files = files if files is not None else RecordingFiles.from_config(config.storage)
        self.spawn = spawn
        self.clock = clock
        self._secret: bytes | None = None
        warning = config.portal.link_warning()
        if spawn is not None and warning is not None:
            # Built once as `callrec serve` starts its portal: said once, at start-up.
            log.warning("%s", warning)

    async def secret(self) -> bytes:
        """The link-signing key (`portal_secret`), read once."""
        if self._secret is None:
            self._secret = await portal_secret(self.store, self.config)
        return self._secret

    async def request(
        self,
        org: OrgScope,
        month: str,
        requested_by: str,
        email: str | None = None,
        *,
        address: str | None = None,
    ) -> int:
        """Order `org`'s month's ZIP: checks month (InvalidValue) and whether `org` may
        bulk download (Conflict),
        files a queued export (audited), builds it in the background and mails the
        signed link to `email`; without one, to the admin named `requested_by` (or
        "admin:<name>") if they have an address. Returns the export id at once."""
        spawn = self.spawn
        if spawn is None:
            raise StorageUnavailable("bulk export is not available in this process")
        parse_month(month)
        store, clock = self.store, self.clock
        await check_bulk_download_allowed(store, self.config, org)
        if email is None:
            admin = await store.get_admin(requested_by.removeprefix("admin:"))
            email = admin.email if admin is not None and admin.org_id == org.id else None
        for job in await store.list_exports(org, limit=_RECENT_EXPORTS):
            recent = job.requested_at > clock() - _DEDUPLICATE_WITHIN_S
            if job.month == month and job.status in ("queued", "building") and recent:
                # Ordering the same month again while it builds does not start a second
                # build: repeated clicks must not pile up ZIP builds on the disk.
                return job.id
        secret = await self.secret()
        export_id = await store.create_export(org, month, requested_by, clock())
        await store.audit(
            org,
            requested_by,
            "export.request",
            f"export {export_id}",
            address=address,
            detail=f"month {month}",
        )
        spawn(
            _build_and_mail(
                store,
                self.config,
                secret,
                org,
                month,
                requested_by,
                export_id,
                email,
                clock,
                self.presentations,
                self.files,
            )
        )
        return export_id

    async def link(self, org: OrgScope, export_id: int, expires_at: float) -> str:
        token = sign_download(await self.secret(), org.id, export_id, expires_at)
        return download_url(self.config, token)

    async def resolve_download(self, org: OrgScope, token: str) -> tuple[ExportJob, Path]:
        """`org`'s export and its ZIP for a download token; InvalidValue if the token is
        tampered with, expired or another organisation's, NotFound if the export is not
        (or no longer) ready."""
        export_id = verify_download(await self.secret(), token, self.clock(), org.id)
        job = await self.store.get_export(org, export_id)
        path = self.files.export_file(job) if job is not None else None
        if job is None or path is None:
            raise NotFound(f"export {export_id} is not available")
        return job, path

    async def verify_link(self, org: OrgScope, token: str) -> tuple[ExportJob, Path] | None:
        """The export and its ZIP if `token` is a valid link to a ready export of `org`,
        else None (the portal's `VerifyExportLink` hook)."""
        if not token:
            return None
        try:
            return await self.resolve_download(org, token)
        except (InvalidValue, NotFound):
            return None
