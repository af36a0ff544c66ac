"""Organisation-wide settings as stored text (key -> value). Which keys exist and what
values they may take are product rules (`callrec.policy`); the store keeps the text."""

from __future__ import annotations

from storage.connection import Database
from storage.errors import InvalidValue

__all__ = ["Settings"]


class Settings:
    """The `settings` table."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get_setting(self, key: str) -> str | None:
        """The stored text of a setting, or None if never set."""
        async with self.database.read() as session:
            row = await session.one("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row["value"]) if row is not None else None

    async def set_setting(self, key: str, value: str) -> None:
        """Store a setting's text, replacing any previous value."""
        if not key:
            raise InvalidValue("key", "setting key must not be empty")
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def all_settings(self) -> dict[str, str]:
        """Every stored setting."""
        async with self.database.read() as session:
            rows = await session.all("SELECT key, value FROM settings ORDER BY key")
        return {str(row["key"]): str(row["value"]) for row in rows}

    async def setting_or_default(self, key: str, default: str) -> str:
        """The setting's text; if never set, store `default` first (the first writer
        wins, also across processes) and return what is stored."""
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            row = await session.one("SELECT value FROM settings WHERE key = ?", (key,))
        assert row is not None
        return str(row["value"])
