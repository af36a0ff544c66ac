"""Settings as stored text (key -> value): each organisation's, and the server's own.

An organisation's settings (`org_settings`, one row per organisation and key) override
the config's defaults for that organisation only. Its language and time zone are columns
of its `organisations` row (set when it was created, from the server's defaults then);
they are read and written here under the keys `language` and `timezone` like the others.
Which keys exist and what values they may take are product rules (`callrec.policy`);
the store keeps the text.

The server's own settings (`settings`: the key that signs export links) belong to no
organisation and are never shown to one.
"""

from __future__ import annotations

from storage.connection import Database, Session
from storage.errors import InvalidValue
from storage.models import OrgScope
from storage.organisations import existing_org

__all__ = ["ORG_COLUMN_SETTINGS", "Settings"]

# Settings kept as columns of the organisation's row.
ORG_COLUMN_SETTINGS = ("language", "timezone")


async def _org_settings(session: Session, org_id: int) -> dict[str, str]:
    rows = await session.all(
        "SELECT key, value FROM org_settings WHERE org_id = ? ORDER BY key", (org_id,)
    )
    stored = {str(row["key"]): str(row["value"]) for row in rows}
    org = await session.one("SELECT language, timezone FROM organisations WHERE id = ?", (org_id,))
    if org is not None:
        for key in ORG_COLUMN_SETTINGS:
            if org[key] is not None:
                stored[key] = str(org[key])
    return stored


class Settings:
    """The `org_settings` table (and the organisation's language and time zone), and
    the server's `settings`."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- an organisation's ---------------------------------------------------------------

    async def org_settings(self, org: OrgScope) -> dict[str, str]:
        """Every setting `org` has stored (the config gives the others)."""
        async with self.database.read() as session:
            await existing_org(session, org)
            return await _org_settings(session, org.id)

    async def settings_for_org(self, org_id: int) -> dict[str, str]:
        """`org_settings` by organisation id, for the recording side, which knows a
        call's organisation by its id (unknown id: nothing stored)."""
        async with self.database.read() as session:
            return await _org_settings(session, org_id)

    async def all_org_settings(self) -> dict[int, dict[str, str]]:
        """Every organisation's stored settings, by organisation id, in one read (the
        recording manager's periodic refresh)."""
        async with self.database.read() as session:
            orgs = await session.all("SELECT id, language, timezone FROM organisations")
            rows = await session.all("SELECT org_id, key, value FROM org_settings")
        result: dict[int, dict[str, str]] = {int(org["id"]): {} for org in orgs}
        for row in rows:
            result.setdefault(int(row["org_id"]), {})[str(row["key"])] = str(row["value"])
        for org in orgs:
            for key in ORG_COLUMN_SETTINGS:
                if org[key] is not None:
                    result[int(org["id"])][key] = str(org[key])
        return result

    async def set_org_settings(self, org: OrgScope, changes: dict[str, str]) -> None:
        """Store several settings of `org` at once (all or none)."""
        for key in changes:
            if not key:
                raise InvalidValue("key", "setting key must not be empty")
        async with self.database.transaction() as session:
            await existing_org(session, org)
            for key, value in changes.items():
                if key in ORG_COLUMN_SETTINGS:
                    await session.execute(
                        f"UPDATE organisations SET {key} = ? WHERE id = ?", (value, org.id)
                    )
                else:
                    await session.execute(
                        "INSERT INTO org_settings (org_id, key, value) VALUES (?, ?, ?)"
                        " ON CONFLICT (org_id, key) DO UPDATE SET value = excluded.value",
                        (org.id, key, value),
                    )

    async def set_org_setting(self, org: OrgScope, key: str, value: str) -> None:
        """Store one setting's text for `org`, replacing any previous value."""
        await self.set_org_settings(org, {key: value})

    async def get_org_setting(self, org: OrgScope, key: str) -> str | None:
        """The stored text of one of `org`'s settings, or None if never set."""
        return (await self.org_settings(org)).get(key)

    # -- the server's --------------------------------------------------------------------

    async def server_setting(self, key: str) -> str | None:
        """The stored text of a server setting, or None if never set."""
        async with self.database.read() as session:
            row = await session.one("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row["value"]) if row is not None else None

    async def set_server_setting(self, key: str, value: str) -> None:
        if not key:
            raise InvalidValue("key", "setting key must not be empty")
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def server_setting_or_default(self, key: str, default: str) -> str:
        """The server setting's text; if never set, store `default` first (the first
        writer wins, also across processes) and return what is stored."""
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            row = await session.one("SELECT value FROM settings WHERE key = ?", (key,))
        assert row is not None
        return str(row["value"])
