"""A real store for the storage tests, on each backend: a temporary SQLite file, and a
database of its own on a throwaway PostgreSQL cluster (`backend` and `store_location`
are in tests/postgres_fixtures.py).

Every test that takes `store` (or `store_location`) runs once per backend; the
PostgreSQL run skips, saying why, only when the PostgreSQL binaries are absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import Store


@pytest.fixture
async def store(store_location: str | Path) -> AsyncIterator[Store]:
    opened = await Store.open(store_location)
    yield opened
    await opened.close()
