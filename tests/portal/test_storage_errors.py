"""Typed storage errors at the portal's edge: 422 naming the field, 404, 409, and 503 with
no server path, whatever the store refused or could not do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from portal.context import ApiError
from storage.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from tests.portal.conftest import Client, Fixture
from tests.storage.orgs import ORG

API = "/api/v1"


@pytest.mark.parametrize(
    ("error", "status", "field"),
    [
        (InvalidValue("uri", "invalid device URI 'x'"), 422, "uri"),
        (NotFound("unknown extension 999"), 404, None),
        (Conflict("user 101 already exists", "extension"), 409, "extension"),
        (StorageUnavailable("the disk holding the database is full"), 503, None),
    ],
)
def test_each_type_has_one_status(error: StorageError, status: int, field: str | None) -> None:
    answer = ApiError.from_storage(error)
    assert (answer.status, answer.message, answer.field) == (status, error.message, field)


def test_an_untyped_storage_error_tells_the_client_nothing() -> None:
    answer = ApiError.from_storage(StorageError("database error: near '/srv/x': syntax"))
    assert (answer.status, answer.field) == (500, None)
    assert "/srv" not in answer.message


async def test_a_value_the_store_refuses_is_422_naming_the_field(
    portal: Fixture, admin: Client
) -> None:
    # The API passes the URI through; the store's InvalidValue names it.
    async with admin.session.post(
        portal.url + API + "/users/202/devices", json={"uri": "tel:+1234"}, headers=admin.headers
    ) as r:
        assert r.status == 422
        answer = await r.json()
    assert answer["field"] == "uri" and "invalid device URI" in answer["error"]
    async with admin.session.post(
        portal.url + API + "/users",
        json={"extension": "205", "name": "Eve", "devices": ["http://x"]},
        headers=admin.headers,
    ) as r:
        assert r.status == 422
        assert (await r.json())["field"] == "devices"
    assert await portal.store.get_user(ORG, "205") is None


async def test_a_username_already_taken_is_409_naming_the_field(
    portal: Fixture, admin: Client
) -> None:
    async with admin.session.post(
        portal.url + API + "/users/202/devices",
        json={"uri": "sip:201@127.0.0.1"},
        headers=admin.headers,
    ) as r:
        assert r.status == 409
        answer = await r.json()
    assert answer["field"] == "uri" and "extension of user 201" in answer["error"]
    assert await portal.store.list_devices(ORG, "202") == []


@contextmanager
def write_lock_held_elsewhere(fixture: Fixture) -> Iterator[None]:
    """Another process (a CLI command, a backup) holds the database's write lock."""
    other = sqlite3.connect(fixture.store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def _short_busy_timeout(fixture: Fixture) -> None:
    async with fixture.store.database.read() as session:
        await session.execute("PRAGMA busy_timeout = 100")


async def test_a_locked_database_is_503_with_no_server_path(portal: Fixture, admin: Client) -> None:
    await _short_busy_timeout(portal)
    secrets = (str(portal.storage_dir), "callrec.db", "/tmp", "sqlite", "Traceback")
    with write_lock_held_elsewhere(portal):
        async with admin.session.post(
            portal.url + API + "/tokens", json={"name": "ci"}, headers=admin.headers
        ) as r:
            assert r.status == 503
            assert r.headers["Retry-After"].isdigit()
            body = await r.text()
            answer = await r.json()
        # A page answers the same way, as HTML.
        async with admin.session.post(
            portal.url + "/users",
            data={"csrf_token": admin.csrf, "extension": "206", "name": "Fay"},
        ) as page:
            assert page.status == 503
            html = await page.text()
    assert answer == {
        "error": "the database is locked by another process; try again",
        "status": 503,
    }
    for secret in secrets:
        assert secret not in body and secret not in html
    # Once the lock is gone the same request works.
    async with admin.session.post(
        portal.url + API + "/tokens", json={"name": "ci"}, headers=admin.headers
    ) as r:
        assert r.status == 201


async def test_a_full_database_is_503_with_no_server_path(portal: Fixture, admin: Client) -> None:
    async with portal.store.database.read() as session:
        row = await session.one("PRAGMA page_count")
        assert row is not None
        await session.execute(f"PRAGMA max_page_count = {int(row[0])}")
    # Fill what room the last pages have left, then every new row needs a page.
    with pytest.raises(StorageUnavailable):
        for _ in range(1000):
            await portal.store.audit(ORG, "admin:root", "note", detail="x" * 3000)
    statuses = []
    for n in range(20):
        async with admin.session.post(
            portal.url + API + "/tokens", json={"name": f"t{n}" * 40}, headers=admin.headers
        ) as r:
            statuses.append(r.status)
            body = await r.text()
        if r.status == 503:
            break
    assert statuses[-1] == 503, statuses
    assert "the disk holding the database is full" in body
    assert str(portal.storage_dir) not in body and "callrec.db" not in body
