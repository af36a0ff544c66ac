"""Call detail records: create, update, validation, listing."""

from __future__ import annotations

import pytest

from storage.database import StorageError, Store
from tests.storage.orgs import ORG


async def test_create_update_get_call(store: Store) -> None:
    call_id = await store.create_call(
        ORG.id,
        sip_call_id="abc@127.0.0.1",
        direction="inbound",
        callee_ext="101",
        started_at=1000.0,
    )
    call = await store.get_call(ORG, call_id)
    assert call is not None
    assert (call.disposition, call.recorded, call.duration_s) == (None, False, None)
    await store.update_call(
        call_id,
        answered_at=1002.0,
        ended_at=1062.5,
        disposition="answered",
        sip_status=200,
        recorded=True,
    )
    call = await store.get_call(ORG, call_id)
    assert call is not None
    assert (call.disposition, call.sip_status, call.recorded) == ("answered", 200, True)
    assert call.duration_s == pytest.approx(60.5)
    assert await store.get_call(ORG, call_id + 1) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"direction": "inbound", "started_at": 1.0}, "missing call field"),
        ({"sip_call_id": "x", "direction": "sideways", "started_at": 1.0}, "direction"),
        ({"sip_call_id": "x", "direction": "inbound", "started_at": "noon"}, "started_at"),
        ({"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "id": 5}, "unknown"),
        (
            {"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "disposition": "ok"},
            "disposition",
        ),
        (
            {"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "sip_status": 42},
            "sip_status",
        ),
    ],
)
async def test_create_call_validation(
    store: Store, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(StorageError, match=message):
        await store.create_call(ORG.id, **fields)


async def test_update_call_rejects_unknown_fields_and_ids(store: Store) -> None:
    call_id = await store.create_call(ORG.id, sip_call_id="x", direction="inbound", started_at=1.0)
    with pytest.raises(StorageError, match=r"unknown call field.*bogus"):
        await store.update_call(call_id, bogus=1)
    with pytest.raises(StorageError, match="unknown call id"):
        await store.update_call(call_id + 100, disposition="busy")


async def test_list_calls_filters_and_order(store: Store) -> None:
    rows = [
        ("c1", "101", "900", 100.0),
        ("c2", "102", "101", 200.0),
        ("c3", "102", "900", 300.0),
        ("c4", "103", "104", 400.0),
    ]
    for sip_call_id, caller, callee, started in rows:
        await store.create_call(
            ORG.id,
            sip_call_id=sip_call_id,
            direction="outbound",
            caller_ext=caller,
            callee_ext=callee,
            started_at=started,
        )

    async def ids(**filters: object) -> list[str]:
        return [call.sip_call_id for call in await store.list_calls(ORG, **filters)]  # type: ignore[arg-type]

    assert await ids() == ["c4", "c3", "c2", "c1"]
    assert await ids(limit=2) == ["c4", "c3"]
    assert await ids(limit=2, offset=2) == ["c2", "c1"]
    assert await ids(since=200.0) == ["c4", "c3", "c2"]
    assert await ids(until=300.0) == ["c2", "c1"]
    assert await ids(since=150.0, until=350.0) == ["c3", "c2"]
    assert await ids(extension="101") == ["c2", "c1"]
    assert await ids(extension="102", since=250.0) == ["c3"]


async def test_search_by_name_or_part_of_a_number_on_each_backend(store: Store) -> None:
    """The same search on SQLite (FTS5 trigram for 3+ characters, LIKE below) and on
    PostgreSQL (LIKE/ILIKE backed by trigram indexes): names, partial numbers, and
    LIKE's wildcard characters taken literally."""
    from storage.calls import CallQuery

    rows = [
        ("s1", "201", "Alice Archer", "0612345678", 100.0),
        ("s2", "202", "Bob 100%_sure", "0201112222", 200.0),
        ("s3", "203", "Carol", "0755512345", 300.0),
    ]
    for sip_call_id, caller, name, callee, started in rows:
        await store.create_call(
            ORG.id,
            sip_call_id=sip_call_id,
            direction="outbound",
            caller_ext=caller,
            caller_name=name,
            callee_ext=callee,
            started_at=started,
        )

    async def found(text: str) -> list[str]:
        page, total = await store.calls_page(ORG, CallQuery(search=text), 10, 0)
        assert total == len(page)
        return sorted(row.call.sip_call_id for row in page)

    assert await found("alice") == ["s1"]
    assert await found("arch") == ["s1"]
    assert await found("12345") == ["s1", "s3"]
    assert await found("22") == ["s2"]  # a short text: the LIKE form on both
    assert await found("100%_") == ["s2"]
    assert await found("%") == ["s2"]
    assert await found("nobody") == []


async def test_a_starting_node_closes_only_its_own_open_calls(store: Store) -> None:
    """On a store shared by several nodes, a node that starts after a crash closes the
    calls it left open (and those no node owns), never another live node's calls."""

    async def open_call(node: str | None, sip_call_id: str) -> int:
        store.node = node
        return await store.create_call(
            ORG.id, sip_call_id=sip_call_id, direction="outbound", started_at=100.0
        )

    mine = await open_call("host-a:/data", "mine")
    theirs = await open_call("host-b:/data", "theirs")
    nobody = await open_call(None, "nobody")
    store.node = "host-a:/data"
    closed = await store.close_interrupted_calls(lambda _path: None)
    assert sorted(call.id for call in closed) == sorted([mine, nobody])
    still_open = await store.get_call(ORG, theirs)
    assert still_open is not None and still_open.ended_at is None
    done = await store.get_call(ORG, mine)
    assert done is not None and done.disposition == "interrupted"
