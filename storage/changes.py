"""What a cache of the directory (organisations and their numbers, users, devices,
registrations) needs from the store:
one read of all of it, and a way to learn that it changed.

Two kinds of writers change users and devices, and each is seen its own way:
- This process (the portal, sharing the server's one connection): TEMP triggers on
  `users` and `devices`, created on that connection only, call a function that bumps
  `DirectoryWatch.local_changes` from the database thread while the writing statement
  runs (and on `organisations` and `dids`). The count has moved before the writer's
  `await` returns, so a cache that checks
  it before each use never serves what the portal has just changed.
- Other processes (the `callrec users ...` CLI): SQLite's `PRAGMA data_version` changes
  whenever another connection has committed to the file. Reading it touches no table,
  so it can be polled often. It moves for any commit of another process, not only the
  directory's: a cache reloads a little more often than needed, never less.

Registrations are written by the SIP side itself (through the cache), or deleted with
their user (which the watch sees).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from storage.connection import Database
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
    docstring) and reads the file's `data_version` for the changes of other processes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._counter = itertools.count(1)
        self.local_changes = 0

    def _changed(self) -> None:
        # Runs on the database thread, inside the writing statement.
        self.local_changes = next(self._counter)

    async def install(self) -> None:
        """Create the function and the TEMP triggers on this process's connection."""
        connection = self.database._connection
        await connection.create_function(_CHANGED_FUNCTION, 0, self._changed)
        async with self.database.read() as session:
            for table in _WATCHED_TABLES:
                for event in ("INSERT", "UPDATE", "DELETE"):
                    await session.execute(
                        f"CREATE TEMP TRIGGER IF NOT EXISTS callrec_watch_{table}_{event.lower()}"
                        f" AFTER {event} ON main.{table}"
                        f" BEGIN SELECT {_CHANGED_FUNCTION}(); END"
                    )

    async def data_version(self) -> int:
        """SQLite's count of commits by other connections (it moves, nothing more)."""
        async with self.database.read() as session:
            row = await session.one("PRAGMA data_version")
        return int(row[0]) if row is not None else 0
