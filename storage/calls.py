"""Call detail records: one row per call, with copies of the parties' extensions and
names so a record outlives the users it mentions, and the portal's pages of calls.

A call belongs to the organisation of the user it was set up for (`org_id`, given when
it is created and never changed); every read takes that organisation. It also names the
users who took part (`caller_user_id`, `callee_user_id`, migration 12; None for a number
outside the organisation, or once the user is removed): a user's own calls are found by
those ids, never by comparing numbers, since an outside caller's number may equal an
extension."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from storage.connection import MAX_ROW_ID, Database, started_between
from storage.errors import Conflict, InvalidValue, NotFound
from storage.models import (
    CALL_DIRECTIONS,
    CALL_DISPOSITIONS,
    CallRecord,
    CallRow,
    OrgScope,
    Recording,
)
from storage.rows import (
    CALL_COLUMNS,
    CALL_COLUMNS_C,
    CALL_FIELDS,
    RECORDING_COLUMNS_R,
    call_from_row,
    recording_from_row,
)
from storage.search import search_condition

__all__ = ["CALL_FIELDS", "CallQuery", "Calls", "own_call_condition", "party_condition"]

_REQUIRED_CALL_FIELDS = ("sip_call_id", "direction", "started_at")
_CALL_TIME_FIELDS = ("started_at", "answered_at", "ended_at")


@dataclass(frozen=True)
class CallQuery:
    """Filters of the calls list; `extension` is a party's number (outside numbers
    too); `scope_ext` limits it to the calls the user with that extension took part in
    (`own_call_condition`); `search` is a normalised text found in a party's name or
    number (`storage.search`)."""

    since: float | None = None
    until: float | None = None
    extension: str | None = None
    recorded_only: bool = False
    scope_ext: str | None = None
    search: str | None = None


def own_call_condition(alias: str, org: OrgScope, extension: str) -> tuple[str, list[Any]]:
    """SQL (and its parameters) for "`org`'s user with this extension took part in call
    `alias`": as its caller or its callee by the user ids filed on the call, so both
    users of an internal call see it (and its recording, whichever of them owns it), and
    an outside number equal to the extension is not the user. No such user: no call."""
    user = "(SELECT u.id FROM users u WHERE u.org_id = ? AND u.extension = ?)"
    return (
        f"({alias}.caller_user_id = {user} OR {alias}.callee_user_id = {user})",
        [org.id, extension, org.id, extension],
    )


def party_condition(alias: str) -> str:
    """SQL for "the number (twice as parameter) is a party of call `alias`": the
    admin's filter by number, which matches outside numbers too."""
    return f"({alias}.caller_ext = ? OR {alias}.callee_ext = ?)"


def _validate_call_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(CALL_FIELDS))
    if unknown:
        raise InvalidValue(unknown[0], f"unknown call field(s): {', '.join(unknown)}")
    checked = dict(fields)
    if "direction" in checked and checked["direction"] not in CALL_DIRECTIONS:
        raise InvalidValue(
            "direction",
            f"invalid call direction {checked['direction']!r}: "
            f"expected one of {', '.join(CALL_DIRECTIONS)}",
        )
    disposition = checked.get("disposition")
    if disposition is not None and disposition not in CALL_DISPOSITIONS:
        raise InvalidValue(
            "disposition",
            f"invalid call disposition {disposition!r}: "
            f"expected one of {', '.join(CALL_DISPOSITIONS)}",
        )
    for name in _CALL_TIME_FIELDS:
        value = checked.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidValue(name, f"invalid call {name} {value!r}: expected unix seconds")
    if "started_at" in checked and checked["started_at"] is None:
        raise InvalidValue("started_at", "invalid call started_at None: expected unix seconds")
    if "sip_call_id" in checked and not checked["sip_call_id"]:
        raise InvalidValue("sip_call_id", "invalid call sip_call_id: must not be empty")
    status = checked.get("sip_status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 699
    ):
        raise InvalidValue("sip_status", f"invalid call sip_status {status!r}: expected 100-699")
    if "recorded" in checked:
        checked["recorded"] = 1 if checked["recorded"] else 0
    return checked


def _check_paging(limit: int, offset: int) -> None:
    if limit < 0:
        raise InvalidValue("limit", "limit and offset must not be negative")
    if offset < 0:
        raise InvalidValue("offset", "limit and offset must not be negative")


class Calls:
    """Call detail records. `node` names the process that handles the calls this store
    object creates (`callrec serve` sets it; None: no node, as in the CLI and tests): on
    a store shared by several nodes, `close_interrupted_calls` closes only that node's."""

    database: Database
    node: str | None = None

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create_call(
        self,
        org_id: int,
        *,
        caller_user_id: int | None = None,
        callee_user_id: int | None = None,
        **fields: Any,
    ) -> int:
        """Insert a call record of organisation `org_id` from CALL_FIELDS (sip_call_id,
        direction and started_at required), with the ids of the users who are its caller
        and its callee (None: an outside number); returns its id. InvalidValue if a user
        id is not one of the organisation's users."""
        missing = [name for name in _REQUIRED_CALL_FIELDS if fields.get(name) is None]
        if missing:
            raise InvalidValue(missing[0], f"missing call field(s): {', '.join(missing)}")
        if isinstance(org_id, bool) or not isinstance(org_id, int) or org_id <= 0:
            raise InvalidValue("org_id", f"invalid organisation id {org_id!r}")
        checked = _validate_call_fields(fields)
        users = {"caller_user_id": caller_user_id, "callee_user_id": callee_user_id}
        for name, user_id in users.items():
            if user_id is not None and (
                isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0
            ):
                raise InvalidValue(name, f"invalid user id {user_id!r}")
        columns = ["org_id", "node", *users, *checked]
        values = [org_id, self.node, *users.values(), *checked.values()]
        placeholders = ", ".join("?" for _ in columns)
        try:
            async with self.database.transaction() as session:
                for name, user_id in users.items():
                    if user_id is not None and not await session.one(
                        "SELECT 1 FROM users WHERE id = ? AND org_id = ?", (user_id, org_id)
                    ):
                        raise InvalidValue(
                            name, f"user id {user_id} is not of organisation {org_id}"
                        )
                _, call_id = await session.execute(
                    f"INSERT INTO calls ({', '.join(columns)}) VALUES ({placeholders})", values
                )
        except Conflict as exc:
            raise InvalidValue("org_id", f"unknown organisation id {org_id}") from exc
        assert call_id is not None
        return call_id

    async def update_call(self, call_id: int, **fields: Any) -> None:
        """Set some CALL_FIELDS of an existing call record."""
        checked = _validate_call_fields(fields)
        async with self.database.transaction() as session:
            exists = await session.one("SELECT 1 FROM calls WHERE id = ?", (call_id,))
            if exists is None:
                raise NotFound(f"unknown call id {call_id}")
            if not checked:
                return
            assignments = ", ".join(f"{name} = ?" for name in checked)
            await session.execute(
                f"UPDATE calls SET {assignments} WHERE id = ?", [*checked.values(), call_id]
            )

    async def close_interrupted_calls(
        self, last_write: Callable[[str], float | None]
    ) -> list[CallRecord]:
        """Close the calls a dead process left open (no `ended_at`), at start-up only:
        with a `node`, only the calls of that node (and those of no node), so that a node
        starting never closes another live node's calls.

        A call ends at the last write of its recordings (`last_write(path)`, e.g. the
        file's mtime, None if unknown), else at its answer or start; its disposition
        becomes `interrupted`. Returns the calls as closed."""
        async with self.database.transaction() as session:
            sql = f"SELECT {CALL_COLUMNS} FROM calls WHERE ended_at IS NULL"
            params: tuple[str, ...] = ()
            if self.node is not None:
                sql += " AND (node = ? OR node IS NULL)"
                params = (self.node,)
            rows = await session.all(sql, params)
            closed: list[CallRecord] = []
            for row in rows:
                call = call_from_row(row)
                paths = await session.all(
                    "SELECT path FROM recordings WHERE call_id = ?", (call.id,)
                )
                writes = [
                    at for at in (last_write(path["path"]) for path in paths) if at is not None
                ]
                ended_at = max([call.started_at, call.answered_at or call.started_at, *writes])
                await session.execute(
                    "UPDATE calls SET ended_at = ?, disposition = 'interrupted' WHERE id = ?",
                    (ended_at, call.id),
                )
                closed.append(replace(call, ended_at=ended_at, disposition="interrupted"))
        return closed

    async def get_call(self, org: OrgScope, call_id: int) -> CallRecord | None:
        """One call record of `org`, or None."""
        if not 0 < call_id <= MAX_ROW_ID:
            return None
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {CALL_COLUMNS} FROM calls WHERE id = ? AND org_id = ?", (call_id, org.id)
            )
        return call_from_row(row) if row is not None else None

    async def list_calls(
        self,
        org: OrgScope,
        limit: int = 100,
        offset: int = 0,
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
    ) -> list[CallRecord]:
        """Call records newest first; since <= started_at < until; extension matches
        the caller or the callee."""
        _check_paging(limit, offset)
        conditions, params = started_between("started_at", since, until)
        conditions.insert(0, "org_id = ?")
        params.insert(0, org.id)
        if extension is not None:
            conditions.append(party_condition("calls"))
            params.extend((extension, extension))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {CALL_COLUMNS} FROM calls{where}"
                " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return [call_from_row(row) for row in rows]

    # -- the portal's views ----------------------------------------------------------------

    async def calls_page(
        self, org: OrgScope, query: CallQuery, limit: int, offset: int
    ) -> tuple[list[CallRow], int]:
        """One page of `org`'s calls newest first, each with its recordings, and the total."""
        _check_paging(limit, offset)
        conditions, params = started_between("c.started_at", query.since, query.until)
        conditions.insert(0, "c.org_id = ?")
        params.insert(0, org.id)
        if query.extension is not None:
            conditions.append(party_condition("c"))
            params.extend((query.extension, query.extension))
        if query.scope_ext is not None:
            condition, values = own_call_condition("c", org, query.scope_ext)
            conditions.append(condition)
            params.extend(values)
        if query.recorded_only:
            conditions.append("EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = c.id)")
        if query.search:
            condition, values = search_condition("c", query.search, self.database.dialect)
            conditions.append(condition)
            params.extend(values)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self.database.read() as session:
            total_row = await session.one(f"SELECT COUNT(*) AS n FROM calls c{where}", params)
            rows = await session.all(
                f"SELECT {CALL_COLUMNS_C} FROM calls c{where}"
                " ORDER BY c.started_at DESC, c.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            calls = [call_from_row(row) for row in rows]
            recordings: dict[int, list[Recording]] = {call.id: [] for call in calls}
            if calls:
                marks = ", ".join("?" for _ in calls)
                for row in await session.all(
                    f"SELECT {RECORDING_COLUMNS_R} FROM recordings r"
                    f" WHERE r.org_id = ? AND r.call_id IN ({marks}) ORDER BY r.started_at, r.id",
                    [org.id, *(call.id for call in calls)],
                ):
                    recording = recording_from_row(row)
                    recordings[recording.call_id].append(recording)
        total = int(total_row["n"]) if total_row is not None else 0
        return [CallRow(call, recordings[call.id]) for call in calls], total

    async def get_visible_call(
        self, org: OrgScope, call_id: int, scope_ext: str | None
    ) -> CallRow | None:
        """A call of `org` with its recordings; None if unknown, another organisation's
        or (with `scope_ext`) not one the user took part in."""
        if not 0 < call_id <= MAX_ROW_ID:
            return None
        params: list[Any] = [call_id, org.id]
        scope = ""
        if scope_ext is not None:
            condition, values = own_call_condition("c", org, scope_ext)
            scope = f" AND {condition}"
            params.extend(values)
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {CALL_COLUMNS_C} FROM calls c WHERE c.id = ? AND c.org_id = ?{scope}",
                params,
            )
            if row is None:
                return None
            recording_rows = await session.all(
                f"SELECT {RECORDING_COLUMNS_R} FROM recordings r"
                " WHERE r.call_id = ? AND r.org_id = ? ORDER BY r.started_at, r.id",
                (call_id, org.id),
            )
        return CallRow(call_from_row(row), [recording_from_row(r) for r in recording_rows])
