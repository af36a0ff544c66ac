"""REGISTER bindings: upsert, expiry, instance replacement, removal."""

from __future__ import annotations

import pytest

from storage.database import StorageError, Store
from tests.storage.orgs import ORG


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(StorageError, match="unknown user id 999"):
        await store.upsert_binding(
            999, "sip:x@127.0.0.1", "127.0.0.1:5062;transport=udp", "c", 1, 9e9
        )


async def test_bindings_upsert_expiry_and_removal(store: Store) -> None:
    alice = await store.add_user(ORG, "101", "Alice")
    received = "127.0.0.1:5062;transport=udp"
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:5062", received, "c1", 1, 100.0, "101")
    await store.upsert_binding(alice.id, "sip:b@127.0.0.1:5064", received, "c2", 1, 200.0)
    # the same contact replaces (refresh with a new expiry and CSeq)
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:5062", received, "c1", 2, 300.0, "101")
    bindings = await store.bindings(ORG, "101", now=150.0)
    assert sorted((b.contact, b.cseq, b.expires_at) for b in bindings) == [
        ("sip:a@127.0.0.1:5062", 2, 300.0),
        ("sip:b@127.0.0.1:5064", 1, 200.0),
    ]
    assert all(b.extension == "101" for b in bindings)
    assert [b.contact for b in await store.bindings(ORG, "101", now=250.0)] == [
        "sip:a@127.0.0.1:5062"
    ]
    assert await store.purge_expired_bindings(now=250.0) == 1
    assert await store.purge_expired_bindings(now=250.0) == 0
    assert await store.remove_binding(alice.id, "sip:a@127.0.0.1:5062")
    assert not await store.remove_binding(alice.id, "sip:a@127.0.0.1:5062")
    assert await store.bindings(ORG, "101", now=0.0) == []


async def test_instance_replaces_old_contact_and_remove_all(store: Store) -> None:
    alice = await store.add_user(ORG, "101", "Alice")
    bob = await store.add_user(ORG, "102", "Bob")
    instance = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:1", "r", "c", 1, 500.0, instance=instance)
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:2", "r", "c", 2, 500.0, instance=instance)
    await store.upsert_binding(bob.id, "sip:b@127.0.0.1:3", "r", "d", 1, 500.0, user_agent="UA")
    assert [b.contact for b in await store.bindings(ORG, "101", now=0.0)] == ["sip:a@127.0.0.1:2"]
    assert await store.remove_all_bindings(alice.id) == 1
    assert await store.bindings(ORG, "101", now=0.0) == []
    (bob_binding,) = await store.bindings(ORG, "102", now=0.0)
    assert bob_binding.user_agent == "UA"
