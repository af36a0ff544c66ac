"""Recordings: one row per call's recording file, its integrity data, its on-demand
toggles and its retention (the file itself belongs to `storage.files.RecordingFiles`).

A recording belongs to its call's organisation (`org_id`, copied from the call when it
is filed); the reads the portal and the CLI use take that organisation. The platform's
own passes (start-up repair, the retention purge) read across organisations.

A row is filed `recording` when recording starts and finished as complete, recovered,
error or unrecordable. Its `expires_at` follows from the retention in force when it was
filed; only the retention purge marks it `purged` (metadata kept), never before expiry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.audit import append_audit
from storage.calls import own_call_condition, party_condition
from storage.connection import MAX_ROW_ID, Database, started_between
from storage.errors import Conflict, InvalidValue, NotFound
from storage.models import RECORDING_STATUSES, OrgScope, Recording, RecordingListing
from storage.rows import (
    CALL_COLUMNS_ALIASED,
    RECORDING_COLUMNS,
    RECORDING_COLUMNS_R,
    listing_from_row,
    recording_from_row,
)
from storage.search import search_condition

__all__ = ["MAX_RETENTION_DAYS", "RecordedSpan", "Recordings", "spans_from_toggles"]

# A row's own bound (ten years); the product's retention bounds are `callrec.policy`'s.
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class RecordedSpan:
    """A stretch of a call that was recorded, in unix seconds; `end` is None while it is
    still being recorded."""

    start: float
    end: float | None


def spans_from_toggles(
    toggles: Iterable[tuple[float, str]], started_at: float, ended_at: float | None
) -> list[RecordedSpan]:
    """What was recorded, from a recording's toggles ((at, "start"|"stop") in order): each
    start to the next stop, the last start to the recording's end. Without toggles (mode
    `always`) the whole recording is one span."""
    spans: list[RecordedSpan] = []
    opened: float | None = None
    seen = False
    for at, action in toggles:
        seen = True
        if action == "start" and opened is None:
            opened = at
        elif action == "stop" and opened is not None:
            spans.append(RecordedSpan(opened, at))
            opened = None
    if not seen:
        return [RecordedSpan(started_at, ended_at)]
    if opened is not None:
        spans.append(RecordedSpan(opened, ended_at))
    return spans


def _recording_scope(org: OrgScope, scope_ext: str | None) -> tuple[str, list[Any]]:
    """SQL limiting recordings to those of the calls `scope_ext`'s user took part in
    (the owner of a recording is always one of its call's users)."""
    if scope_ext is None:
        return "", []
    condition, params = own_call_condition("c", org, scope_ext)
    return f" AND {condition}", params


class Recordings:
    """Recording rows. `node`: as `Calls.node` (the node whose recordings the start-up
    repair looks at)."""

    database: Database
    node: str | None = None

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create_recording(
        self,
        *,
        call_id: int,
        path: str,
        format: str,
        channels: int,
        sample_rate: int,
        started_at: float,
        retention_days: int,
        owner_ext: str | None = None,
        codec: str | None = None,
    ) -> int:
        """File a recording that has started (status `recording`); returns its id.
        `expires_at` follows from `retention_days`, counted from the start."""
        if not 1 <= retention_days <= MAX_RETENTION_DAYS:
            raise InvalidValue(
                "retention_days",
                f"retention_days must be 1..{MAX_RETENTION_DAYS}, got {retention_days}",
            )
        expires_at = started_at + retention_days * 86400
        try:
            async with self.database.transaction() as session:
                # The organisation is the call's: a recording cannot be filed across.
                inserted, recording_id = await session.execute(
                    "INSERT INTO recordings (org_id, call_id, owner_ext, path, format, channels,"
                    " sample_rate, codec, status, started_at, retention_days, expires_at)"
                    " SELECT c.org_id, ?, ?, ?, ?, ?, ?, ?, 'recording', ?, ?, ?"
                    " FROM calls c WHERE c.id = ?",
                    (
                        call_id,
                        owner_ext,
                        path,
                        format,
                        channels,
                        sample_rate,
                        codec,
                        started_at,
                        retention_days,
                        expires_at,
                        call_id,
                    ),
                )
        except Conflict as exc:
            # A path already filed.
            raise Conflict(f"cannot file recording {path!r}: {exc.message}", "path") from exc
        if not inserted or recording_id is None:
            raise Conflict(f"cannot file recording {path!r}: unknown call id {call_id}", "path")
        return recording_id

    async def finish_recording(
        self,
        recording_id: int,
        *,
        status: str,
        ended_at: float,
        duration_s: float | None = None,
        segments: Sequence[tuple[float, float]] = (),
        sha256: str | None = None,
        size: int | None = None,
        error: str | None = None,
        codec: str | None = None,
    ) -> None:
        """Record how a recording ended: complete, recovered, error or unrecordable."""
        if status not in RECORDING_STATUSES or status in ("recording", "purged"):
            raise InvalidValue("status", f"cannot finish a recording as {status!r}")
        segments_json = json.dumps([[round(a, 3), round(b, 3)] for a, b in segments])
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE recordings SET status = ?, ended_at = ?, duration_s = ?,"
                " segments_json = ?, sha256 = ?, bytes = ?, error = ?,"
                " codec = COALESCE(?, codec) WHERE id = ?",
                (
                    status,
                    ended_at,
                    duration_s,
                    segments_json,
                    sha256,
                    size,
                    error,
                    codec,
                    recording_id,
                ),
            )
            if changed:
                await session.execute(
                    "UPDATE calls SET recorded = 1 WHERE id ="
                    " (SELECT call_id FROM recordings WHERE id = ?)",
                    (recording_id,),
                )
        if not changed:
            raise NotFound(f"unknown recording id {recording_id}")

    async def get_recording(self, org: OrgScope, recording_id: int) -> Recording | None:
        """One recording of `org`, or None."""
        if not 0 < recording_id <= MAX_ROW_ID:
            return None
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = ? AND org_id = ?",
                (recording_id, org.id),
            )
        return recording_from_row(row) if row is not None else None

    async def recordings_with_status(self, status: str) -> list[Recording]:
        """Recordings in one status, oldest first (e.g. `recording` after a crash), of
        every organisation: the platform's start-up repair. With a `node` (the store of
        `callrec serve` on a store nodes share), only those of that node's calls and of
        calls of no node: another node's recordings in progress are not this one's to
        repair, and their files are not on its disk."""
        node = self.node
        async with self.database.read() as session:
            if node is None:
                rows = await session.all(
                    f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE status = ?"
                    " ORDER BY started_at, id",
                    (status,),
                )
            else:
                rows = await session.all(
                    f"SELECT {RECORDING_COLUMNS_R} FROM recordings r JOIN calls c"
                    " ON c.id = r.call_id WHERE r.status = ? AND (c.node = ? OR c.node IS NULL)"
                    " ORDER BY r.started_at, r.id",
                    (status, node),
                )
        return [recording_from_row(row) for row in rows]

    async def list_recordings(
        self,
        org: OrgScope,
        limit: int = 100,
        offset: int = 0,
        *,
        since: float | None = None,
        until: float | None = None,
        owner_ext: str | None = None,
        call_id: int | None = None,
    ) -> list[RecordingListing]:
        """Recordings with their call, newest first; since <= started_at < until."""
        if limit < 0 or offset < 0:
            raise InvalidValue(
                "limit" if limit < 0 else "offset", "limit and offset must not be negative"
            )
        conditions, params = started_between("r.started_at", since, until)
        conditions.insert(0, "r.org_id = ?")
        params.insert(0, org.id)
        if owner_ext is not None:
            conditions.append("r.owner_ext = ?")
            params.append(owner_ext)
        if call_id is not None:
            conditions.append("r.call_id = ?")
            params.append(call_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {RECORDING_COLUMNS_R}, {CALL_COLUMNS_ALIASED} FROM recordings r"
                f" JOIN calls c ON c.id = r.call_id{where}"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return [listing_from_row(row) for row in rows]

    async def add_recording_toggle(
        self, recording_id: int, at: float, action: str, method: str
    ) -> None:
        """Log an on-demand start/stop of a recording and how it was asked for."""
        if action not in ("start", "stop"):
            raise InvalidValue("action", f"toggle action must be start or stop, got {action!r}")
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO recording_toggles (recording_id, at, action, method)"
                " VALUES (?, ?, ?, ?)",
                (recording_id, at, action, method),
            )

    async def recorded_spans(
        self, org: OrgScope, recordings: Sequence[Recording]
    ) -> dict[int, list[RecordedSpan]]:
        """The recorded spans of some of `org`'s recordings (`spans_from_toggles`), by
        recording id, in one read; another organisation's recordings get none."""
        wanted = {recording.id: recording for recording in recordings}
        toggles: dict[int, list[tuple[float, str]]] = {key: [] for key in wanted}
        if wanted:
            marks = ", ".join("?" for _ in wanted)
            async with self.database.read() as session:
                rows = await session.all(
                    "SELECT t.recording_id, t.at, t.action FROM recording_toggles t"
                    " JOIN recordings r ON r.id = t.recording_id"
                    f" WHERE r.org_id = ? AND t.recording_id IN ({marks})"
                    " ORDER BY t.recording_id, t.at, t.id",
                    [org.id, *wanted],
                )
            for row in rows:
                toggles[int(row["recording_id"])].append((float(row["at"]), str(row["action"])))
        return {
            key: spans_from_toggles(toggles[key], recording.started_at, recording.ended_at)
            for key, recording in wanted.items()
        }

    async def recording_toggles(self, recording_id: int) -> list[tuple[float, str, str]]:
        """(at, action, method) of each toggle of a recording, in order."""
        async with self.database.read() as session:
            rows = await session.all(
                "SELECT at, action, method FROM recording_toggles WHERE recording_id = ?"
                " ORDER BY at, id",
                (recording_id,),
            )
        return [(float(r["at"]), str(r["action"]), str(r["method"])) for r in rows]

    # -- retention -------------------------------------------------------------------------

    async def expired_recordings(self, now: float, limit: int | None = None) -> list[Recording]:
        """Recordings whose `expires_at <= now` and whose file is still kept, oldest
        expiry first. A row still `recording` is left alone: its file is open."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {RECORDING_COLUMNS} FROM recordings"
                " WHERE expires_at <= ? AND status NOT IN ('purged', 'recording')"
                " ORDER BY expires_at, id LIMIT ?",
                (now, -1 if limit is None else limit),
            )
        return [recording_from_row(row) for row in rows]

    async def mark_recording_purged(
        self, recording_id: int, *, at: float, actor: str, detail: str | None = None
    ) -> bool:
        """Mark an expired recording `purged` (metadata kept) and audit it, atomically.

        Returns False, changing nothing, if the row is unknown, already purged or not
        expired at `at` (so nothing unexpired can ever be marked)."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE recordings SET status = 'purged', purged_at = ?"
                " WHERE id = ? AND expires_at <= ? AND status NOT IN ('purged', 'recording')",
                (at, recording_id, at),
            )
            if changed:
                owner = await session.one(
                    "SELECT org_id FROM recordings WHERE id = ?", (recording_id,)
                )
                await append_audit(
                    session,
                    owner["org_id"] if owner is not None else None,
                    actor,
                    "purge",
                    f"recording {recording_id}",
                    at=at,
                    detail=detail,
                )
        return bool(changed)

    # -- the portal's views ----------------------------------------------------------------

    async def get_visible_recording(
        self, org: OrgScope, recording_id: int, scope_ext: str | None
    ) -> RecordingListing | None:
        """A recording of `org` with its call, None if unknown, another organisation's
        or not visible to `scope_ext`."""
        if not 0 < recording_id <= MAX_ROW_ID:
            return None
        scope, params = _recording_scope(org, scope_ext)
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {RECORDING_COLUMNS_R}, {CALL_COLUMNS_ALIASED} FROM recordings r"
                " JOIN calls c ON c.id = r.call_id"
                f" WHERE r.id = ? AND r.org_id = ? AND c.org_id = ?{scope}",
                [recording_id, org.id, org.id, *params],
            )
        return listing_from_row(row) if row is not None else None

    async def recordings_page(
        self,
        org: OrgScope,
        *,
        since: float | None,
        until: float | None,
        extension: str | None,
        scope_ext: str | None,
        limit: int,
        offset: int,
        search: str | None = None,
    ) -> tuple[list[RecordingListing], int]:
        """One page of recordings (with their calls) newest first, and the total;
        `search`: a normalised text in a party's name or number (`storage.search`)."""
        conditions, params = started_between("r.started_at", since, until)
        conditions.insert(0, "r.org_id = ?")
        params.insert(0, org.id)
        if extension is not None:
            conditions.append(f"(r.owner_ext = ? OR {party_condition('c')})")
            params.extend((extension, extension, extension))
        if search:
            condition, values = search_condition("c", search, self.database.dialect)
            conditions.append(condition)
            params.extend(values)
        scope, scope_params = _recording_scope(org, scope_ext)
        where = " WHERE " + " AND ".join(conditions) + scope
        params.extend(scope_params)
        async with self.database.read() as session:
            total_row = await session.one(
                f"SELECT COUNT(*) AS n FROM recordings r JOIN calls c ON c.id = r.call_id{where}",
                params,
            )
            rows = await session.all(
                f"SELECT {RECORDING_COLUMNS_R}, {CALL_COLUMNS_ALIASED} FROM recordings r"
                f" JOIN calls c ON c.id = r.call_id{where}"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        total = int(total_row["n"]) if total_row is not None else 0
        return [listing_from_row(row) for row in rows], total
