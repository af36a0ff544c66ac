"""The audit log: who did what, when, from where (plays, downloads, exports, mode
changes, purges...). Entries are only ever appended."""

from __future__ import annotations

import time

from storage.connection import Database, Session
from storage.models import AuditEntry

__all__ = ["AuditLog", "append_audit"]


async def append_audit(
    session: Session,
    actor: str,
    action: str,
    object: str | None,
    *,
    at: float,
    address: str | None = None,
    detail: str | None = None,
) -> None:
    """Append one entry inside a transaction another module holds (so the change and
    its audit entry commit together)."""
    await session.execute(
        "INSERT INTO audit (at, actor, action, object, address, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (at, actor, action, object, address, detail),
    )


class AuditLog:
    """The audit log."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

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
        """Append to the audit log."""
        async with self.database.transaction() as session:
            await append_audit(
                session,
                actor,
                action,
                object,
                at=time.time() if at is None else at,
                address=address,
                detail=detail,
            )

    async def list_audit(self, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        """Entries newest first."""
        async with self.database.read() as session:
            rows = await session.all(
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

    async def audit_total(self) -> int:
        """How many entries the log holds."""
        async with self.database.read() as session:
            row = await session.one("SELECT COUNT(*) AS n FROM audit")
        return int(row["n"]) if row is not None else 0
