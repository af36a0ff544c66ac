"""Registrations: the REGISTER bindings of users' phones (contact, source, expiry).

A binding is keyed by (user, contact), and so belongs to the user's organisation; a
new contact for the same `+sip.instance` supersedes the old one (RFC 5626). Expired
bindings are ignored by `bindings` and deleted by `purge_expired_bindings`.
"""

from __future__ import annotations

import sqlite3
import time

from storage.connection import Database
from storage.errors import Conflict, NotFound
from storage.models import OrgScope, Registration

__all__ = ["Registrations"]

_REGISTRATION_COLUMNS = (
    "r.id, r.user_id, u.extension, r.contact, r.received, r.call_id, r.cseq, r.expires_at,"
    " r.device_username, r.instance, r.user_agent, r.updated_at"
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


class Registrations:
    """REGISTER bindings."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

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
        """Add or refresh a binding; the same contact (or +sip.instance) replaces it.
        NotFound if the user id is unknown."""
        now = time.time()
        try:
            async with self.database.transaction() as session:
                if instance is not None:
                    # RFC 5626: a new contact for the same instance supersedes the old one.
                    await session.execute(
                        "DELETE FROM registrations"
                        " WHERE user_id = ? AND instance = ? AND contact != ?",
                        (user_id, instance, contact),
                    )
                await session.execute(
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
        except Conflict as exc:
            # The only constraint an upsert can break is the user's foreign key.
            raise NotFound(f"cannot register for unknown user id {user_id}") from exc

    async def remove_binding(self, user_id: int, contact: str) -> bool:
        """Remove one binding; True if it existed."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM registrations WHERE user_id = ? AND contact = ?", (user_id, contact)
            )
        return changed > 0

    async def remove_all_bindings(self, user_id: int) -> int:
        """Remove every binding of a user (REGISTER with Contact: *); returns the count."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM registrations WHERE user_id = ?", (user_id,)
            )
        return changed

    async def bindings(self, org: OrgScope, extension: str, now: float) -> list[Registration]:
        """Unexpired bindings of a user of `org` (expires_at > now), most recently
        refreshed first."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_REGISTRATION_COLUMNS} FROM registrations r"
                " JOIN users u ON u.id = r.user_id"
                " WHERE u.org_id = ? AND u.extension = ? AND r.expires_at > ?"
                " ORDER BY r.updated_at DESC, r.id DESC",
                (org.id, extension, now),
            )
        return [_registration_from_row(row) for row in rows]

    async def purge_expired_bindings(self, now: float) -> int:
        """Delete bindings with expires_at <= now; returns how many."""
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM registrations WHERE expires_at <= ?", (now,)
            )
        return changed
