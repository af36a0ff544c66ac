"""A user sees the calls they took part in, found by the user ids filed on the call
(migration 12), never by comparing numbers: an outside caller whose number equals a
user's extension is not that user."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from storage.calls import CallQuery
from storage.connection import SQLITE, migration_statements
from storage.database import Store
from tests.portal.conftest import BASE_TIME, Client, Fixture, party_users, write_wav
from tests.storage.orgs import ORG

API = "/api/v1"


async def _outside_call_from_201(portal: Fixture) -> tuple[int, int]:
    """A call from the trunk, from the outside number 201, to Bob (202), recorded."""
    store = portal.store
    bob = await store.get_user(ORG, "202")
    assert bob is not None
    call_id = await store.create_call(
        ORG.id,
        callee_user_id=bob.id,
        sip_call_id="outside-201@test",
        direction="inbound",
        caller_ext="201",
        caller_name="Someone Outside",
        callee_ext="202",
        callee_name="Bob Baker",
        started_at=BASE_TIME + 5000,
        answered_at=BASE_TIME + 5002,
        ended_at=BASE_TIME + 5010,
        disposition="answered",
    )
    relative = "recordings/2024/05/01/outside-201.wav"
    write_wav(portal.storage_dir / relative, 1.0, 500.0)
    recording_id = await store.create_recording(
        call_id=call_id, path=relative, format="wav", channels=1, sample_rate=8000,
        started_at=BASE_TIME + 5002, retention_days=90, owner_ext="202",
    )  # fmt: skip
    await store.finish_recording(
        recording_id, status="complete", ended_at=BASE_TIME + 5003, duration_s=1.0,
        segments=[(0.0, 1.0)],
    )  # fmt: skip
    return call_id, recording_id


async def _json(client: Client, url: str) -> tuple[int, Any]:
    async with client.session.get(url) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_an_outside_number_equal_to_an_extension_is_not_that_user(
    portal: Fixture, alice: Client, bob: Client
) -> None:
    call_id, recording_id = await _outside_call_from_201(portal)
    url = portal.url + API

    # Alice is 201, but the caller was an outside number 201: not her call, by any route.
    status, calls = await _json(alice, f"{url}/calls")
    assert status == 200 and call_id not in {item["id"] for item in calls["items"]}
    assert calls["items"], "Alice still sees her own calls"
    status, listed = await _json(alice, f"{url}/recordings")
    assert status == 200 and recording_id not in {item["id"] for item in listed["items"]}
    assert (await _json(alice, f"{url}/calls/{call_id}"))[0] == 404
    assert (await _json(alice, f"{url}/recordings/{recording_id}"))[0] == 404
    async with alice.session.get(f"{url}/recordings/{recording_id}/audio") as response:
        assert response.status == 404
    async with alice.session.get(f"{portal.url}/reports") as response:
        page = await response.text()
    assert f'data-call-id="{call_id}"' not in page and "Someone Outside" not in page

    # Bob, who was called, sees it and plays it.
    status, calls = await _json(bob, f"{url}/calls")
    assert call_id in {item["id"] for item in calls["items"]}
    assert (await _json(bob, f"{url}/calls/{call_id}"))[0] == 200
    async with bob.session.get(f"{url}/recordings/{recording_id}/audio") as response:
        assert response.status == 200 and len(await response.read()) > 1000


async def test_a_new_user_with_a_removed_users_extension_sees_none_of_their_calls(
    portal: Fixture,
) -> None:
    store = portal.store
    before = await store.calls_page(ORG, CallQuery(scope_ext="201"), 50, 0)
    assert before[1] == 1  # Alice's call to Bob
    await store.remove_user(ORG, "201")
    await store.add_user(ORG, "201", "Another Alice")
    assert await store.calls_page(ORG, CallQuery(scope_ext="201"), 50, 0) == ([], 0)
    # The admin still has every call, and the CDR keeps the parties' numbers and names.
    rows, _ = await store.calls_page(ORG, CallQuery(), 50, 0)
    alice_bob = next(row for row in rows if row.call.id == portal.calls["alice-bob"])
    assert (alice_bob.call.caller_ext, alice_bob.call.caller_name) == ("201", "Alice Archer")


async def test_user_ids_must_be_the_organisations_users(portal: Fixture) -> None:
    from storage.errors import InvalidValue

    beta = (await portal.store.add_organisation("beta", "Beta", "beta.example")).scope
    stranger = await portal.store.add_user(beta, "201", "Beta's Alice")
    try:
        await portal.store.create_call(
            ORG.id, caller_user_id=stranger.id, sip_call_id="x@test", direction="outbound",
            caller_ext="201", started_at=BASE_TIME,
        )  # fmt: skip
    except InvalidValue as exc:
        assert exc.field == "caller_user_id"
    else:
        raise AssertionError("another organisation's user was filed on a call")
    assert await party_users(portal.store, "201", "0612") == {
        "caller_user_id": (await portal.store.get_user(ORG, "201")).id,  # type: ignore[union-attr]
        "callee_user_id": None,
    }


def _version_11_database(path: Path) -> None:
    """A store as it was before migration 12: calls matched to users by number."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for version in range(1, 12):
        for statement in migration_statements(version, SQLITE):
            connection.execute(statement.replace(":default_domain", "'pbx.example'"))
        connection.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    now = time.time()
    connection.executescript(
        f"""
        INSERT INTO users (id, org_id, extension, name, realm, created_at)
            VALUES (1, 1, '201', 'Alice', 'pbx.example', {now}),
                   (2, 1, '202', 'Bob', 'pbx.example', {now});
        INSERT INTO calls (id, org_id, sip_call_id, direction, caller_ext, callee_ext,
            started_at) VALUES
            (1, 1, 'out@x', 'outbound', '201', '0612345678', {now}),
            (2, 1, 'in@x', 'inbound', '201', '202', {now + 1}),
            (3, 1, 'internal@x', 'internal', '202', '201', {now + 2});
        """
    )
    connection.commit()
    connection.close()


async def test_calls_from_before_migration_12_get_their_users_by_direction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "callrec.db"
    _version_11_database(path)
    store = await Store.open(path, default_domain="pbx.example")
    try:
        (org,) = await store.list_organisations()

        async def seen_by(extension: str) -> list[str]:
            rows, _ = await store.calls_page(org.scope, CallQuery(scope_ext=extension), 10, 0)
            return sorted(row.call.sip_call_id for row in rows)

        # Alice called out and was called internally; the inbound call from an outside
        # 201 was Bob's.
        assert await seen_by("201") == ["internal@x", "out@x"]
        assert await seen_by("202") == ["in@x", "internal@x"]
    finally:
        await store.close()


def test_the_b2bua_files_the_users_of_each_direction() -> None:
    """What `b2bua.server.Route` files on the CDR: the user it set the call up for, as
    the caller of a call out, the callee of a call in, and both users of an internal
    call; never the outside party."""
    from dataclasses import dataclass as frozen

    from b2bua.call import INBOUND, INTERNAL, OUTBOUND, Party
    from b2bua.server import Route

    @frozen(frozen=True)
    class User:
        id: int
        org_id: int = 1
        extension: str = "201"
        name: str = "Anna"
        recording_mode: str = "always"

    anna, bram = User(7), User(8, extension="202", name="Bram")
    outside = Party("201", "Someone Outside")
    assert Route(INBOUND, outside, Party("202", "Bram"), [], bram).party_user_ids() == (None, 8)
    assert Route(OUTBOUND, Party("201", "Anna"), outside, [], anna).party_user_ids() == (7, None)
    internal = Route(INTERNAL, Party("201", "Anna"), Party("202", "Bram"), [], anna, bram)
    assert internal.party_user_ids() == (7, 8)
