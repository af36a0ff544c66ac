"""What the storage tests need to look under a store, on either backend."""

from __future__ import annotations

from storage.connection import SqliteDatabase
from storage.database import Store


async def stored_bytes(store: Store) -> bytes:
    """Everything the store keeps, as bytes: the SQLite file and its write-ahead log,
    or every row of every table of the PostgreSQL database as text."""
    database = store.database
    if isinstance(database, SqliteDatabase):
        raw = database.path.read_bytes()
        wal = database.path.with_name(database.path.name + "-wal")
        return raw + (wal.read_bytes() if wal.exists() else b"")
    async with database.read() as session:
        tables = await session.all(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        assert tables, "no tables found: the dump would prove nothing"
        dumped: list[str] = []
        for table in tables:
            rows = await session.all(f'SELECT t::text AS row FROM "{table["table_name"]}" t')
            dumped += [str(row["row"]) for row in rows]
    return "\n".join(dumped).encode()
