"""Exports: one month's bulk-download ZIP per row, from `queued` through `building` to
`ready` or `failed`, then `expired` when its link has lapsed, and the recordings a
month's export takes. (The ZIP file's location: `storage.files.RecordingFiles`.)

An export is one organisation's (`org_id`) and holds only its recordings; reading one
takes the organisation."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.connection import MAX_ROW_ID, Database
from storage.errors import InvalidValue, NotFound
from storage.models import EXPORT_STATUSES, ExportJob, OrgScope, RecordingListing
from storage.rows import CALL_COLUMNS_ALIASED, RECORDING_COLUMNS_R, listing_from_row

__all__ = ["Exports"]

_EXPORT_COLUMNS = (
    "id, month, requested_by, requested_at, status, path, bytes, files, error, finished_at, org_id"
)
_EXPORT_FIELDS = ("path", "bytes", "files", "error", "finished_at")


def _export_from_row(row: sqlite3.Row) -> ExportJob:
    return ExportJob(
        id=int(row["id"]),
        month=str(row["month"]),
        requested_by=str(row["requested_by"]),
        requested_at=float(row["requested_at"]),
        status=str(row["status"]),
        path=row["path"],
        bytes=row["bytes"],
        files=row["files"],
        error=row["error"],
        finished_at=row["finished_at"],
        org_id=int(row["org_id"]) if row["org_id"] is not None else 0,
    )


class Exports:
    """Export rows."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def export_listings(
        self, org: OrgScope, since: float, until: float
    ) -> list[RecordingListing]:
        """`org`'s exportable recordings (complete, recovered or partial) with since <=
        started_at < until, oldest first, with their calls."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {RECORDING_COLUMNS_R}, {CALL_COLUMNS_ALIASED} FROM recordings r"
                " JOIN calls c ON c.id = r.call_id"
                " WHERE r.org_id = ? AND c.org_id = ? AND r.started_at >= ? AND r.started_at < ?"
                " AND r.status IN ('complete', 'recovered', 'partial')"
                " ORDER BY r.started_at, r.id",
                (org.id, org.id, since, until),
            )
        return [listing_from_row(row) for row in rows]

    async def create_export(
        self, org: OrgScope, month: str, requested_by: str, requested_at: float
    ) -> int:
        """File a `queued` export of `org`'s `month` (YYYY-MM); returns its id."""
        async with self.database.transaction() as session:
            _, export_id = await session.execute(
                "INSERT INTO exports (org_id, month, requested_by, requested_at, status)"
                " VALUES (?, ?, ?, ?, 'queued')",
                (org.id, month, requested_by, requested_at),
            )
        assert export_id is not None
        return export_id

    async def update_export(self, export_id: int, status: str, **fields: Any) -> None:
        """Set an export's status and any of path, bytes, files, error, finished_at."""
        if status not in EXPORT_STATUSES:
            raise InvalidValue("status", f"invalid export status {status!r}")
        unknown = sorted(set(fields) - set(_EXPORT_FIELDS))
        if unknown:
            raise InvalidValue(unknown[0], f"unknown export field(s): {', '.join(unknown)}")
        assignments = "".join(f", {name} = ?" for name in fields)
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                f"UPDATE exports SET status = ?{assignments} WHERE id = ?",
                (status, *fields.values(), export_id),
            )
        if not changed:
            raise NotFound(f"unknown export id {export_id}")

    async def get_export(self, org: OrgScope, export_id: int) -> ExportJob | None:
        """One export of `org`, or None."""
        if not 0 < export_id <= MAX_ROW_ID:
            return None
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE id = ? AND org_id = ?",
                (export_id, org.id),
            )
        return _export_from_row(row) if row is not None else None

    async def list_exports(
        self, org: OrgScope, limit: int = 100, offset: int = 0
    ) -> list[ExportJob]:
        """`org`'s exports newest first."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE org_id = ?"
                " ORDER BY requested_at DESC, id DESC LIMIT ? OFFSET ?",
                (org.id, limit, offset),
            )
        return [_export_from_row(row) for row in rows]

    async def unfinished_exports(self) -> list[ExportJob]:
        """Every organisation's exports still queued or building (start-up: a previous
        process left them and they can never finish)."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE status IN ('queued', 'building')"
                " ORDER BY id"
            )
        return [_export_from_row(row) for row in rows]

    async def exports_finished_before(self, before: float) -> list[ExportJob]:
        """Ready or failed exports that finished before `before` (their files may go)."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_EXPORT_COLUMNS} FROM exports"
                " WHERE status IN ('ready', 'failed') AND finished_at < ? ORDER BY id",
                (before,),
            )
        return [_export_from_row(row) for row in rows]
