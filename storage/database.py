"""The metadata store: users, devices, registrations, call records and settings.

One SQLite file opened through one aiosqlite connection. Every public method takes an
asyncio lock, so concurrent coroutines of one process never interleave statements, and
every write runs in its own `BEGIN IMMEDIATE ... COMMIT` transaction, which also
serialises writers from other processes (the `callrec users ...` CLI beside a running
server). WAL mode lets readers in other processes proceed meanwhile.

Timestamps are unix times in seconds (REAL, UTC) throughout; `storage.models.
format_timestamp` renders them. Passwords are stored only as digest HA1 values (MD5 and
SHA-256 of "username:realm:password", RFC 7616), never as plaintext.

Schema changes are versioned: `MIGRATIONS[i]` holds the statements that take the schema
from version i to i + 1, and `schema_version` records what has been applied. To change the
schema, append a tuple of statements; never edit one that has shipped.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from storage.models import (
    CALL_DIRECTIONS,
    CALL_DISPOSITIONS,
    EXPORT_STATUSES,
    RECORDING_MODES,
    RECORDING_STATUSES,
    Admin,
    AuditEntry,
    CallRecord,
    Credentials,
    Device,
    ExportJob,
    Recording,
    RecordingListing,
    Registration,
    User,
)
from storage.passwords import ha1_pair

__all__ = [
    "MIGRATIONS",
    "CallRecord",
    "Credentials",
    "Device",
    "Registration",
    "StorageError",
    "Store",
    "User",
]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: users, devices, registrations, calls, settings
    (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            extension TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            email TEXT,
            recording_mode TEXT NOT NULL DEFAULT 'on-demand'
                CHECK (recording_mode IN ('never', 'always', 'on-demand')),
            realm TEXT NOT NULL,
            ha1_md5 TEXT,
            ha1_sha256 TEXT,
            created_at REAL NOT NULL
        )""",
        # username is not UNIQUE: two phones of one user may share it; that a username
        # belongs to one user only is checked inside the write transaction.
        """CREATE TABLE devices (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            uri TEXT NOT NULL,
            username TEXT,
            kind TEXT NOT NULL DEFAULT 'phone',
            ha1_md5 TEXT,
            ha1_sha256 TEXT,
            UNIQUE (user_id, uri)
        )""",
        "CREATE INDEX devices_username ON devices(username)",
        """CREATE TABLE registrations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            contact TEXT NOT NULL,
            received TEXT NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            device_username TEXT,
            instance TEXT,
            user_agent TEXT,
            updated_at REAL NOT NULL,
            UNIQUE (user_id, contact)
        )""",
        "CREATE INDEX registrations_expires_at ON registrations(expires_at)",
        # calls keep copies of extensions and names (no foreign key): a CDR outlives
        # the user it mentions.
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sip_call_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            caller_ext TEXT,
            caller_name TEXT,
            callee_ext TEXT,
            callee_name TEXT,
            started_at REAL NOT NULL,
            answered_at REAL,
            ended_at REAL,
            disposition TEXT,
            sip_status INTEGER,
            recorded INTEGER NOT NULL DEFAULT 0,
            leg_a_call_id TEXT,
            leg_b_call_id TEXT
        )""",
        "CREATE INDEX calls_started_at ON calls(started_at)",
        "CREATE INDEX calls_sip_call_id ON calls(sip_call_id)",
        "CREATE INDEX calls_caller_ext ON calls(caller_ext)",
        "CREATE INDEX calls_callee_ext ON calls(callee_ext)",
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ),
    # 2: recordings (one file per call), their on-demand toggles, the audit log, exports
    (
        """CREATE TABLE recordings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            call_id INTEGER NOT NULL REFERENCES calls(id),
            owner_ext TEXT,
            path TEXT NOT NULL UNIQUE,
            format TEXT NOT NULL,
            channels INTEGER NOT NULL,
            sample_rate INTEGER NOT NULL,
            codec TEXT,
            status TEXT NOT NULL,
            error TEXT,
            started_at REAL NOT NULL,
            ended_at REAL,
            duration_s REAL,
            segments_json TEXT NOT NULL DEFAULT '[]',
            sha256 TEXT,
            bytes INTEGER,
            retention_days INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            purged_at REAL
        )""",
        "CREATE INDEX recordings_call ON recordings (call_id)",
        "CREATE INDEX recordings_expires ON recordings (expires_at)",
        "CREATE INDEX recordings_started ON recordings (started_at)",
        """CREATE TABLE recording_toggles (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            recording_id INTEGER NOT NULL REFERENCES recordings(id),
            at REAL NOT NULL,
            action TEXT NOT NULL,
            method TEXT NOT NULL
        )""",
        "CREATE INDEX recording_toggles_recording ON recording_toggles (recording_id)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            object TEXT,
            address TEXT,
            detail TEXT
        )""",
        "CREATE INDEX audit_at ON audit (at)",
        """CREATE TABLE exports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            month TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            requested_at REAL NOT NULL,
            status TEXT NOT NULL,
            path TEXT,
            bytes INTEGER,
            files INTEGER,
            error TEXT,
            finished_at REAL
        )""",
    ),
    # 3: portal administrators (argon2 password hashes)
    (
        """CREATE TABLE admins (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            email TEXT,
            created_at REAL NOT NULL
        )""",
    ),
    # 4: users' portal logins (argon2 hash) and API bearer tokens (only their SHA-256)
    (
        "ALTER TABLE users ADD COLUMN portal_password_hash TEXT",
        """CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            token_sha256 TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL
        )""",
    ),
)

_EXTENSION = re.compile(r"[0-9]{2,15}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_MAX_NAME_LENGTH = 200

_USER_COLUMNS = "id, extension, name, email, recording_mode, realm, ha1_md5, ha1_sha256, created_at"
_DEVICE_COLUMNS = "id, user_id, uri, username, kind, ha1_md5, ha1_sha256"
_REGISTRATION_COLUMNS = (
    "r.id, r.user_id, u.extension, r.contact, r.received, r.call_id, r.cseq, r.expires_at,"
    " r.device_username, r.instance, r.user_agent, r.updated_at"
)
CALL_FIELDS = (
    "sip_call_id",
    "direction",
    "caller_ext",
    "caller_name",
    "callee_ext",
    "callee_name",
    "started_at",
    "answered_at",
    "ended_at",
    "disposition",
    "sip_status",
    "recorded",
    "leg_a_call_id",
    "leg_b_call_id",
)
_REQUIRED_CALL_FIELDS = ("sip_call_id", "direction", "started_at")
_CALL_TIME_FIELDS = ("started_at", "answered_at", "ended_at")


class StorageError(Exception):
    """A store operation failed; the message is one line a person can act on."""


def started_between(
    column: str, since: float | None, until: float | None
) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for ``since <= column < until``; None is open."""
    conditions: list[str] = []
    params: list[Any] = []
    if since is not None:
        conditions.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        conditions.append(f"{column} < ?")
        params.append(until)
    return conditions, params


def device_username(uri: str) -> str | None:
    """The user part of a sip:/sips: URI (unescaped), None if it has none.

    Raises StorageError if `uri` is not a SIP URI with a host.
    """
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise StorageError(f"invalid device URI {uri!r}: expected sip:user@host")
    user_info, at, host_part = rest.rpartition("@")
    host = re.split(r"[;?]", host_part, maxsplit=1)[0]
    if not host or any(ch.isspace() for ch in rest):
        raise StorageError(f"invalid device URI {uri!r}: expected sip:user@host")
    if not at:
        return None
    user = unquote(user_info.partition(":")[0])
    if not user:
        raise StorageError(f"invalid device URI {uri!r}: empty user part")
    return user


def _validate_extension(extension: str) -> str:
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise StorageError(f"invalid extension {extension!r}: expected 2 to 15 digits")
    return extension


def _validate_mode(mode: str) -> str:
    if mode not in RECORDING_MODES:
        raise StorageError(
            f"invalid recording mode {mode!r}: expected one of {', '.join(RECORDING_MODES)}"
        )
    return mode


def _validate_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise StorageError("invalid password: must not be empty")
    return password


def _validate_realm(realm: str) -> str:
    if not isinstance(realm, str) or not realm or '"' in realm or "\\" in realm:
        raise StorageError(f"invalid realm {realm!r}: must be non-empty, without quotes")
    return realm


def _user_from_row(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        extension=row["extension"],
        name=row["name"],
        email=row["email"],
        recording_mode=row["recording_mode"],
        realm=row["realm"],
        ha1_md5=row["ha1_md5"],
        ha1_sha256=row["ha1_sha256"],
        created_at=row["created_at"],
    )


def _device_from_row(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        user_id=row["user_id"],
        uri=row["uri"],
        username=row["username"],
        kind=row["kind"],
        ha1_md5=row["ha1_md5"],
        ha1_sha256=row["ha1_sha256"],
    )


def _registration_from_row(row: sqlite3.Row) -> Registration:
    return Registration(
        id=row["id"],
        user_id=row["user_id"],
        extension=row["extension"],
        contact=row["contact"],
        received=row["received"],
        call_id=row["call_id"],
        cseq=row["cseq"],
        expires_at=row["expires_at"],
        device_username=row["device_username"],
        instance=row["instance"],
        user_agent=row["user_agent"],
        updated_at=row["updated_at"],
    )


def _call_from_row(row: sqlite3.Row | dict[str, Any]) -> CallRecord:
    return CallRecord(
        id=row["id"],
        sip_call_id=row["sip_call_id"],
        direction=row["direction"],
        caller_ext=row["caller_ext"],
        caller_name=row["caller_name"],
        callee_ext=row["callee_ext"],
        callee_name=row["callee_name"],
        started_at=row["started_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        disposition=row["disposition"],
        sip_status=row["sip_status"],
        recorded=bool(row["recorded"]),
        leg_a_call_id=row["leg_a_call_id"],
        leg_b_call_id=row["leg_b_call_id"],
    )


def _validate_call_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(CALL_FIELDS))
    if unknown:
        raise StorageError(f"unknown call field(s): {', '.join(unknown)}")
    checked = dict(fields)
    if "direction" in checked and checked["direction"] not in CALL_DIRECTIONS:
        raise StorageError(
            f"invalid call direction {checked['direction']!r}: "
            f"expected one of {', '.join(CALL_DIRECTIONS)}"
        )
    disposition = checked.get("disposition")
    if disposition is not None and disposition not in CALL_DISPOSITIONS:
        raise StorageError(
            f"invalid call disposition {disposition!r}: "
            f"expected one of {', '.join(CALL_DISPOSITIONS)}"
        )
    for name in _CALL_TIME_FIELDS:
        value = checked.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise StorageError(f"invalid call {name} {value!r}: expected unix seconds")
    if "started_at" in checked and checked["started_at"] is None:
        raise StorageError("invalid call started_at None: expected unix seconds")
    if "sip_call_id" in checked and not checked["sip_call_id"]:
        raise StorageError("invalid call sip_call_id: must not be empty")
    status = checked.get("sip_status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 699
    ):
        raise StorageError(f"invalid call sip_status {status!r}: expected 100-699")
    if "recorded" in checked:
        checked["recorded"] = 1 if checked["recorded"] else 0
    return checked


_RECORDING_FIELDS = (
    "id",
    "call_id",
    "owner_ext",
    "path",
    "format",
    "channels",
    "sample_rate",
    "codec",
    "status",
    "error",
    "started_at",
    "ended_at",
    "duration_s",
    "segments_json",
    "sha256",
    "bytes",
    "retention_days",
    "expires_at",
    "purged_at",
)
_RECORDING_COLUMNS = ", ".join(_RECORDING_FIELDS)
_RECORDING_COLUMNS_R = ", ".join(f"r.{name}" for name in _RECORDING_FIELDS)


def _recording_from_row(row: sqlite3.Row) -> Recording:
    segments = [(float(a), float(b)) for a, b in json.loads(row["segments_json"] or "[]")]
    return Recording(
        id=int(row["id"]),
        call_id=int(row["call_id"]),
        owner_ext=row["owner_ext"],
        path=str(row["path"]),
        format=str(row["format"]),
        channels=int(row["channels"]),
        sample_rate=int(row["sample_rate"]),
        codec=row["codec"],
        status=str(row["status"]),
        error=row["error"],
        started_at=float(row["started_at"]),
        ended_at=row["ended_at"],
        duration_s=row["duration_s"],
        segments=segments,
        sha256=row["sha256"],
        bytes=row["bytes"],
        retention_days=int(row["retention_days"]),
        expires_at=float(row["expires_at"]),
        purged_at=row["purged_at"],
    )


# A call's columns in a join with recordings (alias `c`), named for `_call_from_prefixed_row`.
_CALL_COLUMNS_ALIASED = ", ".join(f"c.{name} AS call_{name}" for name in ("id", *CALL_FIELDS))


def _call_from_prefixed_row(row: sqlite3.Row) -> CallRecord:
    """A call record from the columns of `_CALL_COLUMNS_ALIASED`."""
    values = {name: row[f"call_{name}"] for name in ("id", *CALL_FIELDS)}
    return _call_from_row(values)


class Store:
    """The metadata store on one SQLite file; open it with `await Store.open(path)`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self.path = path

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating folders and file as needed) and migrate to the newest schema."""
        db_path = Path(path)
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create folder {db_path.parent}: {exc}") from exc
        try:
            # isolation_level=None: transactions are explicit, see _write().
            connection = await aiosqlite.connect(str(db_path), isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {db_path}: {exc}") from exc
        connection.row_factory = sqlite3.Row
        store = cls(connection, db_path)
        try:
            await store._configure()
            await store._migrate()
        except BaseException:
            await connection.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        async with self._lock:
            await self._connection.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        """The schema version the file is at (len(MIGRATIONS) once opened)."""
        async with self._lock:
            row = await self._one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        return int(row["v"]) if row is not None else 0

    async def _configure(self) -> None:
        try:
            await self._connection.execute("PRAGMA foreign_keys = ON")
            # Another process (CLI vs server) may hold the write lock for a moment.
            await self._connection.execute("PRAGMA busy_timeout = 5000")
            row = await self._one("PRAGMA journal_mode = WAL")
            await self._connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot use database {self.path}: {exc}") from exc
        if row is None or str(row[0]).lower() != "wal":
            raise StorageError(f"cannot enable WAL journal mode on {self.path}")

    async def _migrate(self) -> None:
        try:
            await self._connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot use database {self.path}: {exc}") from exc
        latest = len(MIGRATIONS)
        async with self._write():
            # Read inside the write transaction: another process may have migrated.
            row = await self._one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            current = int(row["v"]) if row is not None else 0
            if current > latest:
                raise StorageError(
                    f"database {self.path} has schema version {current}, newer than this "
                    f"callrec understands ({latest}); upgrade callrec"
                )
            for version in range(current + 1, latest + 1):
                for statement in MIGRATIONS[version - 1]:
                    try:
                        await self._connection.execute(statement)
                    except sqlite3.Error as exc:
                        raise StorageError(
                            f"schema migration {version} failed on {self.path}: {exc}"
                        ) from exc
                await self._connection.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )

    # -- plumbing --------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """Hold the lock and one IMMEDIATE transaction; commit on success."""
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path} is not writable: {exc}") from exc
            try:
                yield
            except BaseException as exc:
                await self._connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise StorageError(f"constraint violated: {exc}") from exc
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"database error: {exc}") from exc
                raise
            try:
                await self._connection.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._connection.execute("ROLLBACK")
                raise StorageError(f"database commit failed: {exc}") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[None]:
        async with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StorageError(f"database error: {exc}") from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._connection.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """Run one statement; returns (rows changed, last row id)."""
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount, cursor.lastrowid

    async def _user_or_none(self, extension: str) -> User | None:
        row = await self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE extension = ?", (extension,)
        )
        return _user_from_row(row) if row is not None else None

    async def _existing_user(self, extension: str) -> User:
        user = await self._user_or_none(extension)
        if user is None:
            raise StorageError(f"unknown extension {extension}")
        return user

    async def _check_username_free(self, username: str, owner_id: int | None, what: str) -> None:
        """Raise unless `username` is unused or already belongs to user `owner_id`."""
        row = await self._one(
            "SELECT id, extension FROM users WHERE extension = ? AND id IS NOT ?",
            (username, owner_id),
        )
        if row is not None:
            raise StorageError(f"{what}: {username!r} is the extension of user {row['extension']}")
        row = await self._one(
            "SELECT u.extension FROM devices d JOIN users u ON u.id = d.user_id"
            " WHERE d.username = ? AND d.user_id IS NOT ?",
            (username, owner_id),
        )
        if row is not None:
            raise StorageError(
                f"{what}: {username!r} is already a device username of user {row['extension']}"
            )

    async def _insert_device(self, user: User, uri: str, kind: str, password: str | None) -> Device:
        uri = uri.strip()
        username = device_username(uri)
        if username == user.extension:
            username = None
        if not kind:
            raise StorageError("invalid device kind: must not be empty")
        if username is not None:
            await self._check_username_free(username, user.id, f"device {uri}")
        existing = await self._one(
            "SELECT 1 FROM devices WHERE user_id = ? AND uri = ?", (user.id, uri)
        )
        if existing is not None:
            raise StorageError(f"device {uri} already belongs to user {user.extension}")
        ha1_md5 = ha1_sha256 = None
        if username is not None and password is not None:
            pair = ha1_pair(username, user.realm, password)
            ha1_md5, ha1_sha256 = pair.md5, pair.sha256
        _, device_id = await self._execute(
            "INSERT INTO devices (user_id, uri, username, kind, ha1_md5, ha1_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (user.id, uri, username, kind, ha1_md5, ha1_sha256),
        )
        assert device_id is not None
        return Device(device_id, user.id, uri, username, kind, ha1_md5, ha1_sha256)

    # -- users and devices -----------------------------------------------------------

    async def add_user(
        self,
        extension: str,
        name: str,
        email: str | None = None,
        mode: str = "on-demand",
        password: str | None = None,
        devices: Iterable[str] = (),
        realm: str = "callrec",
    ) -> User:
        """Create a user with its device URIs; HA1 values are kept if a password is given."""
        _validate_extension(extension)
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > _MAX_NAME_LENGTH:
            raise StorageError(f"invalid name for {extension}: 1 to {_MAX_NAME_LENGTH} characters")
        if email is not None and not _EMAIL.fullmatch(email):
            raise StorageError(f"invalid email {email!r} for {extension}")
        _validate_mode(mode)
        _validate_realm(realm)
        if password is not None:
            _validate_password(password)
        # A lone string would otherwise be iterated character by character.
        device_uris = [devices] if isinstance(devices, str) else list(devices)
        ha1_md5 = ha1_sha256 = None
        if password is not None:
            pair = ha1_pair(extension, realm, password)
            ha1_md5, ha1_sha256 = pair.md5, pair.sha256
        created_at = time.time()
        async with self._write():
            if await self._user_or_none(extension) is not None:
                raise StorageError(f"user {extension} already exists")
            await self._check_username_free(extension, None, f"extension {extension}")
            _, user_id = await self._execute(
                "INSERT INTO users (extension, name, email, recording_mode, realm, ha1_md5,"
                " ha1_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (extension, name, email, mode, realm, ha1_md5, ha1_sha256, created_at),
            )
            assert user_id is not None
            user = User(
                user_id, extension, name, email, mode, realm, ha1_md5, ha1_sha256, created_at
            )
            for uri in device_uris:
                await self._insert_device(user, uri, "phone", password)
        return user

    async def add_device(
        self, extension: str, uri: str, kind: str = "phone", password: str | None = None
    ) -> Device:
        """Add a device URI to a user; without `password` its own username cannot log in."""
        if password is not None:
            _validate_password(password)
        async with self._write():
            user = await self._existing_user(extension)
            return await self._insert_device(user, uri, kind, password)

    async def get_user(self, extension: str) -> User | None:
        """The user with this extension, or None."""
        async with self._read():
            return await self._user_or_none(extension)

    async def get_user_by_id(self, user_id: int) -> User | None:
        """The user with this row id, or None."""
        async with self._read():
            row = await self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _user_from_row(row) if row is not None else None

    async def find_user_by_auth_username(self, username: str) -> User | None:
        """The user who authenticates as `username`: their extension or a device username."""
        credentials = await self.find_credentials(username)
        return credentials.user if credentials is not None else None

    async def find_credentials(self, username: str) -> Credentials | None:
        """User, realm and HA1 values for a digest username, or None if nobody has it."""
        async with self._read():
            user = await self._user_or_none(username)
            if user is not None:
                return Credentials(user, username, user.realm, user.ha1_md5, user.ha1_sha256)
            row = await self._one(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = ? ORDER BY id LIMIT 1",
                (username,),
            )
            if row is None:
                return None
            device = _device_from_row(row)
            owner = await self._one(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (device.user_id,)
            )
        if owner is None:
            return None
        user = _user_from_row(owner)
        return Credentials(user, username, user.realm, device.ha1_md5, device.ha1_sha256)

    async def set_mode(self, extension: str, mode: str) -> User:
        """Change a user's recording mode; returns the updated user."""
        _validate_mode(mode)
        async with self._write():
            await self._existing_user(extension)
            await self._execute(
                "UPDATE users SET recording_mode = ? WHERE extension = ?", (mode, extension)
            )
            return await self._existing_user(extension)

    async def set_password(self, extension: str, password: str, realm: str = "callrec") -> User:
        """Replace the HA1 values of a user and of their devices' usernames."""
        _validate_password(password)
        _validate_realm(realm)
        async with self._write():
            user = await self._existing_user(extension)
            pair = ha1_pair(extension, realm, password)
            await self._execute(
                "UPDATE users SET realm = ?, ha1_md5 = ?, ha1_sha256 = ? WHERE id = ?",
                (realm, pair.md5, pair.sha256, user.id),
            )
            for row in await self._all(
                "SELECT id, username FROM devices WHERE user_id = ? AND username IS NOT NULL",
                (user.id,),
            ):
                device_pair = ha1_pair(row["username"], realm, password)
                await self._execute(
                    "UPDATE devices SET ha1_md5 = ?, ha1_sha256 = ? WHERE id = ?",
                    (device_pair.md5, device_pair.sha256, row["id"]),
                )
            return await self._existing_user(extension)

    async def remove_user(self, extension: str) -> None:
        """Delete a user with their devices and registrations; call records stay."""
        async with self._write():
            user = await self._existing_user(extension)
            # Foreign keys cascade to devices and registrations.
            await self._execute("DELETE FROM users WHERE id = ?", (user.id,))

    async def list_users(self) -> list[User]:
        """Every user, by extension."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_USER_COLUMNS} FROM users ORDER BY length(extension), extension"
            )
        return [_user_from_row(row) for row in rows]

    async def list_devices(self, extension: str) -> list[Device]:
        """The devices of a user, in the order they were added."""
        async with self._read():
            user = await self._existing_user(extension)
            rows = await self._all(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY id",
                (user.id,),
            )
        return [_device_from_row(row) for row in rows]

    # -- registrations ---------------------------------------------------------------

    async def upsert_binding(
        self,
        user_id: int,
        contact: str,
        received: str,
        call_id: str,
        cseq: int,
        expires_at: float,
        device_username: str | None = None,
        *,
        instance: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """Add or refresh a binding; the same contact (or +sip.instance) replaces it."""
        now = time.time()
        async with self._write():
            if instance is not None:
                # RFC 5626: a new contact for the same instance supersedes the old one.
                await self._execute(
                    "DELETE FROM registrations WHERE user_id = ? AND instance = ? AND contact != ?",
                    (user_id, instance, contact),
                )
            try:
                await self._execute(
                    "INSERT INTO registrations (user_id, contact, received, call_id, cseq,"
                    " expires_at, device_username, instance, user_agent, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, contact) DO UPDATE SET received = excluded.received,"
                    " call_id = excluded.call_id, cseq = excluded.cseq,"
                    " expires_at = excluded.expires_at,"
                    " device_username = excluded.device_username,"
                    " instance = excluded.instance, user_agent = excluded.user_agent,"
                    " updated_at = excluded.updated_at",
                    (
                        user_id,
                        contact,
                        received,
                        call_id,
                        cseq,
                        expires_at,
                        device_username,
                        instance,
                        user_agent,
                        now,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"cannot register for unknown user id {user_id}") from exc

    async def remove_binding(self, user_id: int, contact: str) -> bool:
        """Remove one binding; True if it existed."""
        async with self._write():
            changed, _ = await self._execute(
                "DELETE FROM registrations WHERE user_id = ? AND contact = ?", (user_id, contact)
            )
        return changed > 0

    async def remove_all_bindings(self, user_id: int) -> int:
        """Remove every binding of a user (REGISTER with Contact: *); returns the count."""
        async with self._write():
            changed, _ = await self._execute(
                "DELETE FROM registrations WHERE user_id = ?", (user_id,)
            )
        return changed

    async def bindings(self, extension: str, now: float) -> list[Registration]:
        """Unexpired bindings of a user (expires_at > now), most recently refreshed first."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_REGISTRATION_COLUMNS} FROM registrations r"
                " JOIN users u ON u.id = r.user_id"
                " WHERE u.extension = ? AND r.expires_at > ?"
                " ORDER BY r.updated_at DESC, r.id DESC",
                (extension, now),
            )
        return [_registration_from_row(row) for row in rows]

    async def purge_expired_bindings(self, now: float) -> int:
        """Delete bindings with expires_at <= now; returns how many."""
        async with self._write():
            changed, _ = await self._execute(
                "DELETE FROM registrations WHERE expires_at <= ?", (now,)
            )
        return changed

    # -- call detail records ---------------------------------------------------------

    async def create_call(self, **fields: Any) -> int:
        """Insert a call record from CALL_FIELDS (sip_call_id, direction and started_at
        required); returns its id."""
        missing = [name for name in _REQUIRED_CALL_FIELDS if fields.get(name) is None]
        if missing:
            raise StorageError(f"missing call field(s): {', '.join(missing)}")
        checked = _validate_call_fields(fields)
        columns = list(checked)
        placeholders = ", ".join("?" for _ in columns)
        async with self._write():
            _, call_id = await self._execute(
                f"INSERT INTO calls ({', '.join(columns)}) VALUES ({placeholders})",
                [checked[name] for name in columns],
            )
        assert call_id is not None
        return call_id

    async def update_call(self, call_id: int, **fields: Any) -> None:
        """Set some CALL_FIELDS of an existing call record."""
        checked = _validate_call_fields(fields)
        async with self._write():
            exists = await self._one("SELECT 1 FROM calls WHERE id = ?", (call_id,))
            if exists is None:
                raise StorageError(f"unknown call id {call_id}")
            if not checked:
                return
            assignments = ", ".join(f"{name} = ?" for name in checked)
            await self._execute(
                f"UPDATE calls SET {assignments} WHERE id = ?", [*checked.values(), call_id]
            )

    async def get_call(self, call_id: int) -> CallRecord | None:
        """One call record, or None."""
        async with self._read():
            row = await self._one(
                f"SELECT id, {', '.join(CALL_FIELDS)} FROM calls WHERE id = ?", (call_id,)
            )
        return _call_from_row(row) if row is not None else None

    async def list_calls(
        self,
        limit: int = 100,
        offset: int = 0,
        since: float | None = None,
        until: float | None = None,
        extension: str | None = None,
    ) -> list[CallRecord]:
        """Call records newest first; since <= started_at < until; extension matches
        the caller or the callee."""
        if limit < 0 or offset < 0:
            raise StorageError("limit and offset must not be negative")
        conditions, params = started_between("started_at", since, until)
        if extension is not None:
            conditions.append("(caller_ext = ? OR callee_ext = ?)")
            params.extend((extension, extension))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._read():
            rows = await self._all(
                f"SELECT id, {', '.join(CALL_FIELDS)} FROM calls{where}"
                " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return [_call_from_row(row) for row in rows]

    # -- recordings ------------------------------------------------------------------

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
        if not 1 <= retention_days <= 3650:
            raise StorageError(f"retention_days must be 1..3650, got {retention_days}")
        expires_at = started_at + retention_days * 86400
        async with self._write():
            try:
                _, recording_id = await self._execute(
                    "INSERT INTO recordings (call_id, owner_ext, path, format, channels,"
                    " sample_rate, codec, status, started_at, retention_days, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'recording', ?, ?, ?)",
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
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"cannot file recording {path!r}: {exc}") from exc
        assert recording_id is not None
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
            raise StorageError(f"cannot finish a recording as {status!r}")
        segments_json = json.dumps([[round(a, 3), round(b, 3)] for a, b in segments])
        async with self._write():
            changed, _ = await self._execute(
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
                await self._execute(
                    "UPDATE calls SET recorded = 1 WHERE id ="
                    " (SELECT call_id FROM recordings WHERE id = ?)",
                    (recording_id,),
                )
        if not changed:
            raise StorageError(f"unknown recording id {recording_id}")

    async def get_recording(self, recording_id: int) -> Recording | None:
        async with self._read():
            row = await self._one(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
            )
        return _recording_from_row(row) if row is not None else None

    async def recordings_with_status(self, status: str) -> list[Recording]:
        """Recordings in one status, oldest first (e.g. `recording` after a crash)."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE status = ?"
                " ORDER BY started_at, id",
                (status,),
            )
        return [_recording_from_row(row) for row in rows]

    async def list_recordings(
        self,
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
            raise StorageError("limit and offset must not be negative")
        conditions, params = started_between("r.started_at", since, until)
        if owner_ext is not None:
            conditions.append("r.owner_ext = ?")
            params.append(owner_ext)
        if call_id is not None:
            conditions.append("r.call_id = ?")
            params.append(call_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._read():
            rows = await self._all(
                f"SELECT {_RECORDING_COLUMNS_R}, {_CALL_COLUMNS_ALIASED} FROM recordings r"
                f" JOIN calls c ON c.id = r.call_id{where}"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return [
            RecordingListing(_recording_from_row(row), _call_from_prefixed_row(row)) for row in rows
        ]

    async def add_recording_toggle(
        self, recording_id: int, at: float, action: str, method: str
    ) -> None:
        """Log an on-demand start/stop of a recording and how it was asked for."""
        if action not in ("start", "stop"):
            raise StorageError(f"toggle action must be start or stop, got {action!r}")
        async with self._write():
            await self._execute(
                "INSERT INTO recording_toggles (recording_id, at, action, method)"
                " VALUES (?, ?, ?, ?)",
                (recording_id, at, action, method),
            )

    async def recording_toggles(self, recording_id: int) -> list[tuple[float, str, str]]:
        """(at, action, method) of each toggle of a recording, in order."""
        async with self._read():
            rows = await self._all(
                "SELECT at, action, method FROM recording_toggles WHERE recording_id = ?"
                " ORDER BY at, id",
                (recording_id,),
            )
        return [(float(r["at"]), str(r["action"]), str(r["method"])) for r in rows]

    # -- audit -----------------------------------------------------------------------

    async def audit(
        self,
        actor: str,
        action: str,
        object: str | None = None,
        *,
        address: str | None = None,
        detail: str | None = None,
        at: float | None = None,
    ) -> None:
        """Append to the audit log (plays, downloads, exports, mode changes, purges...)."""
        async with self._write():
            await self._execute(
                "INSERT INTO audit (at, actor, action, object, address, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if at is None else at, actor, action, object, address, detail),
            )

    async def list_audit(self, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        async with self._read():
            rows = await self._all(
                "SELECT id, at, actor, action, object, address, detail FROM audit"
                " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            )
        return [
            AuditEntry(
                int(r["id"]),
                float(r["at"]),
                str(r["actor"]),
                str(r["action"]),
                r["object"],
                r["address"],
                r["detail"],
            )
            for r in rows
        ]

    # -- settings --------------------------------------------------------------------

    async def get_setting(self, key: str) -> str | None:
        """The stored text of a setting, or None if never set."""
        async with self._read():
            row = await self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row["value"]) if row is not None else None

    async def set_setting(self, key: str, value: str) -> None:
        """Store a setting's text, replacing any previous value."""
        if not key:
            raise StorageError("setting key must not be empty")
        async with self._write():
            await self._execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def all_settings(self) -> dict[str, str]:
        """Every stored setting."""
        async with self._read():
            rows = await self._all("SELECT key, value FROM settings ORDER BY key")
        return {str(row["key"]): str(row["value"]) for row in rows}

    # -- retention -------------------------------------------------------------------

    async def expired_recordings(self, now: float, limit: int | None = None) -> list[Recording]:
        """Recordings whose `expires_at <= now` and whose file is still kept, oldest
        expiry first. A row still `recording` is left alone: its file is open."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings"
                " WHERE expires_at <= ? AND status NOT IN ('purged', 'recording')"
                " ORDER BY expires_at, id LIMIT ?",
                (now, -1 if limit is None else limit),
            )
        return [_recording_from_row(row) for row in rows]

    async def mark_recording_purged(
        self, recording_id: int, *, at: float, actor: str, detail: str | None = None
    ) -> bool:
        """Mark an expired recording `purged` (metadata kept) and audit it, atomically.

        Returns False, changing nothing, if the row is unknown, already purged or not
        expired at `at` (so nothing unexpired can ever be marked)."""
        async with self._write():
            changed, _ = await self._execute(
                "UPDATE recordings SET status = 'purged', purged_at = ?"
                " WHERE id = ? AND expires_at <= ? AND status NOT IN ('purged', 'recording')",
                (at, recording_id, at),
            )
            if changed:
                await self._execute(
                    "INSERT INTO audit (at, actor, action, object, address, detail)"
                    " VALUES (?, ?, 'purge', ?, NULL, ?)",
                    (at, actor, f"recording {recording_id}", detail),
                )
        return bool(changed)

    # -- exports ---------------------------------------------------------------------

    async def export_listings(self, since: float, until: float) -> list[RecordingListing]:
        """Exportable recordings (complete or recovered) with since <= started_at < until,
        oldest first, with their calls."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_RECORDING_COLUMNS_R}, {_CALL_COLUMNS_ALIASED} FROM recordings r"
                " JOIN calls c ON c.id = r.call_id"
                " WHERE r.started_at >= ? AND r.started_at < ?"
                " AND r.status IN ('complete', 'recovered')"
                " ORDER BY r.started_at, r.id",
                (since, until),
            )
        return [
            RecordingListing(_recording_from_row(row), _call_from_prefixed_row(row)) for row in rows
        ]

    async def create_export(self, month: str, requested_by: str, requested_at: float) -> int:
        """File a `queued` export of `month` (YYYY-MM); returns its id."""
        async with self._write():
            _, export_id = await self._execute(
                "INSERT INTO exports (month, requested_by, requested_at, status)"
                " VALUES (?, ?, ?, 'queued')",
                (month, requested_by, requested_at),
            )
        assert export_id is not None
        return export_id

    async def update_export(self, export_id: int, status: str, **fields: Any) -> None:
        """Set an export's status and any of path, bytes, files, error, finished_at."""
        if status not in EXPORT_STATUSES:
            raise StorageError(f"invalid export status {status!r}")
        unknown = sorted(set(fields) - {"path", "bytes", "files", "error", "finished_at"})
        if unknown:
            raise StorageError(f"unknown export field(s): {', '.join(unknown)}")
        assignments = "".join(f", {name} = ?" for name in fields)
        async with self._write():
            changed, _ = await self._execute(
                f"UPDATE exports SET status = ?{assignments} WHERE id = ?",
                (status, *fields.values(), export_id),
            )
        if not changed:
            raise StorageError(f"unknown export id {export_id}")

    async def get_export(self, export_id: int) -> ExportJob | None:
        async with self._read():
            row = await self._one(
                f"SELECT {_EXPORT_COLUMNS} FROM exports WHERE id = ?", (export_id,)
            )
        return _export_from_row(row) if row is not None else None

    async def list_exports(self, limit: int = 100, offset: int = 0) -> list[ExportJob]:
        """Exports newest first."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_EXPORT_COLUMNS} FROM exports ORDER BY requested_at DESC, id DESC"
                " LIMIT ? OFFSET ?",
                (limit, offset),
            )
        return [_export_from_row(row) for row in rows]

    async def exports_finished_before(self, before: float) -> list[ExportJob]:
        """Ready or failed exports that finished before `before` (their files may go)."""
        async with self._read():
            rows = await self._all(
                f"SELECT {_EXPORT_COLUMNS} FROM exports"
                " WHERE status IN ('ready', 'failed') AND finished_at < ? ORDER BY id",
                (before,),
            )
        return [_export_from_row(row) for row in rows]

    async def setting_or_default(self, key: str, default: str) -> str:
        """The setting's text; if never set, store `default` first (the first writer
        wins, also across processes) and return what is stored."""
        async with self._write():
            await self._execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            row = await self._one("SELECT value FROM settings WHERE key = ?", (key,))
        assert row is not None
        return str(row["value"])

    # -- admins ----------------------------------------------------------------------

    async def add_admin(self, name: str, password: str, *, email: str | None = None) -> Admin:
        """Create a portal admin; only an argon2 hash of the password is stored."""
        name = _validate_admin_name(name)
        _validate_admin_password(password)
        if email is not None and not _EMAIL.fullmatch(email):
            raise StorageError(f"invalid email {email!r}")
        password_hash = await asyncio.to_thread(_ADMIN_HASHER.hash, password)
        created_at = time.time()
        async with self._write():
            existing = await self._one("SELECT 1 FROM admins WHERE name = ?", (name,))
            if existing is not None:
                raise StorageError(f"admin {name!r} already exists")
            _, admin_id = await self._execute(
                "INSERT INTO admins (name, password_hash, email, created_at) VALUES (?, ?, ?, ?)",
                (name, password_hash, email, created_at),
            )
        assert admin_id is not None
        return Admin(admin_id, name, email, created_at)

    async def set_admin_password(self, name: str, password: str) -> None:
        _validate_admin_password(password)
        password_hash = await asyncio.to_thread(_ADMIN_HASHER.hash, password)
        async with self._write():
            changed, _ = await self._execute(
                "UPDATE admins SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
        if not changed:
            raise StorageError(f"unknown admin {name!r}")

    async def verify_admin(self, name: str, password: str) -> Admin | None:
        """The admin if `password` is theirs, else None (unknown names cost the same
        argon2 work, so timing does not tell which names exist)."""
        async with self._read():
            row = await self._one(
                "SELECT id, name, email, created_at, password_hash FROM admins WHERE name = ?",
                (name,),
            )
        if row is None:
            await asyncio.to_thread(_argon2_matches, None, password)
            return None
        stored = str(row["password_hash"])
        if not await asyncio.to_thread(_argon2_matches, stored, password):
            return None
        if _ADMIN_HASHER.check_needs_rehash(stored):
            await self.set_admin_password(name, password)
        return Admin(int(row["id"]), str(row["name"]), row["email"], float(row["created_at"]))

    async def get_admin(self, name: str) -> Admin | None:
        async with self._read():
            row = await self._one(
                "SELECT id, name, email, created_at FROM admins WHERE name = ?", (name,)
            )
        if row is None:
            return None
        return Admin(int(row["id"]), str(row["name"]), row["email"], float(row["created_at"]))

    async def list_admins(self) -> list[Admin]:
        async with self._read():
            rows = await self._all("SELECT id, name, email, created_at FROM admins ORDER BY name")
        return [
            Admin(int(r["id"]), str(r["name"]), r["email"], float(r["created_at"])) for r in rows
        ]

    async def remove_admin(self, name: str) -> None:
        async with self._write():
            changed, _ = await self._execute("DELETE FROM admins WHERE name = ?", (name,))
        if not changed:
            raise StorageError(f"unknown admin {name!r}")


_EXPORT_COLUMNS = (
    "id, month, requested_by, requested_at, status, path, bytes, files, error, finished_at"
)


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
    )


_ADMIN_HASHER = PasswordHasher()
_ADMIN_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_ADMIN_PASSWORD_LENGTH = 8


@functools.cache
def _dummy_admin_hash() -> str:
    """Verified against when the name is unknown, so both paths do the same argon2 work."""
    return _ADMIN_HASHER.hash("callrec-no-such-admin")


def _validate_admin_name(name: str) -> str:
    if not isinstance(name, str) or not _ADMIN_NAME.fullmatch(name):
        raise StorageError(f"invalid admin name {name!r}: 1 to 64 of letters, digits and . _ @ -")
    return name


def _validate_admin_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_ADMIN_PASSWORD_LENGTH:
        raise StorageError(
            f"admin password too short: at least {MIN_ADMIN_PASSWORD_LENGTH} characters"
        )


def _argon2_matches(stored_hash: str | None, password: str) -> bool:
    """Argon2 check; None (no such admin) is checked against a dummy hash, then False."""
    try:
        matches = _ADMIN_HASHER.verify(stored_hash or _dummy_admin_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matches and stored_hash is not None
