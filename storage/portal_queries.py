"""The portal's queries on the store: scoped call pages, recordings, logins and tokens.

Only the portal asks these (a page of calls with its total, recordings limited to what
one user may see, API tokens, users' portal passwords). They live in `storage/`, beside
`Store`, because they run on the store's connection through its package-internal lock
and transaction helpers; the portal itself holds no SQL. The tables they use come from
the store's migrations (`api_tokens`, `users.portal_password_hash`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from storage.database import (
    _CALL_COLUMNS_ALIASED,
    _RECORDING_COLUMNS_R,
    CALL_FIELDS,
    StorageError,
    Store,
    _call_from_prefixed_row,
    _call_from_row,
    _recording_from_row,
    started_between,
)
from storage.models import CallRecord, Recording, RecordingListing, User

_CALL_COLUMNS_C = ", ".join(f"c.{name}" for name in ("id", *CALL_FIELDS))
# SQLite integers are signed 64-bit; a larger id in a URL can name nothing.
MAX_ROW_ID = 2**63 - 1


@dataclass(frozen=True)
class CallQuery:
    """Filters of the calls list; `scope_ext` limits it to one user's own calls."""

    since: float | None = None
    until: float | None = None
    extension: str | None = None
    recorded_only: bool = False
    scope_ext: str | None = None


@dataclass(frozen=True)
class CallRow:
    """A call with its recordings (visible to the asker)."""

    call: CallRecord
    recordings: list[Recording]


@dataclass(frozen=True)
class ApiToken:
    """An API bearer token (only its SHA-256 is stored)."""

    id: int
    name: str
    actor: str
    role: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_from_row(row: Any) -> ApiToken:
    return ApiToken(
        id=int(row["id"]),
        name=str(row["name"]),
        actor=str(row["actor"]),
        role=str(row["role"]),
        created_at=float(row["created_at"]),
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def _own_call_condition(alias: str) -> str:
    return f"({alias}.caller_ext = ? OR {alias}.callee_ext = ?)"


class PortalRepository:
    """Portal queries on one `Store`."""

    def __init__(self, store: Store, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy_hash: str | None = None

    # -- calls -------------------------------------------------------------------------

    def _call_where(self, query: CallQuery) -> tuple[str, list[Any]]:
        conditions, params = started_between("c.started_at", query.since, query.until)
        if query.extension is not None:
            conditions.append(_own_call_condition("c"))
            params.extend((query.extension, query.extension))
        if query.scope_ext is not None:
            conditions.append(_own_call_condition("c"))
            params.extend((query.scope_ext, query.scope_ext))
        if query.recorded_only:
            conditions.append("EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = c.id)")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return where, params

    async def calls_page(
        self, query: CallQuery, limit: int, offset: int
    ) -> tuple[list[CallRow], int]:
        """One page of calls newest first, each with its recordings, and the total."""
        where, params = self._call_where(query)
        store = self.store
        async with store._read():
            total_row = await store._one(f"SELECT COUNT(*) AS n FROM calls c{where}", params)
            rows = await store._all(
                f"SELECT {_CALL_COLUMNS_C} FROM calls c{where}"
                " ORDER BY c.started_at DESC, c.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            calls = [_call_from_row(row) for row in rows]
            recordings: dict[int, list[Recording]] = {call.id: [] for call in calls}
            if calls:
                marks = ", ".join("?" for _ in calls)
                for row in await store._all(
                    f"SELECT {_RECORDING_COLUMNS_R} FROM recordings r"
                    f" WHERE r.call_id IN ({marks}) ORDER BY r.started_at, r.id",
                    [call.id for call in calls],
                ):
                    recording = _recording_from_row(row)
                    recordings[recording.call_id].append(recording)
        total = int(total_row["n"]) if total_row is not None else 0
        return [CallRow(call, recordings[call.id]) for call in calls], total

    async def get_call(self, call_id: int, scope_ext: str | None) -> CallRow | None:
        if not 0 < call_id <= MAX_ROW_ID:
            return None
        store = self.store
        params: list[Any] = [call_id]
        scope = ""
        if scope_ext is not None:
            scope = f" AND {_own_call_condition('c')}"
            params.extend((scope_ext, scope_ext))
        async with store._read():
            row = await store._one(
                f"SELECT {_CALL_COLUMNS_C} FROM calls c WHERE c.id = ?{scope}", params
            )
            if row is None:
                return None
            recording_rows = await store._all(
                f"SELECT {_RECORDING_COLUMNS_R} FROM recordings r WHERE r.call_id = ?"
                " ORDER BY r.started_at, r.id",
                (call_id,),
            )
        return CallRow(_call_from_row(row), [_recording_from_row(r) for r in recording_rows])

    # -- recordings --------------------------------------------------------------------

    def _recording_scope(self, scope_ext: str | None) -> tuple[str, list[Any]]:
        if scope_ext is None:
            return "", []
        return (
            f" AND (r.owner_ext = ? OR {_own_call_condition('c')})",
            [scope_ext, scope_ext, scope_ext],
        )

    async def get_recording(
        self, recording_id: int, scope_ext: str | None
    ) -> RecordingListing | None:
        """A recording with its call, None if unknown or not visible to `scope_ext`."""
        if not 0 < recording_id <= MAX_ROW_ID:
            return None
        scope, params = self._recording_scope(scope_ext)
        store = self.store
        async with store._read():
            row = await store._one(
                f"SELECT {_RECORDING_COLUMNS_R}, {_CALL_COLUMNS_ALIASED} FROM recordings r"
                f" JOIN calls c ON c.id = r.call_id WHERE r.id = ?{scope}",
                [recording_id, *params],
            )
        if row is None:
            return None
        return RecordingListing(_recording_from_row(row), _call_from_prefixed_row(row))

    async def recordings_page(
        self,
        *,
        since: float | None,
        until: float | None,
        extension: str | None,
        scope_ext: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[RecordingListing], int]:
        conditions, params = started_between("r.started_at", since, until)
        conditions.insert(0, "1 = 1")
        if extension is not None:
            conditions.append(f"(r.owner_ext = ? OR {_own_call_condition('c')})")
            params.extend((extension, extension, extension))
        scope, scope_params = self._recording_scope(scope_ext)
        where = " WHERE " + " AND ".join(conditions) + scope
        params.extend(scope_params)
        store = self.store
        async with store._read():
            total_row = await store._one(
                f"SELECT COUNT(*) AS n FROM recordings r JOIN calls c ON c.id = r.call_id{where}",
                params,
            )
            rows = await store._all(
                f"SELECT {_RECORDING_COLUMNS_R}, {_CALL_COLUMNS_ALIASED} FROM recordings r"
                f" JOIN calls c ON c.id = r.call_id{where}"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        total = int(total_row["n"]) if total_row is not None else 0
        listings = [
            RecordingListing(_recording_from_row(row), _call_from_prefixed_row(row)) for row in rows
        ]
        return listings, total

    # -- users' portal passwords -------------------------------------------------------

    async def set_portal_password(self, extension: str, password: str) -> None:
        if not password or len(password) < 8:
            raise StorageError("portal password must have at least 8 characters")
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        store = self.store
        async with store._write():
            changed, _ = await store._execute(
                "UPDATE users SET portal_password_hash = ? WHERE extension = ?",
                (hashed, extension),
            )
        if not changed:
            raise StorageError(f"unknown extension {extension}")

    async def verify_user_password(self, extension: str, password: str) -> User | None:
        """The user if `password` is their portal password, else None."""
        store = self.store
        async with store._read():
            row = await store._one(
                "SELECT portal_password_hash FROM users WHERE extension = ?", (extension,)
            )
        hashed = row["portal_password_hash"] if row is not None else None
        if not hashed:
            # Spend the same time as a real check so a timing does not tell who exists.
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(8))
            await asyncio.to_thread(_verify, self.hasher, self._dummy_hash, password)
            return None
        if not await asyncio.to_thread(_verify, self.hasher, str(hashed), password):
            return None
        return await store.get_user(extension)

    # -- API tokens --------------------------------------------------------------------

    async def create_api_token(self, name: str, actor: str, role: str = "admin") -> tuple[int, str]:
        """A new bearer token (returned once, stored as its SHA-256) and its id."""
        name = name.strip()
        if not name or len(name) > 100:
            raise StorageError("token name must have 1 to 100 characters")
        token = "crt_" + secrets.token_urlsafe(32)
        store = self.store
        async with store._write():
            _, token_id = await store._execute(
                "INSERT INTO api_tokens (token_sha256, name, actor, role, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_digest(token), name, actor, role, time.time()),
            )
        assert token_id is not None
        return token_id, token

    async def verify_api_token(self, token: str) -> ApiToken | None:
        store = self.store
        digest = token_digest(token)
        async with store._read():
            row = await store._one(
                "SELECT id, name, actor, role, created_at, last_used_at, revoked_at"
                " FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
                (digest,),
            )
        if row is None:
            return None
        return _token_from_row(row)

    async def list_api_tokens(self) -> list[ApiToken]:
        store = self.store
        async with store._read():
            rows = await store._all(
                "SELECT id, name, actor, role, created_at, last_used_at, revoked_at"
                " FROM api_tokens ORDER BY id"
            )
        return [_token_from_row(row) for row in rows]

    async def revoke_api_token(self, token_id: int) -> bool:
        if not 0 < token_id <= MAX_ROW_ID:
            return False
        store = self.store
        async with store._write():
            changed, _ = await store._execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
        return changed > 0

    # -- audit -------------------------------------------------------------

    async def audit_total(self) -> int:
        store = self.store
        async with store._read():
            row = await store._one("SELECT COUNT(*) AS n FROM audit")
        return int(row["n"]) if row is not None else 0


def _verify(hasher: PasswordHasher, hashed: str, password: str) -> bool:
    try:
        return hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
