"""The database: its schema migrations, the two ways to use it, and its backends.

`Database.open(location)` opens the store's database: a SQLite file (the embedded
default) or, for a `postgresql://` URL, a PostgreSQL database through asyncpg
(`storage.postgresql`, the `callrec[cluster]` extra). Either way `read()` and
`transaction()` are the only doors, every statement is written once in SQLite's
spelling (the PostgreSQL side translates it), and the same numbered migrations build the
schema. `transaction()` serialises every writer of the database, in every process and on
every node, as SQLite's one write lock does.

SQLite: one file through one aiosqlite connection. `read()` and `transaction()` both
hold one asyncio lock, so the coroutines of one process never interleave statements,
and `transaction()` runs its body in one `BEGIN IMMEDIATE ... COMMIT`, which also
serialises writers from other processes (the `callrec users ...` CLI beside a running
server). WAL mode lets readers in other processes proceed meanwhile.

Every driver error is translated, once, into a typed `storage.errors` error: a
constraint becomes `Conflict`; a full disk, a lock held too long, an unreadable or
read-only file, I/O errors and a database server that cannot be reached become
`StorageUnavailable`, whose message never names a server path or address (those go to
the log).

Schema changes are versioned: `MIGRATIONS[i]` holds the statements that take the schema
from version i to i + 1, and `schema_version` records what has been applied. To change
the schema, append a tuple of statements; never edit one that has shipped. A statement
is written for SQLite; PostgreSQL gets it with the types translated (see
`storage.postgresql`). Where the two need different SQL, the step is a `PerDialect`
holding both, next to each other.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import aiosqlite

from callrec.policy import (
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    DEFAULT_RECORDING_MODE,
    RECORDING_MODES,
)
from storage.errors import Conflict, EmptyDatabase, StorageError, StorageUnavailable

__all__ = [
    "DEFAULT_DOMAIN_PARAMETER",
    "MAX_ROW_ID",
    "MIGRATIONS",
    "POSTGRESQL",
    "SQLITE",
    "Database",
    "PerDialect",
    "Row",
    "Session",
    "SqliteDatabase",
    "is_postgresql_url",
    "migration_statements",
    "redact_url",
    "started_between",
]

log = logging.getLogger("callrec.storage")

# SQLite integers are signed 64-bit; a larger id (from a URL) can name nothing.
MAX_ROW_ID = 2**63 - 1

# The recording modes as SQL: the column default and the CHECK list come from the product
# rules. SQLite cannot change a CHECK in place, so a new mode also needs a migration that
# rebuilds `users`; a database made before it keeps the CHECK it was created with.
_MODES_SQL = ", ".join(f"'{mode}'" for mode in RECORDING_MODES)
_DEFAULT_MODE_SQL = f"'{DEFAULT_RECORDING_MODE.value}'"

# The backends (`Database.dialect`, `Session.dialect`).
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")

# A row, read by column name or index: sqlite3.Row on SQLite; on PostgreSQL an
# asyncpg.Record, which reads the same way (`row["id"]`, `row[0]`, `keys()`).
Row: TypeAlias = sqlite3.Row


@dataclass(frozen=True)
class PerDialect:
    """A migration step whose SQL differs by backend: the statements for each."""

    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


MIGRATIONS: tuple[tuple[str | PerDialect, ...], ...] = (
    # 1: users, devices, registrations, calls, settings
    (
        f"""CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            extension TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            email TEXT,
            recording_mode TEXT NOT NULL DEFAULT {_DEFAULT_MODE_SQL}
                CHECK (recording_mode IN ({_MODES_SQL})),
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
    # 5: a user's own language for the portal (NULL: the organisation's)
    ("ALTER TABLE users ADD COLUMN language TEXT",),
    # 6: organisations. Everything so far belongs to organisation 1, "default", whose
    # SIP domain (its digest realm) is the configured realm (`:default_domain`, else the
    # realm its users' passwords were hashed with, else "callrec"). Extensions become
    # unique per organisation: `users` is rebuilt (foreign keys are off while migrating,
    # see Database._migrate, so dropping the old table cascades nothing).
    (
        """CREATE TABLE organisations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            slug TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            domain TEXT NOT NULL UNIQUE COLLATE NOCASE,
            language TEXT,
            timezone TEXT,
            created_at REAL NOT NULL
        )""",
        # SQLite cannot drop a UNIQUE constraint: `users` is rebuilt. PostgreSQL alters
        # it in place, and its clock is not strftime's.
        PerDialect(
            sqlite=(
                """INSERT INTO organisations (id, slug, name, domain, language, timezone,
                created_at)
            VALUES (1, 'default', 'Default organisation', lower(COALESCE(:default_domain,
                (SELECT realm FROM users GROUP BY realm ORDER BY COUNT(*) DESC LIMIT 1),
                'callrec')),
                (SELECT value FROM settings WHERE key = 'language'),
                (SELECT value FROM settings WHERE key = 'timezone'),
                CAST(strftime('%s', 'now') AS REAL))""",
                f"""CREATE TABLE users_new (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                org_id INTEGER NOT NULL REFERENCES organisations(id),
                extension TEXT NOT NULL,
                name TEXT NOT NULL,
                email TEXT,
                recording_mode TEXT NOT NULL DEFAULT {_DEFAULT_MODE_SQL}
                    CHECK (recording_mode IN ({_MODES_SQL})),
                realm TEXT NOT NULL,
                ha1_md5 TEXT,
                ha1_sha256 TEXT,
                created_at REAL NOT NULL,
                portal_password_hash TEXT,
                language TEXT,
                UNIQUE (org_id, extension)
            )""",
                """INSERT INTO users_new (id, org_id, extension, name, email, recording_mode, realm,
                ha1_md5, ha1_sha256, created_at, portal_password_hash, language)
            SELECT id, 1, extension, name, email, recording_mode, realm, ha1_md5, ha1_sha256,
                created_at, portal_password_hash, language FROM users""",
                "DROP TABLE users",
                "ALTER TABLE users_new RENAME TO users",
            ),
            postgresql=(
                """INSERT INTO organisations (id, slug, name, domain, language, timezone,
                    created_at)
                VALUES (1, 'default', 'Default organisation', lower(COALESCE(:default_domain,
                    (SELECT realm FROM users GROUP BY realm ORDER BY COUNT(*) DESC LIMIT 1),
                    'callrec')),
                    (SELECT value FROM settings WHERE key = 'language'),
                    (SELECT value FROM settings WHERE key = 'timezone'),
                    EXTRACT(EPOCH FROM now()))""",
                # The id was given: move the identity past it.
                "SELECT setval(pg_get_serial_sequence('organisations', 'id'),"
                " (SELECT MAX(id) FROM organisations))",
                "ALTER TABLE users ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
                "UPDATE users SET org_id = 1",
                "ALTER TABLE users ALTER COLUMN org_id SET NOT NULL",
                "ALTER TABLE users DROP CONSTRAINT users_extension_key",
                "ALTER TABLE users ADD CONSTRAINT users_org_extension UNIQUE (org_id, extension)",
            ),
        ),
        "ALTER TABLE devices ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE devices SET org_id = (SELECT u.org_id FROM users u WHERE u.id = devices.user_id)",
        "CREATE INDEX devices_org_username ON devices (org_id, username)",
        "ALTER TABLE calls ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE calls SET org_id = 1",
        "CREATE INDEX calls_org_started ON calls (org_id, started_at)",
        "ALTER TABLE recordings ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE recordings SET org_id = 1",
        "CREATE INDEX recordings_org_started ON recordings (org_id, started_at)",
        "ALTER TABLE exports ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE exports SET org_id = 1",
        # NULL: a platform entry (an operator's change to organisations).
        "ALTER TABLE audit ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE audit SET org_id = 1",
        "CREATE INDEX audit_org_at ON audit (org_id, at)",
        # An admin administers one organisation; an operator (org_id NULL) the platform.
        "ALTER TABLE admins ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "ALTER TABLE admins ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'",
        "UPDATE admins SET org_id = 1",
        "ALTER TABLE api_tokens ADD COLUMN org_id INTEGER REFERENCES organisations(id)",
        "UPDATE api_tokens SET org_id = 1",
        """CREATE TABLE org_settings (
            org_id INTEGER NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (org_id, key)
        )""",
        # Language and time zone are the organisation's columns; the rest move over.
        """INSERT INTO org_settings (org_id, key, value)
        SELECT 1, key, value FROM settings
        WHERE key IN ('feature_code', 'retention_days', 'announcement', 'channels')""",
        # Bulk download was open to every organisation keeping recordings long enough:
        # the new switch starts on where it was so.
        f"""INSERT INTO org_settings (org_id, key, value)
        SELECT 1, 'bulk_download', 'on' FROM settings
        WHERE key = 'retention_days'
            AND CAST(value AS INTEGER) >= {BULK_DOWNLOAD_MIN_RETENTION_DAYS}""",
        """DELETE FROM settings WHERE key IN ('feature_code', 'retention_days',
            'announcement', 'channels', 'language', 'timezone')""",
        """CREATE TABLE dids (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            org_id INTEGER NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
            first TEXT NOT NULL,
            last TEXT NOT NULL,
            extension TEXT,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX dids_org ON dids (org_id)",
    ),
    # 7: portal sessions kept across restarts: only the SHA-256 of the cookie's token,
    # who it is (an admin or operator, or a user, each gone with their session), the
    # organisation, the idle deadline and the notices the next page shows.
    (
        """CREATE TABLE portal_sessions (
            token_sha256 TEXT PRIMARY KEY,
            org_id INTEGER REFERENCES organisations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            admin_id INTEGER REFERENCES admins(id) ON DELETE CASCADE,
            user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            notices TEXT NOT NULL DEFAULT '[]',
            CHECK ((admin_id IS NULL) <> (user_id IS NULL))
        )""",
        "CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at)",
        "CREATE INDEX portal_sessions_user ON portal_sessions (user_id)",
        "CREATE INDEX portal_sessions_admin ON portal_sessions (admin_id)",
    ),
    # 8: the calls' search index (storage.search): an FTS5 trigram index over the
    # parties' numbers and names, an external-content table kept by triggers. (A later
    # migration that rebuilds `calls` must create these triggers again.)
    (
        # PostgreSQL has no FTS5: trigram (pg_trgm) GIN indexes on the same columns
        # serve storage.search's LIKE (ILIKE there) for any length.
        PerDialect(
            sqlite=(
                """CREATE VIRTUAL TABLE calls_search USING fts5(
                    caller_ext, caller_name, callee_ext, callee_name,
                    content = 'calls', content_rowid = 'id', tokenize = 'trigram')""",
                "INSERT INTO calls_search (calls_search) VALUES ('rebuild')",
                """CREATE TRIGGER calls_search_insert AFTER INSERT ON calls BEGIN
                    INSERT INTO calls_search
                        (rowid, caller_ext, caller_name, callee_ext, callee_name)
                    VALUES (new.id, new.caller_ext, new.caller_name, new.callee_ext,
                        new.callee_name);
                END""",
                """CREATE TRIGGER calls_search_delete AFTER DELETE ON calls BEGIN
                    INSERT INTO calls_search
                        (calls_search, rowid, caller_ext, caller_name, callee_ext, callee_name)
                    VALUES ('delete', old.id, old.caller_ext, old.caller_name, old.callee_ext,
                        old.callee_name);
                END""",
                """CREATE TRIGGER calls_search_update
                AFTER UPDATE OF caller_ext, caller_name, callee_ext, callee_name ON calls BEGIN
                    INSERT INTO calls_search
                        (calls_search, rowid, caller_ext, caller_name, callee_ext, callee_name)
                    VALUES ('delete', old.id, old.caller_ext, old.caller_name, old.callee_ext,
                        old.callee_name);
                    INSERT INTO calls_search
                        (rowid, caller_ext, caller_name, callee_ext, callee_name)
                    VALUES (new.id, new.caller_ext, new.caller_name, new.callee_ext,
                        new.callee_name);
                END""",
            ),
            postgresql=(
                "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                "CREATE INDEX calls_search_caller_ext ON calls USING gin (caller_ext gin_trgm_ops)",
                "CREATE INDEX calls_search_caller_name ON calls"
                " USING gin (caller_name gin_trgm_ops)",
                "CREATE INDEX calls_search_callee_ext ON calls USING gin (callee_ext gin_trgm_ops)",
                "CREATE INDEX calls_search_callee_name ON calls"
                " USING gin (callee_name gin_trgm_ops)",
            ),
        ),
    ),
    # 9: where a recording's file is (storage.uploads): `local` on a node's disk (the
    # local folder, or being written), `uploading` finished and queued for the object
    # store by the node that holds the file (`upload_node`), `remote` verified in the
    # object store (the local copy deleted).
    (
        "ALTER TABLE recordings ADD COLUMN storage_state TEXT NOT NULL DEFAULT 'local'",
        "ALTER TABLE recordings ADD COLUMN upload_node TEXT",
        "CREATE INDEX recordings_storage_state ON recordings (storage_state, upload_node)",
    ),
    # 10: which node handles a call (`Calls.node`, set by `callrec serve`): at start-up a
    # node closes only the calls it left open, never the live calls of another node that
    # shares the store. Calls from before this migration have none (any node closes them).
    (
        "ALTER TABLE calls ADD COLUMN node TEXT",
        "CREATE INDEX calls_open_by_node ON calls (node) WHERE ended_at IS NULL",
    ),
    # 11: what the nodes sharing one store (PostgreSQL) share besides the data: each
    # node's heartbeat (`storage.nodes`: a node silent past `[cluster] node_timeout` has
    # its open calls closed by another), and the SIP authentication state
    # (`storage.auth`): the digest nonces' highest accepted `nc`, failure counts,
    # lock-outs and the sources a user authenticated from.
    (
        """CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            last_seen REAL NOT NULL
        )""",
        """CREATE TABLE nonce_counts (
            nonce TEXT PRIMARY KEY,
            issued_at REAL NOT NULL,
            nc INTEGER NOT NULL
        )""",
        "CREATE INDEX nonce_counts_issued ON nonce_counts (issued_at)",
        """CREATE TABLE auth_failures (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX auth_failures_key ON auth_failures (kind, key, at)",
        """CREATE TABLE auth_locks (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            locked_until REAL NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
        """CREATE TABLE auth_trust (
            username TEXT NOT NULL,
            source TEXT NOT NULL,
            trusted_until REAL NOT NULL,
            PRIMARY KEY (username, source)
        )""",
    ),
    # 12: the users who took part in a call (`storage.calls.own_call_condition`): a user
    # sees the calls filed with their id, never one whose outside number equals their
    # extension. Older calls get them from the direction (the caller of a call out, the
    # callee of a call in, both of an internal call) and the extension, as they were
    # matched before; a user's removal leaves NULL (the CDR keeps the numbers and names).
    # And an operator's own portal language (an operator has no organisation to take
    # one from; NULL: the browser's, else the server's).
    (
        "ALTER TABLE calls ADD COLUMN caller_user_id INTEGER"
        " REFERENCES users(id) ON DELETE SET NULL",
        "ALTER TABLE calls ADD COLUMN callee_user_id INTEGER"
        " REFERENCES users(id) ON DELETE SET NULL",
        """UPDATE calls SET caller_user_id = (SELECT u.id FROM users u
            WHERE u.org_id = calls.org_id AND u.extension = calls.caller_ext)
        WHERE direction IN ('outbound', 'internal')""",
        """UPDATE calls SET callee_user_id = (SELECT u.id FROM users u
            WHERE u.org_id = calls.org_id AND u.extension = calls.callee_ext)
        WHERE direction IN ('inbound', 'internal')""",
        "CREATE INDEX calls_caller_user ON calls (caller_user_id)",
        "CREATE INDEX calls_callee_user ON calls (callee_user_id)",
        "ALTER TABLE admins ADD COLUMN language TEXT",
    ),
)

# A migration statement may name this parameter: the configured SIP realm, the domain
# of the default organisation (None if the caller did not say).
DEFAULT_DOMAIN_PARAMETER = ":default_domain"

# What a client may be told about each SQLite failure (by the prefix of its error name).
_UNAVAILABLE = (
    ("SQLITE_FULL", "the disk holding the database is full"),
    ("SQLITE_BUSY", "the database is locked by another process; try again"),
    ("SQLITE_LOCKED", "the database is locked by another process; try again"),
    ("SQLITE_CANTOPEN", "the database file cannot be opened"),
    ("SQLITE_READONLY", "the database is read-only"),
    ("SQLITE_IOERR", "an I/O error occurred on the database"),
    ("SQLITE_CORRUPT", "the database file is damaged"),
    ("SQLITE_NOTADB", "the database file is not a callrec database"),
    ("SQLITE_PERM", "no permission to use the database"),
    ("SQLITE_NOMEM", "the server is out of memory"),
)


def _translate(exc: BaseException, path: Path) -> StorageError:
    """The typed error for a sqlite3 (or OS) failure on the database at `path`."""
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(f"constraint violated: {exc}")
    if isinstance(exc, OSError):
        log.error("database %s: %s", path, exc)
        return StorageUnavailable(f"the database folder cannot be used: {exc.strerror}")
    name = getattr(exc, "sqlite_errorname", None) or ""
    log.error("database %s: %s (%s)", path, exc, name or type(exc).__name__)
    for prefix, message in _UNAVAILABLE:
        if name.startswith(prefix):
            return StorageUnavailable(message)
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return StorageUnavailable(f"the database cannot be used ({name or 'unknown error'})")
    return StorageError(f"database error: {exc}")


_SQLITE_FAILURES = (sqlite3.Error, OSError)


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


def _is_empty_file(path: Path) -> bool:
    try:
        if path.stat().st_size != 0:
            return False
    except OSError:
        return False  # missing: a first start, the file is created; unreadable: open says so
    wal = path.with_name(path.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


class Session:
    """Statements inside one `Database.read()` or `Database.transaction()`.

    SQL is written once, in SQLite's spelling (`?` parameters, `INSERT OR IGNORE`,
    `IS ?`, `LIMIT -1`); the PostgreSQL session translates it (see `storage.postgresql`).
    `dialect` says which backend runs it, for the few statements that genuinely differ.
    Rows are read by column name or index (`row["id"]`, `row[0]`) on both backends."""

    dialect: str = SQLITE

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        raise NotImplementedError

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """Run one statement; returns (rows changed, id of the row inserted if any)."""
        raise NotImplementedError

    async def execute_named(self, sql: str, params: dict[str, Any]) -> tuple[int, int | None]:
        """`execute` with named parameters (`:name`)."""
        raise NotImplementedError


class SqliteSession(Session):
    """A session on the one aiosqlite connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._connection.execute(sql, params) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount, cursor.lastrowid

    async def execute_named(self, sql: str, params: dict[str, Any]) -> tuple[int, int | None]:
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount, cursor.lastrowid


def redact_url(url: str) -> str:
    """`url` without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def is_postgresql_url(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL server (`postgresql://` or `postgres://`)
    rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_POSTGRESQL_SCHEMES)


class Database:
    """The store's database: `await Database.open(location)` gives a `SqliteDatabase`
    for a file path and a `storage.postgresql.PostgresDatabase` for a
    `postgresql://` URL. Both are migrated to the newest schema and used the same way,
    through `read()` and `transaction()`."""

    dialect: str = SQLITE
    # What a log line may call the database: the file's path, or the URL without its
    # password.
    location: str = ""

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        create_empty: bool = False,
        default_domain: str | None = None,
    ) -> Database:
        """Open (creating folders and file as needed) and migrate to the newest schema.

        `path`: a SQLite file, or a `postgresql://user:password@host:port/database` URL.
        `busy_timeout_s`: how long a write waits for another writer's lock before
        failing as `StorageUnavailable`. An existing 0-byte file raises `EmptyDatabase`
        unless `create_empty`. `default_domain`: the configured SIP realm, the domain of
        the default organisation if the migration to organisations creates it."""
        if is_postgresql_url(path):
            # Imported here: asyncpg is an optional dependency (callrec[cluster]).
            from storage.postgresql import PostgresDatabase

            return await PostgresDatabase.connect(
                str(path), busy_timeout_s=busy_timeout_s, default_domain=default_domain
            )
        return await SqliteDatabase.open_file(
            Path(path),
            busy_timeout_s=busy_timeout_s,
            create_empty=create_empty,
            default_domain=default_domain,
        )

    @property
    def path(self) -> Path:
        """The SQLite file (a PostgreSQL database has none: StorageError)."""
        raise StorageError("a PostgreSQL store has no database file")

    async def close(self) -> None:
        raise NotImplementedError

    def read(self) -> AbstractAsyncContextManager[Session]:
        """A session for a few reads (no transaction: each statement sees the newest
        commit)."""
        raise NotImplementedError

    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """A session in one write transaction, serialised with every other writer of
        the database (all processes, all nodes); committed if the body succeeds, rolled
        back (and the error re-raised, translated) if it fails."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        """The schema version the database is at (len(MIGRATIONS) once opened)."""
        async with self.read() as session:
            row = await session.one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        return int(row["v"]) if row is not None else 0

    async def _apply_migrations(self, default_domain: str | None) -> None:
        """Run the migrations this database lacks, in one write transaction."""
        latest = len(MIGRATIONS)
        async with self.transaction() as session:
            # Read inside the write transaction: another process may have migrated.
            row = await session.one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            current = int(row["v"]) if row is not None else 0
            if current > latest:
                raise StorageUnavailable(
                    f"the database has schema version {current}, newer than this callrec"
                    f" understands ({latest}); upgrade callrec"
                )
            for version in range(current + 1, latest + 1):
                for statement in migration_statements(version, self.dialect):
                    if DEFAULT_DOMAIN_PARAMETER in statement:
                        await session.execute_named(statement, {"default_domain": default_domain})
                    else:
                        await session.execute(statement)
                await session.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
                log.info("database migrated to schema version %d", version)


def migration_statements(version: int, dialect: str) -> tuple[str, ...]:
    """The statements of migration `version` (1-based) for `dialect`."""
    statements: list[str] = []
    for step in MIGRATIONS[version - 1]:
        if isinstance(step, PerDialect):
            statements.extend(step.postgresql if dialect == POSTGRESQL else step.sqlite)
        else:
            statements.append(step)
    return tuple(statements)


class SqliteDatabase(Database):
    """One SQLite file through one aiosqlite connection (see the module docstring)."""

    dialect = SQLITE

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self._session = SqliteSession(connection)
        self._lock = asyncio.Lock()
        self._path = path
        self.location = str(path)

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    async def open_file(
        cls,
        db_path: Path,
        *,
        busy_timeout_s: float = 5.0,
        create_empty: bool = False,
        default_domain: str | None = None,
    ) -> SqliteDatabase:
        if not create_empty and _is_empty_file(db_path):
            raise EmptyDatabase(db_path)
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit, see transaction().
            connection = await aiosqlite.connect(str(db_path), isolation_level=None)
        except _SQLITE_FAILURES as exc:
            raise _translate(exc, db_path) from exc
        connection.row_factory = sqlite3.Row
        database = cls(connection, db_path)
        try:
            await database._configure(busy_timeout_s)
            await database._migrate(default_domain)
        except BaseException:
            await connection.close()
            raise
        return database

    async def close(self) -> None:
        """Close the connection; the database cannot be used afterwards."""
        async with self._lock:
            await self.connection.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Session]:
        """Hold the lock for a few reads (no transaction: each statement sees the
        newest commit)."""
        async with self._lock:
            try:
                yield self._session
            except _SQLITE_FAILURES as exc:
                raise _translate(exc, self.path) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """Hold the lock and one IMMEDIATE transaction; commit if the body succeeds,
        roll back (and re-raise, translated) if it fails."""
        async with self._lock:
            try:
                await self.connection.execute("BEGIN IMMEDIATE")
            except _SQLITE_FAILURES as exc:
                raise _translate(exc, self.path) from exc
            try:
                yield self._session
            except BaseException as exc:
                with suppress(*_SQLITE_FAILURES):
                    await self.connection.execute("ROLLBACK")
                if isinstance(exc, _SQLITE_FAILURES):
                    raise _translate(exc, self.path) from exc
                raise
            try:
                await self.connection.execute("COMMIT")
            except _SQLITE_FAILURES as exc:
                with suppress(*_SQLITE_FAILURES):
                    await self.connection.execute("ROLLBACK")
                raise _translate(exc, self.path) from exc

    async def _configure(self, busy_timeout_s: float) -> None:
        try:
            await self.connection.execute("PRAGMA foreign_keys = ON")
            # Another process (CLI vs server) may hold the write lock for a moment.
            await self.connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            row = await self._session.one("PRAGMA journal_mode = WAL")
            await self.connection.execute("PRAGMA synchronous = NORMAL")
        except _SQLITE_FAILURES as exc:
            raise _translate(exc, self.path) from exc
        if row is None or str(row[0]).lower() != "wal":
            log.error("database %s: journal mode stays %s", self.path, row[0] if row else None)
            raise StorageUnavailable("cannot enable WAL journal mode on the database")

    async def _migrate(self, default_domain: str | None) -> None:
        try:
            await self.connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            # SQLite's way to rebuild a table others refer to: foreign keys off (they
            # cannot change inside a transaction), rebuild, check, on again.
            await self.connection.execute("PRAGMA foreign_keys = OFF")
        except _SQLITE_FAILURES as exc:
            raise _translate(exc, self.path) from exc
        try:
            await self._apply_migrations(default_domain)
            async with self.read() as session:
                broken = await session.all("PRAGMA foreign_key_check")
            if broken:
                log.error("database %s: foreign keys broken: %s", self.path, broken[:5])
                raise StorageUnavailable("the database's references are inconsistent")
        finally:
            with suppress(*_SQLITE_FAILURES):
                await self.connection.execute("PRAGMA foreign_keys = ON")
