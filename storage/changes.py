"""What a cache of the directory (organisations and their numbers, users, devices,
registrations) needs from the store:
one read of all of it, and a way to learn that it changed.

Two kinds of writers change the directory, and each is seen its own way:
- This process (the portal, sharing the server's database): the count
  `DirectoryWatch.local_changes` moves while (SQLite) or as soon as (PostgreSQL) the
  writing transaction commits, before the writer's `await` returns, so a cache that
  checks it before each use never serves what the portal has just changed. On SQLite,
  TEMP triggers on `users`, `devices`, `organisations` and `dids`, created on this
  process's connection only, call a function that bumps it from the database thread; on
  PostgreSQL the database reports the commit of a statement that wrote one of those
  tables (`PostgresDatabase.watch_writes`).
- Other processes (the `callrec users ...` CLI) and, on PostgreSQL, other nodes:
  `data_version()`. On SQLite it is `PRAGMA data_version`, which changes whenever
  another connection has committed to the file (any commit, not only the directory's:
  a cache reloads a little more often than needed, never less); reading it touches no
  table, so it can be polled often. On PostgreSQL it is the sum of the other writers'
  rows of `callrec_changes`, which statement triggers on the directory's tables, and on
  `registrations` (another node's phones), keep (`storage.postgresql`): one indexed read.

Registrations are written by the SIP side itself (through the cache), or deleted with
their user (which the watch sees); on PostgreSQL other nodes' registrations arrive
through `data_version()`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from storage.connection import Database, SqliteDatabase
from storage.models import Device, Did, Organisation, Registration, User
from storage.organisations import DID_COLUMNS, ORG_COLUMNS, did_from_row, org_from_row
from storage.registrations import _registration_from_row
from storage.users import USER_COLUMNS, _device_from_row, user_from_row

__all__ = ["DirectorySnapshot", "DirectoryWatch", "load_directory"]

_CHANGED_FUNCTION = "callrec_directory_changed"
_WATCHED_TABLES = ("organisations", "dids", "users", "devices")


@dataclass(frozen=True)
class DirectorySnapshot:
    """Every organisation and number range, every user, every device and every
    unexpired registration, as one read saw them."""

    organisations: list[Organisation]
    dids: list[Did]
    users: list[User]
    devices: list[Device]
    registrations: list[Registration]


async def load_directory(database: Database, now: float) -> DirectorySnapshot:
    """Read the whole directory (registrations unexpired at `now`, newest first)."""
    async with database.read() as session:
        organisations = [
            org_from_row(r)
            for r in await session.all(f"SELECT {ORG_COLUMNS} FROM organisations ORDER BY id")
        ]
        dids = [
            did_from_row(r)
            for r in await session.all(f"SELECT {DID_COLUMNS} FROM dids ORDER BY first")
        ]
        users = [user_from_row(r) for r in await session.all(f"SELECT {USER_COLUMNS} FROM users")]
        devices = [
            _device_from_row(r)
            for r in await session.all(
                "SELECT id, user_id, uri, username, kind, ha1_md5, ha1_sha256 FROM devices"
                " ORDER BY id"
            )
        ]
        registrations = [
            _registration_from_row(r)
            for r in await session.all(
                "SELECT r.id, r.user_id, u.extension, r.contact, r.received, r.call_id,"
                " r.cseq, r.expires_at, r.device_username, r.instance, r.user_agent,"
                " r.updated_at FROM registrations r JOIN users u ON u.id = r.user_id"
                " WHERE r.expires_at > ? ORDER BY r.updated_at DESC, r.id DESC",
                (now,),
            )
        ]
    return DirectorySnapshot(organisations, dids, users, devices, registrations)


class DirectoryWatch:
    """Counts the directory's changes made through `database` (see the module
    docstring) and reads the changes of other processes and nodes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._counter = itertools.count(1)
        self.local_changes = 0

    def _changed(self) -> None:
        # SQLite: runs on the database thread, inside the writing statement.
        self.local_changes = next(self._counter)

    async def install(self) -> None:
        """Start counting this process's changes."""
        database = self.database
        if not isinstance(database, SqliteDatabase):
            from storage.postgresql import PostgresDatabase

            assert isinstance(database, PostgresDatabase)
            database.watch_writes(_WATCHED_TABLES, self._changed)
            return
        await database.connection.create_function(_CHANGED_FUNCTION, 0, self._changed)
        async with database.read() as session:
            for table in _WATCHED_TABLES:
                for event in ("INSERT", "UPDATE", "DELETE"):
                    await session.execute(
                        f"CREATE TEMP TRIGGER IF NOT EXISTS callrec_watch_{table}_{event.lower()}"
                        f" AFTER {event} ON main.{table}"
                        f" BEGIN SELECT {_CHANGED_FUNCTION}(); END"
                    )

    async def data_version(self) -> int:
        """A number that moves when another process (or node) has committed changes
        (it moves, nothing more)."""
        database = self.database
        if not isinstance(database, SqliteDatabase):
            from storage.postgresql import PostgresDatabase, changes_of_others

            assert isinstance(database, PostgresDatabase)
            async with database.read() as session:
                return await changes_of_others(session, database.origin)
        async with database.read() as session:
            row = await session.one("PRAGMA data_version")
        return int(row[0]) if row is not None else 0
