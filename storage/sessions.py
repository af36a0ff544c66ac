"""Portal sessions, kept in the store so that a restart of `callrec serve` (or another
node of a cluster) keeps everyone logged in.

A session is named by a random token the browser holds in its cookie; the store keeps
only its SHA-256 (`accounts.token_digest`), so a copy of the database logs nobody in.
Each row says who is logged in by reference, an admin or operator (`admin_id`) or a user
(`user_id`), and in which organisation (`org_id`, NULL for an operator): removing the
admin, the user or the organisation removes their sessions with them (foreign keys
cascade), and the name and extension a session shows are always the current ones.

Sessions end after `idle_s` without use (`expires_at`, moved forward as they are used) or
when deleted (logout, a user's portal login removed). Expired rows are never returned
and are deleted as new sessions are made. `notices` holds the short messages the next
page shows (JSON; never a password). Every method that reads or ends an organisation's
sessions in bulk takes its `OrgScope`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from storage.accounts import ROLE_ADMIN, ROLE_OPERATOR, token_digest
from storage.connection import Database
from storage.errors import InvalidValue, NotFound
from storage.models import OrgScope

__all__ = ["ROLE_USER", "PortalSessions", "StoredSession"]

ROLE_USER = "user"
_ROLES = (ROLE_ADMIN, ROLE_OPERATOR, ROLE_USER)

# Who a session is, joined from the row that names them (never copied into the session).
_SESSION_SELECT = """
SELECT s.role, s.org_id, o.slug AS org_slug, s.created_at, s.expires_at, s.notices,
       a.name AS admin_name, u.extension, u.name AS user_name
FROM portal_sessions s
LEFT JOIN organisations o ON o.id = s.org_id
LEFT JOIN admins a ON a.id = s.admin_id
LEFT JOIN users u ON u.id = s.user_id
WHERE s.token_sha256 = ?
"""


@dataclass(frozen=True)
class StoredSession:
    """A live session as the store knows it: the role, the organisation (None for an
    operator), the admin's name or the user's extension and name, its deadline and the
    notices waiting for the next page."""

    role: str
    org: OrgScope | None
    name: str
    extension: str | None
    created_at: float
    expires_at: float
    notices: list[Any]


def _session_from_row(row: sqlite3.Row) -> StoredSession:
    org = OrgScope(int(row["org_id"]), str(row["org_slug"])) if row["org_id"] is not None else None
    is_user = row["role"] == ROLE_USER
    try:
        notices = json.loads(row["notices"])
    except (TypeError, ValueError):
        notices = []
    return StoredSession(
        role=str(row["role"]),
        org=org,
        name=str(row["user_name"] if is_user else row["admin_name"]),
        extension=row["extension"] if is_user else None,
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        notices=notices if isinstance(notices, list) else [],
    )


class PortalSessions:
    """Portal sessions (see the module docstring)."""

    database: Database

    async def create_session(
        self,
        token: str,
        *,
        role: str,
        org: OrgScope | None,
        now: float,
        idle_s: float,
        admin_name: str | None = None,
        extension: str | None = None,
    ) -> StoredSession:
        """Start a session for an admin or operator (`admin_name`) or for the user of
        `org` with `extension`; only the token's SHA-256 is kept. Deletes expired
        sessions on the way. NotFound if the admin or user does not exist (or belongs
        to another organisation)."""
        if role not in _ROLES:
            raise InvalidValue("role", f"invalid session role {role!r}")
        if (role == ROLE_OPERATOR) != (org is None):
            raise InvalidValue("org", "an operator's session has no organisation, others one")
        if not token:
            raise InvalidValue("token", "a session needs a token")
        async with self.database.transaction() as session:
            await session.execute("DELETE FROM portal_sessions WHERE expires_at <= ?", (now,))
            admin_id = user_id = None
            if role == ROLE_USER:
                assert org is not None
                row = await session.one(
                    "SELECT id FROM users WHERE org_id = ? AND extension = ?",
                    (org.id, extension),
                )
                if row is None:
                    raise NotFound(f"unknown extension {extension}")
                user_id = int(row["id"])
            else:
                row = await session.one(
                    "SELECT id FROM admins WHERE name = ? AND role = ? AND org_id IS ?",
                    (admin_name, role, org.id if org is not None else None),
                )
                if row is None:
                    raise NotFound(f"unknown admin {admin_name!r}")
                admin_id = int(row["id"])
            await session.execute(
                "INSERT INTO portal_sessions (token_sha256, org_id, role, admin_id, user_id,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token_digest(token),
                    org.id if org is not None else None,
                    role,
                    admin_id,
                    user_id,
                    now,
                    now + idle_s,
                ),
            )
            found = await session.one(_SESSION_SELECT, (token_digest(token),))
        assert found is not None
        return _session_from_row(found)

    async def session_by_token(self, token: str, now: float) -> StoredSession | None:
        """The live session this token names, or None (unknown, ended or expired)."""
        async with self.database.read() as session:
            row = await session.one(_SESSION_SELECT, (token_digest(token),))
        if row is None or float(row["expires_at"]) <= now:
            return None
        return _session_from_row(row)

    async def extend_session(self, token: str, expires_at: float) -> None:
        """Move a session's idle deadline (never backwards)."""
        async with self.database.transaction() as session:
            await session.execute(
                "UPDATE portal_sessions SET expires_at = ?"
                " WHERE token_sha256 = ? AND expires_at < ?",
                (expires_at, token_digest(token), expires_at),
            )

    async def set_session_notices(self, token: str, notices: list[Any]) -> None:
        """Replace the notices waiting for the session's next page."""
        async with self.database.transaction() as session:
            await session.execute(
                "UPDATE portal_sessions SET notices = ? WHERE token_sha256 = ?",
                (json.dumps(notices), token_digest(token)),
            )

    async def delete_session(self, token: str) -> bool:
        """End one session (logout); False if there was none."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM portal_sessions WHERE token_sha256 = ?", (token_digest(token),)
            )
        return changed > 0

    async def delete_user_sessions(self, org: OrgScope, extension: str) -> int:
        """End every session of `org`'s user `extension`; how many ended."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM portal_sessions WHERE org_id = ? AND user_id IN"
                " (SELECT id FROM users WHERE org_id = ? AND extension = ?)",
                (org.id, org.id, extension),
            )
        return changed

    async def count_sessions(self, org: OrgScope | None, now: float) -> int:
        """Live sessions of `org` (None: the operators')."""
        async with self.database.read() as session:
            row = await session.one(
                "SELECT COUNT(*) AS n FROM portal_sessions WHERE org_id IS ? AND expires_at > ?",
                (org.id if org is not None else None, now),
            )
        return int(row["n"]) if row is not None else 0

    async def purge_expired_sessions(self, now: float) -> int:
        """Delete the sessions expired by `now`; how many."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM portal_sessions WHERE expires_at <= ?", (now,)
            )
        return changed
