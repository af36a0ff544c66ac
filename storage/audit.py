"""The audit log: who did what, when, from where (plays, downloads, exports, mode
changes, purges...). Entries are only ever appended.

Every change is audited by the door it came through (the portal's pages, the REST API
and the CLI, each with its actor: `admin:<name>`, `token:<name>`, `operator:<name>`,
`cli:<login>`) with the same action names: user.add, user.change, user.remove,
mode.change, language.change, password.set, portal_password.set,
portal_password.remove, device.add, device.password.set, device.remove,
settings.change, org.add, org.change, did.add, did.remove, admin.add, operator.add,
token.create, token.revoke. A detail never holds a password.

Each entry belongs to one organisation (`org_id`), whose admins read it; an entry with no
organisation is the platform's (an operator's change to organisations) and only
operators read those."""

from __future__ import annotations

import time

from storage.connection import Database, Session
from storage.models import AuditEntry, OrgScope

__all__ = ["AuditLog", "append_audit", "change_detail"]


def change_detail(**changes: object) -> str:
    """The detail of an audit entry that says what a change set, the same from the
    portal, the API and the CLI: "mode on-demand, sip password generated, portal login,
    devices 1" (a True value is named alone; false, None and 0 are left out). Never give
    it a password: say "set" or "generated"."""
    parts = []
    for key, value in changes.items():
        label = key.replace("_", " ")
        if value is True:
            parts.append(label)
        elif value:
            parts.append(f"{label} {value}")
    return ", ".join(parts)


async def append_audit(
    session: Session,
    org_id: int | None,
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
        "INSERT INTO audit (org_id, at, actor, action, object, address, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (org_id, at, actor, action, object, address, detail),
    )


class AuditLog:
    """The audit log."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def audit(
        self,
        org: OrgScope | None,
        actor: str,
        action: str,
        object: str | None = None,
        *,
        address: str | None = None,
        detail: str | None = None,
        at: float | None = None,
    ) -> None:
        """Append to `org`'s audit log (None: the platform's)."""
        async with self.database.transaction() as session:
            await append_audit(
                session,
                org.id if org is not None else None,
                actor,
                action,
                object,
                at=time.time() if at is None else at,
                address=address,
                detail=detail,
            )

    async def list_audit(
        self, org: OrgScope | None, limit: int = 100, offset: int = 0
    ) -> list[AuditEntry]:
        """`org`'s entries (None: the platform's) newest first."""
        async with self.database.read() as session:
            rows = await session.all(
                "SELECT id, at, actor, action, object, address, detail FROM audit"
                " WHERE org_id IS ? ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
                (org.id if org is not None else None, limit, offset),
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

    async def audit_total(self, org: OrgScope | None) -> int:
        """How many entries `org`'s log (None: the platform's) holds."""
        async with self.database.read() as session:
            row = await session.one(
                "SELECT COUNT(*) AS n FROM audit WHERE org_id IS ?",
                (org.id if org is not None else None,),
            )
        return int(row["n"]) if row is not None else 0
