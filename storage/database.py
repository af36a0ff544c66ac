"""`Store`: the whole metadata store behind one object, for callers that want one.

The store is split by concept, one module each: `connection` (the SQLite file, its
migrations, `read()` and `transaction()`), `organisations` (tenants, their numbers and
usage), `users` (users, devices, credentials, portal logins), `registrations`, `calls`,
`recordings`, `exports`, `accounts` (the one password hasher, admins, operators, API
tokens), `audit`, `settings`, `sessions` (portal logins, kept across restarts), and for
nodes sharing one store `nodes` (heartbeats, a dead node's calls) and `auth` (SIP
nonces and lock-outs).
`Store` inherits the methods of each, so `await Store.open(path)` gives one object with
all of them. Every method that reads or changes an organisation's data takes the
organisation (`OrgScope`, or an organisation id on the SIP and recording side); only the
platform's own passes (start-up repair, retention) read across organisations. b2bua's
`Directory` is `callrec.directory.CachedDirectory`, over this store. Errors are the
typed ones of `storage.errors`.

Timestamps are unix times in seconds (REAL, UTC) throughout; `storage.models.
format_timestamp` renders them.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from argon2 import PasswordHasher

from storage.accounts import Accounts, Passwords
from storage.audit import AuditLog
from storage.auth import SharedAuth
from storage.calls import CALL_FIELDS, Calls
from storage.connection import MIGRATIONS, Database
from storage.errors import EmptyDatabase, StorageError
from storage.exports import Exports
from storage.models import (
    CallRecord,
    Credentials,
    Device,
    Organisation,
    OrgScope,
    Registration,
    User,
)
from storage.nodes import Nodes
from storage.organisations import Organisations
from storage.recordings import Recordings
from storage.registrations import Registrations
from storage.sessions import PortalSessions
from storage.settings import Settings
from storage.uploads import Uploads
from storage.users import Users, device_username

__all__ = [
    "CALL_FIELDS",
    "MIGRATIONS",
    "CallRecord",
    "Credentials",
    "Device",
    "EmptyDatabase",
    "OrgScope",
    "Organisation",
    "Registration",
    "StorageError",
    "Store",
    "User",
    "device_username",
]


class Store(
    Organisations,
    Users,
    Registrations,
    Calls,
    Recordings,
    Exports,
    Accounts,
    AuditLog,
    Settings,
    PortalSessions,
    Uploads,
    Nodes,
    SharedAuth,
):
    """The metadata store on one SQLite file; open it with `await Store.open(path)`."""

    def __init__(self, database: Database, passwords: Passwords) -> None:
        # Every concept shares the one database and the one password hasher.
        self.database = database
        self.passwords = passwords

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        hasher: PasswordHasher | None = None,
        busy_timeout_s: float = 5.0,
        create_empty: bool = False,
        default_domain: str | None = None,
    ) -> Store:
        """Open (creating folders and file as needed) and migrate to the newest schema.
        `hasher`: argon2 parameters for portal passwords (argon2-cffi's defaults if
        None); `busy_timeout_s`: how long a write waits for another process's lock.
        An existing 0-byte file raises `EmptyDatabase` unless `create_empty`.
        `default_domain`: the configured SIP realm, the domain of the default
        organisation when the schema gets organisations."""
        database = await Database.open(
            path,
            busy_timeout_s=busy_timeout_s,
            create_empty=create_empty,
            default_domain=default_domain,
        )
        return cls(database, Passwords(hasher))

    @property
    def path(self) -> Path:
        return self.database.path

    async def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        await self.database.close()

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
        return await self.database.schema_version()
