"""`CachedDirectory`: the SIP side's users and credentials from memory, over a real store.

Changes through this process's store (what the portal uses) apply to the next lookup;
changes through another connection (another process: the CLI) within the poll interval
plus one reload; and a directory that cannot be checked stops answering after
`max_stale`. The CLI in a real separate process is in tests/e2e/test_directory_cache.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from callrec.directory import CachedDirectory
from storage.accounts import ha1
from storage.database import Store
from storage.errors import StorageUnavailable
from testkit.waiting import wait_until_async
from tests.storage.orgs import ORG

REALM = "callrec"


@pytest.fixture
async def store(store_location: str | Path) -> AsyncIterator[Store]:
    opened = await Store.open(store_location)
    await opened.add_user(ORG, "201", "Alice", password="old-201", devices=["sip:desk201@pbx"])
    await opened.add_user(ORG, "202", "Bob", password="pw-202")
    yield opened
    await opened.close()


class Tasks:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.append(task)
        return task

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def tasks() -> AsyncIterator[Tasks]:
    owner = Tasks()
    yield owner
    await owner.cancel()


async def loaded(
    store: Store, tasks: Tasks, *, poll_interval: float = 3600.0, max_stale: float = 3600.0
) -> CachedDirectory:
    directory = CachedDirectory(
        store, spawn=tasks.spawn, poll_interval=poll_interval, max_stale=max_stale
    )
    await wait_until_async(lambda: directory.reloads, timeout=5, what="the first load")
    return directory


async def test_changes_through_this_process_apply_to_the_next_lookup(
    store: Store, tasks: Tasks
) -> None:
    # No poll in this test: only the in-process watch can tell the cache.
    directory = await loaded(store, tasks)
    found = await directory.find_credentials(ORG.id, "201")
    assert found is not None and found.ha1_md5 == ha1("201", REALM, "old-201")
    device = await directory.find_credentials(ORG.id, "desk201")
    assert device is not None and device.user.extension == "201"

    await store.set_password(ORG, "201", "new-201")
    found = await directory.find_credentials(ORG.id, "201")
    assert found is not None and found.ha1_md5 == ha1("201", REALM, "new-201")
    device = await directory.find_credentials(ORG.id, "desk201")
    assert device is not None and device.ha1_md5 == ha1("desk201", REALM, "new-201")

    await store.set_mode(ORG, "202", "always")
    user = await directory.get_user(ORG.id, "202")
    assert user is not None and user.recording_mode == "always"

    await store.add_user(ORG, "203", "Carol", password="pw-203")
    assert (await directory.find_credentials(ORG.id, "203")) is not None
    await store.add_device(ORG, "203", "sip:soft203@pbx", password="pw-203")
    assert [d.username for d in await directory.list_devices(ORG.id, "203")] == ["soft203"]

    await store.remove_user(ORG, "201")
    assert await directory.find_credentials(ORG.id, "201") is None
    assert await directory.find_credentials(ORG.id, "desk201") is None
    assert await directory.get_user(ORG.id, "201") is None


async def test_lookups_do_not_touch_the_database(store: Store, tasks: Tasks) -> None:
    directory = await loaded(store, tasks)
    async with store.database.read():  # the database is busy for as long as this lasts
        found = await asyncio.wait_for(directory.find_credentials(ORG.id, "201"), timeout=1)
        assert found is not None
        assert await asyncio.wait_for(directory.get_user(ORG.id, "202"), timeout=1) is not None
        assert (
            await asyncio.wait_for(directory.bindings(ORG.id, "202", time.time()), timeout=1) == []
        )


async def test_a_change_by_another_connection_applies_within_the_poll_interval(
    store: Store, tasks: Tasks, store_location: str | Path
) -> None:
    poll = 0.1
    directory = await loaded(store, tasks, poll_interval=poll, max_stale=10.0)
    other = await Store.open(store_location)  # what the CLI (or another node) opens
    try:
        await other.set_password(ORG, "202", "new-202")
        changed_at = time.monotonic()

        async def new_password_seen() -> bool:
            found = await directory.find_credentials(ORG.id, "202")
            return found is not None and found.ha1_md5 == ha1("202", REALM, "new-202")

        await wait_until_async(new_password_seen, timeout=5, what="the new password")
        seen_after = time.monotonic() - changed_at
        await other.remove_user(ORG, "201")
        removed_at = time.monotonic()

        async def gone() -> bool:
            return await directory.find_credentials(ORG.id, "201") is None

        await wait_until_async(gone, timeout=5, what="user 201 gone")
        gone_after = time.monotonic() - removed_at
    finally:
        await other.close()
    # The bound is the poll interval plus one reload; the slack is for a loaded machine.
    assert seen_after < poll + 0.4, seen_after
    assert gone_after < poll + 0.4, gone_after


async def test_a_directory_that_cannot_be_checked_stops_answering_after_max_stale(
    store: Store, tasks: Tasks
) -> None:
    max_stale = 0.3
    directory = await loaded(store, tasks, poll_interval=0.02, max_stale=max_stale)

    async def broken() -> int:
        raise StorageUnavailable("the database is locked by another process; try again")

    directory.watch.data_version = broken  # type: ignore[method-assign]
    broke_at = time.monotonic()

    async def refused() -> bool:
        try:
            await directory.find_credentials(ORG.id, "201")
        except StorageUnavailable:
            return True
        return False

    await wait_until_async(refused, timeout=5, what="lookups refused")
    assert time.monotonic() - broke_at < max_stale + 0.3


async def test_registrations_are_written_through(store: Store, tasks: Tasks) -> None:
    directory = await loaded(store, tasks)
    user = await directory.get_user(ORG.id, "202")
    assert user is not None
    now = time.time()
    for contact in ("sip:202@10.0.0.1", "sip:202@10.0.0.2"):
        await directory.upsert_binding(
            user.id, contact, "10.0.0.1:5060;transport=udp", "c1", 1, now + 60
        )
    contacts = [b.contact for b in await directory.bindings(ORG.id, "202", now)]
    assert contacts == ["sip:202@10.0.0.2", "sip:202@10.0.0.1"]  # newest first
    assert contacts == [r.contact for r in await store.bindings(ORG, "202", now)]
    assert await directory.remove_binding(user.id, "sip:202@10.0.0.2")
    assert [b.contact for b in await directory.bindings(ORG.id, "202", now)] == ["sip:202@10.0.0.1"]
    assert [b.contact for b in await directory.bindings(ORG.id, "202", now + 61)] == []  # expired
    assert await directory.purge_expired_bindings(now + 61) == 1
    # A reload (here forced by a change of the user) reads the same from the store.
    await store.set_mode(ORG, "202", "never")
    assert await directory.bindings(ORG.id, "202", now) == []


async def test_registrations_and_writes_of_another_node_reach_this_cache(
    store: Store, tasks: Tasks, store_location: str | Path
) -> None:
    """Another node (another Store on the same database) registers a phone: this
    node's cache learns it by polling, while its own writes do not make it reload."""
    poll = 0.05
    directory = await loaded(store, tasks, poll_interval=poll, max_stale=10.0)
    user = await directory.get_user(ORG.id, "202")
    assert user is not None
    now = time.time()
    await directory.upsert_binding(user.id, "sip:202@10.0.0.1", "10.0.0.1:5060", "c1", 1, now + 60)
    reloads = directory.reloads
    polled = asyncio.Event()
    real_version = directory.watch.data_version

    async def counted() -> int:
        polled.set()
        return await real_version()

    directory.watch.data_version = counted  # type: ignore[method-assign]
    for _ in range(3):  # a few polls after this node's own write
        polled.clear()
        await asyncio.wait_for(polled.wait(), timeout=5)
    assert directory.reloads <= reloads + 1  # SQLite's data_version may move once
    other = await Store.open(store_location)
    try:
        await other.upsert_binding(user.id, "sip:202@10.0.0.9", "10.0.0.9:5060", "c9", 1, now + 60)

        async def seen() -> bool:
            contacts = [b.contact for b in await directory.bindings(ORG.id, "202", now)]
            return "sip:202@10.0.0.9" in contacts

        await wait_until_async(seen, timeout=5, what="the other node's registration")
    finally:
        await other.close()
