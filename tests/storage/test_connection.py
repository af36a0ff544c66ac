"""The database file: creation, WAL, migrations, locking, and SQLite failures as typed errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage.database import MIGRATIONS, Store
from storage.errors import Conflict, EmptyDatabase, StorageError, StorageUnavailable
from tests.storage.orgs import ORG


async def test_open_creates_folders_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "callrec.db"
    store = await Store.open(path)
    await store.close()
    assert path.is_file()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        versions = [row[0] for row in raw.execute("SELECT version FROM schema_version")]
    assert {"users", "devices", "registrations", "calls", "settings"} <= tables
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_reopen_keeps_data_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    store = await Store.open(path)
    await store.add_user(ORG, "101", "Alice")
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        user = await store.get_user(ORG, "101")
        assert user is not None and user.name == "Alice"
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StorageError, match="newer") as refused:
        await Store.open(path)
    assert isinstance(refused.value, StorageUnavailable)
    _no_path(refused.value, path)


async def test_concurrent_writes_from_one_process(store: Store) -> None:
    results = await asyncio.gather(
        *(store.add_user(ORG, str(100 + n % 10), f"n{n}") for n in range(30)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 20 and all(isinstance(e, StorageError) for e in errors)
    assert all(isinstance(e, Conflict) and e.field == "extension" for e in errors)
    assert len(await store.list_users(ORG)) == 10


# -- SQLite failures become typed errors that name no path ---------------------------------


def _no_path(error: StorageError, path: Path) -> None:
    assert str(path.parent) not in error.message and path.name not in error.message
    assert "/" not in error.message


async def test_constraint_is_a_conflict_and_rolls_back(store: Store) -> None:
    with pytest.raises(Conflict, match="constraint violated"):
        async with store.database.transaction() as session:
            await session.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
            await session.execute("INSERT INTO settings (key, value) VALUES ('a', '2')")
    assert await store.org_settings(ORG) == {}


async def test_a_failing_body_rolls_the_transaction_back(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.database.transaction() as session:
            await session.execute("INSERT INTO settings (key, value) VALUES ('b', '1')")
            raise RuntimeError("the caller changed its mind")
    assert await store.get_org_setting(ORG, "b") is None
    await store.set_org_setting(ORG, "b", "2")  # the lock and the connection are usable again
    assert await store.get_org_setting(ORG, "b") == "2"


async def test_a_full_database_is_unavailable_and_names_no_path(tmp_path: Path) -> None:
    path = tmp_path / "full" / "callrec.db"
    store = await Store.open(path)
    try:
        async with store.database.read() as session:
            row = await session.one("PRAGMA page_count")
            assert row is not None
            # SQLite's own limit: past it every write fails with SQLITE_FULL, as on a full disk.
            await session.execute(f"PRAGMA max_page_count = {int(row[0]) + 2}")
        with pytest.raises(StorageUnavailable) as full:
            for _ in range(100):
                await store.audit(ORG, "admin:root", "note", detail="x" * 4000)
        assert full.value.message == "the disk holding the database is full"
        _no_path(full.value, path)
        # What was committed before stays; the store keeps answering reads.
        assert 0 < await store.audit_total(ORG) < 100
    finally:
        await store.close()


async def test_a_lock_held_by_another_process_is_unavailable_then_clears(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    store = await Store.open(path, busy_timeout_s=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable) as locked:
            await store.add_user(ORG, "101", "Alice")
        assert "locked" in locked.value.message
        _no_path(locked.value, path)
        # Readers are not blocked by a writer (WAL).
        assert await store.list_users(ORG) == []
        other.execute("ROLLBACK")
        await store.add_user(ORG, "101", "Alice")
    finally:
        other.close()
        await store.close()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    path.write_bytes(b"this is not SQLite" * 512)
    with pytest.raises(StorageUnavailable) as refused:
        await Store.open(path)
    _no_path(refused.value, path)


async def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    path.mkdir()  # a folder where the file should be (root ignores chmod 000)
    with pytest.raises(StorageUnavailable) as refused:
        await Store.open(path)
    assert refused.value.message == "the database file cannot be opened"
    _no_path(refused.value, path)


async def test_an_empty_file_is_refused_unless_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    path.touch()
    with pytest.raises(EmptyDatabase) as refused:
        await Store.open(path)
    assert isinstance(refused.value, StorageUnavailable) and refused.value.path == path
    _no_path(refused.value, path)
    store = await Store.open(path, create_empty=True)
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
