"""The store on PostgreSQL, through asyncpg: `PostgresDatabase`, and the dialect layer
that runs the store's SQLite-spelled SQL there.

Selected by a `postgresql://` URL (`[storage] db`); the `callrec[cluster]` extra
installs asyncpg. Several callrec nodes share one database.

Connections: an asyncpg pool (one to `_POOL_MAX` connections). A connection the server
dropped (a restart, a stop) is replaced at its next use, so the store comes back by
itself once the server does; until then every use fails fast as `StorageUnavailable`.

Writers: `transaction()` takes one transaction-scoped advisory lock
(`pg_advisory_xact_lock`) before its body, so writers are serialised across every
process and node exactly as SQLite's `BEGIN IMMEDIATE` serialises them across
processes; the checks the concept modules make inside a write transaction ("this
username belongs to nobody else") hold here too. Waiting for that lock (or any row lock)
is bounded by `lock_timeout` (`busy_timeout_s`), then `StorageUnavailable`. Readers take
no lock.

The dialect (`translate`): the concept modules' SQL is SQLite's; here it becomes
PostgreSQL's, once per statement text (cached):
- `?` → `$1, $2, ...`; `:name` (migrations) → `$n`; string literals are left alone;
- `IS ?` / `IS NOT ?` → `IS NOT DISTINCT FROM` / `IS DISTINCT FROM`;
- `LIKE` → `ILIKE` (SQLite's LIKE ignores ASCII case);
- `INSERT OR IGNORE` → `INSERT ... ON CONFLICT DO NOTHING`;
- a negative `LIMIT` (SQLite: no limit) → `LIMIT NULL`;
- in DDL: `INTEGER PRIMARY KEY AUTOINCREMENT` → an identity column, `INTEGER` →
  `BIGINT` (SQLite integers are 64-bit), `REAL` → `DOUBLE PRECISION` (PostgreSQL's
  REAL is 32-bit), `TEXT` → `TEXT COLLATE "C"` (SQLite compares and sorts text by
  bytes, whatever the database's locale), `COLLATE NOCASE` dropped (the one such
  column, `organisations.domain`, is stored in lower case by the store);
- `execute` of an INSERT appends `RETURNING *` for the new row's id (SQLite's
  `lastrowid`).
Numeric results (`SUM` over integers) come back as int or float, as on SQLite.
What cannot be translated (`PRAGMA`, FTS5 `MATCH`) raises `StorageError` naming the
statement: such SQL needs a `PerDialect` variant or a `session.dialect` branch.

Errors (`_translate`): integrity violations → `Conflict`; a server that cannot be
reached, is shutting down or starting, refuses the login, has no such database, is out
of disk, memory or connections, or a lock wait that timed out → `StorageUnavailable`,
with a message that names no host or URL (the log has them, without the password).

Change counting for caches (`storage.changes`): after the migrations, every open makes
sure `callrec_changes` and its statement triggers exist on the directory's tables. A
trigger adds one to its writer's row (`origin`: one random token per open database, a
session setting of its connections), so a process sums the others' rows to learn that
another process or node changed the directory, as SQLite's `data_version` tells it.
Writes of this process are reported by `watch_writes` when they commit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

from storage.connection import (
    POSTGRESQL,
    Database,
    Row,
    Session,
    redact_url,
)
from storage.errors import Conflict, StorageError, StorageUnavailable

__all__ = [
    "CHANGE_COUNTED_TABLES",
    "PostgresDatabase",
    "PostgresSession",
    "changes_of_others",
    "translate",
]

log = logging.getLogger("callrec.storage")

# The tables whose writes the directory cache must learn about (storage.changes).
CHANGE_COUNTED_TABLES = ("organisations", "dids", "users", "devices", "registrations")

_POOL_MAX = 8
_CONNECT_TIMEOUT_S = 5.0
_COMMAND_TIMEOUT_S = 15.0
# The one advisory lock every write transaction takes ("call" in ASCII).
_WRITE_LOCK_KEY = 0x63616C6C
_ORIGIN_SETTING = "callrec.origin"


# -- the dialect ------------------------------------------------------------------------

# Pieces of SQL the translation must not look inside: string literals and quoted names.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
_IS_NOT_PARAM = re.compile(r"\bIS\s+NOT\s+\?", re.IGNORECASE)
_IS_PARAM = re.compile(r"\bIS\s+\?", re.IGNORECASE)
_LIKE = re.compile(r"\bLIKE\b", re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_INSERT_OR_OTHER = re.compile(r"^\s*INSERT\s+OR\s+\w+", re.IGNORECASE)
_IDENTITY = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.IGNORECASE)
_INTEGER = re.compile(r"\bINTEGER\b")
_REAL = re.compile(r"\bREAL\b")
_TEXT = re.compile(r"\bTEXT\b")
_NOCASE = re.compile(r"\s*\bCOLLATE\s+NOCASE\b", re.IGNORECASE)
_DDL_COLUMNS = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE\s+\w+\s+ADD\s+COLUMN)\b", re.I)
_UNSUPPORTED = re.compile(r"^\s*PRAGMA\b|\bMATCH\s+\?|\bUSING\s+fts5\b", re.IGNORECASE)
_LIMIT_PARAM = re.compile(r"\bLIMIT\s+\$(\d+)", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_WRITTEN_TABLE = re.compile(
    r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Translated:
    """A statement in PostgreSQL's spelling: its text, the parameter numbers (0-based)
    a negative value of which means "no limit", the table it writes (if any) and, for
    named parameters, their order."""

    sql: str
    limit_params: tuple[int, ...]
    written_table: str | None
    names: tuple[str, ...] = ()


def _outside_quotes(sql: str, change: Callable[[str], str]) -> str:
    """Apply `change` to the parts of `sql` outside string literals and quoted names."""
    pieces: list[str] = []
    last = 0
    for match in _QUOTED.finditer(sql):
        pieces.append(change(sql[last : match.start()]))
        pieces.append(match.group(0))
        last = match.end()
    pieces.append(change(sql[last:]))
    return "".join(pieces)


def _translate_types(part: str, ddl: bool) -> str:
    part = _IDENTITY.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", part)
    part = _INTEGER.sub("BIGINT", part)
    part = _REAL.sub("DOUBLE PRECISION", part)
    part = _NOCASE.sub("", part)
    if ddl:
        part = _TEXT.sub('TEXT COLLATE "C"', part)
    return part


@lru_cache(maxsize=2048)
def translate(sql: str, named: bool = False) -> Translated:
    """`sql`, written for SQLite, in PostgreSQL's spelling (see the module docstring).
    `named`: the statement uses `:name` parameters instead of `?`."""
    if _UNSUPPORTED.search(sql):
        raise StorageError(f"SQLite-only SQL cannot run on PostgreSQL: {sql.strip()[:80]!r}")
    if _INSERT_OR_OTHER.match(sql) and not _INSERT_OR_IGNORE.match(sql):
        raise StorageError(f"INSERT OR ... has no PostgreSQL form: {sql.strip()[:80]!r}")
    written = _WRITTEN_TABLE.match(sql)
    ignore = bool(_INSERT_OR_IGNORE.match(sql))
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)
    ddl = bool(_DDL_COLUMNS.match(sql))

    def rewrite(part: str) -> str:
        part = _IS_NOT_PARAM.sub("IS DISTINCT FROM ?", part)
        part = _IS_PARAM.sub("IS NOT DISTINCT FROM ?", part)
        part = _LIKE.sub("ILIKE", part)
        return _translate_types(part, ddl)

    sql = _outside_quotes(sql, rewrite)
    names: list[str] = []
    counter = 0

    def number(part: str) -> str:
        nonlocal counter
        if named:

            def name(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            return _NAMED.sub(name, part)
        out: list[str] = []
        for char in part:
            if char == "?":
                counter += 1
                out.append(f"${counter}")
            else:
                out.append(char)
        return "".join(out)

    sql = _outside_quotes(sql, number)
    if ignore:
        sql = f"{sql.rstrip()} ON CONFLICT DO NOTHING"
    limits = tuple(int(m.group(1)) - 1 for m in _LIMIT_PARAM.finditer(sql))
    return Translated(sql, limits, written.group(1).lower() if written else None, tuple(names))


def _arguments(translated: Translated, params: Sequence[Any]) -> list[Any]:
    args = list(params)
    for index in translated.limit_params:
        if index < len(args) and isinstance(args[index], int) and args[index] < 0:
            args[index] = None  # SQLite: a negative LIMIT is no limit
    return args


def _numeric(text: str) -> int | float:
    """PostgreSQL's numeric (SUM over integers, say) as SQLite gives it: int or float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


# -- errors -----------------------------------------------------------------------------

_UNREACHABLE = "the database server cannot be reached; try again"


def _translate(exc: BaseException, location: str) -> StorageError:
    """The typed error for an asyncpg (or OS) failure on the database at `location`
    (a URL without its password)."""
    errors = asyncpg.exceptions
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, errors.IntegrityConstraintViolationError):
        return Conflict(f"constraint violated: {exc}")
    log.error("database %s: %s (%s)", location, exc, type(exc).__name__)
    if isinstance(exc, errors.LockNotAvailableError | errors.TransactionRollbackError):
        return StorageUnavailable("the database is busy with another writer; try again")
    if isinstance(exc, errors.DiskFullError):
        return StorageUnavailable("the disk holding the database is full")
    if isinstance(exc, errors.InsufficientResourcesError):
        return StorageUnavailable("the database server is out of resources; try again")
    if isinstance(exc, errors.InvalidAuthorizationSpecificationError):
        return StorageUnavailable("the database server refused callrec's login")
    if isinstance(exc, errors.InvalidCatalogNameError):
        return StorageUnavailable("the database does not exist on the database server")
    if isinstance(exc, errors.OperatorInterventionError):
        return StorageUnavailable("the database server is shutting down or restarting")
    if isinstance(
        exc,
        errors.PostgresConnectionError
        | errors.InterfaceError
        | OSError
        | TimeoutError
        | asyncio.TimeoutError,
    ):
        return StorageUnavailable(_UNREACHABLE)
    return StorageError(f"database error: {exc}")


_FAILURES = (asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError, OSError)
_FAILURES_AND_TIMEOUT = (*_FAILURES, TimeoutError)


# -- sessions and the database ----------------------------------------------------------


class PostgresSession(Session):
    """Statements on one pooled connection, translated (see the module docstring)."""

    dialect = POSTGRESQL

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.written: set[str] = set()

    def _note(self, translated: Translated) -> None:
        if translated.written_table is not None:
            self.written.add(translated.written_table)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        translated = translate(sql)
        row: Row | None = await self._connection.fetchrow(
            translated.sql, *_arguments(translated, params)
        )
        return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        translated = translate(sql)
        return list(await self._connection.fetch(translated.sql, *_arguments(translated, params)))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        return await self._run(translate(sql), list(params))

    async def execute_named(self, sql: str, params: dict[str, Any]) -> tuple[int, int | None]:
        translated = translate(sql, named=True)
        return await self._run(translated, [params[name] for name in translated.names])

    async def _run(self, translated: Translated, params: list[Any]) -> tuple[int, int | None]:
        self._note(translated)
        args = _arguments(translated, params)
        if _INSERT.match(translated.sql) and not _RETURNING.search(translated.sql):
            rows = await self._connection.fetch(f"{translated.sql} RETURNING *", *args)
            last = rows[-1] if rows else None
            new_id = last["id"] if last is not None and "id" in last else None
            return len(rows), new_id
        status: str = await self._connection.execute(translated.sql, *args)
        count = status.rsplit(" ", 1)[-1]
        return (int(count) if count.isdigit() else -1), None


class PostgresDatabase(Database):
    """A PostgreSQL database through an asyncpg pool; `await PostgresDatabase.connect(url)`
    (or `Database.open(url)`)."""

    dialect = POSTGRESQL

    def __init__(self, pool: Any, location: str, origin: str) -> None:
        self._pool = pool
        self.location = location
        self.origin = origin
        self._watchers: list[tuple[frozenset[str], Callable[[], None]]] = []

    @classmethod
    async def connect(
        cls, url: str, *, busy_timeout_s: float = 5.0, default_domain: str | None = None
    ) -> PostgresDatabase:
        """Connect, migrate to the newest schema and install the change counting."""
        location = redact_url(url)
        origin = secrets.token_hex(8)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=_POOL_MAX,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=max(_COMMAND_TIMEOUT_S, busy_timeout_s * 2),
                server_settings={
                    "application_name": "callrec",
                    _ORIGIN_SETTING: origin,
                    # A writer waits this long for another's lock, like SQLite's
                    # busy_timeout, then fails as StorageUnavailable.
                    "lock_timeout": str(max(1, int(busy_timeout_s * 1000))),
                },
                init=_init_connection,
            )
        except (*_FAILURES_AND_TIMEOUT, ValueError) as exc:
            if isinstance(exc, ValueError) and not isinstance(exc, _FAILURES):
                raise StorageUnavailable(f"invalid PostgreSQL URL: {exc}") from None
            raise _translate(exc, location) from exc
        database = cls(pool, location, origin)
        try:
            await database._migrate(default_domain)
        except BaseException:
            await database.close()
            raise
        log.info("database: PostgreSQL at %s", location)
        return database

    def watch_writes(self, tables: Sequence[str], changed: Callable[[], None]) -> None:
        """Call `changed` whenever a statement of this database that writes one of
        `tables` has committed (before the writer's `transaction()` returns)."""
        self._watchers.append((frozenset(tables), changed))

    def _committed(self, written: set[str]) -> None:
        for tables, changed in self._watchers:
            if written & tables:
                changed()

    async def close(self) -> None:
        """Close the pool's connections; the database cannot be used afterwards."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except (*_FAILURES_AND_TIMEOUT,):
            self._pool.terminate()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Session]:
        """A pooled connection, each statement on its own (autocommit)."""
        try:
            async with self._pool.acquire() as connection:
                session = PostgresSession(connection)
                yield session
                if session.written:
                    self._committed(session.written)
        except _FAILURES_AND_TIMEOUT as exc:
            raise _translate(exc, self.location) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """One transaction holding the write lock; committed if the body succeeds,
        rolled back (and the error re-raised, translated) if it fails."""
        try:
            async with self._pool.acquire() as connection:
                session = PostgresSession(connection)
                async with connection.transaction():
                    await connection.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK_KEY)
                    yield session
                if session.written:
                    self._committed(session.written)
        except _FAILURES_AND_TIMEOUT as exc:
            raise _translate(exc, self.location) from exc

    async def _migrate(self, default_domain: str | None) -> None:
        # The write lock makes nodes starting together migrate one after another.
        async with self.transaction() as session:
            await session.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        await self._apply_migrations(default_domain)
        async with self.transaction() as session:
            assert isinstance(session, PostgresSession)
            for statement in _change_counting_statements():
                await session._connection.execute(statement)
            # Rows given their ids (a migration's, an import's) leave an identity
            # behind them: move each past the largest id its table holds.
            for row in await session.all(
                "SELECT table_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND column_name = 'id' AND is_identity = 'YES'"
            ):
                table = str(row["table_name"])
                await session.one(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
                )


async def _init_connection(connection: Any) -> None:
    await connection.set_type_codec(
        "numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text"
    )


def _change_counting_statements() -> list[str]:
    """`callrec_changes`, its trigger function and one statement trigger per counted
    table; idempotent. Rows of writers gone for a day are dropped (the sum moves, so
    every cache reloads once: harmless)."""
    statements = [
        "CREATE TABLE IF NOT EXISTS callrec_changes ("
        ' origin TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL,'
        " updated_at DOUBLE PRECISION NOT NULL)",
        f"""CREATE OR REPLACE FUNCTION callrec_count_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO callrec_changes (origin, version, updated_at)
            VALUES (COALESCE(current_setting('{_ORIGIN_SETTING}', true), ''), 1,
                EXTRACT(EPOCH FROM now()))
            ON CONFLICT (origin) DO UPDATE
                SET version = callrec_changes.version + 1, updated_at = excluded.updated_at;
            RETURN NULL;
        END $$""",
        f"DELETE FROM callrec_changes WHERE updated_at < {time.time() - 86400:.0f}",
    ]
    statements += [
        f"CREATE OR REPLACE TRIGGER callrec_count_{table} AFTER INSERT OR UPDATE OR DELETE"
        f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION callrec_count_change()"
        for table in CHANGE_COUNTED_TABLES
    ]
    return statements


async def changes_of_others(session: Session, origin: str) -> int:
    """The count of directory changes committed by other processes and nodes."""
    row = await session.one(
        "SELECT COALESCE(SUM(version), 0) AS v FROM callrec_changes WHERE origin != ?", (origin,)
    )
    return int(row["v"]) if row is not None else 0
