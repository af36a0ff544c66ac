"""PostgreSQL for the tests (a pytest plugin, loaded by tests/conftest.py).

`postgres_cluster` (session): one throwaway cluster (`testkit.postgres`) for the whole
run, with a template database already migrated to the newest schema; the tests that
ask for it skip, saying why, when the PostgreSQL binaries are not installed
(`scripts/setup.sh --cluster` installs them). `postgres_url` (per test): a new database
copied from that template, dropped after the test.

`backend` runs a test once per store backend (SQLite, PostgreSQL) and
`store_location` is where that test's new, empty store is: a SQLite file path or a
PostgreSQL URL. A fixture that builds a Store from `store_location` makes every test
using it run on both.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage.connection import POSTGRESQL, SQLITE
from storage.database import Store
from testkit.postgres import PostgresCluster, postgres_missing

TEMPLATE = "callrec_template"
_names = itertools.count(1)
T = TypeVar("T")


async def _make_template(cluster: PostgresCluster) -> None:
    url = await cluster.create_database(TEMPLATE)
    store = await Store.open(url)
    await store.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PostgresCluster.start()
    try:
        _in_thread(_make_template(cluster))
        yield cluster
    finally:
        cluster.destroy()


def _in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a loop of its own: fixtures may be set up while a test's loop runs."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, migrated, empty database of its own for one test."""
    name = f"test_{next(_names)}"
    yield _in_thread(postgres_cluster.create_database(name, template=TEMPLATE))
    _in_thread(postgres_cluster.drop_database(name))


BACKENDS = (SQLITE, POSTGRESQL)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where a new, empty store is: a SQLite file path or a PostgreSQL URL."""
    if backend == POSTGRESQL:
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "db" / "callrec.db"
