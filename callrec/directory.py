"""The SIP side's directory, answered from memory: `CachedDirectory`.

It implements `b2bua.services.Directory` over the store. Organisations (by SIP domain),
their number ranges, users, digest credentials, devices and registrations are read once
into a snapshot and looked up there, so an INVITE or a REGISTER costs no SQLite round
trip. Users and credentials are keyed by (organisation, extension or username): the
same extension in two organisations is two users, and a lookup names the organisation.
Writes (registrations, call records) go to the store; a registration write then updates
the snapshot too.

How fresh the snapshot is (`storage.changes` says how changes are seen):
- A change made in this process (the portal) moves `DirectoryWatch.local_changes` while
  its statement runs; every lookup compares that count with the snapshot's and reloads
  first when it moved. A user added, removed or changed in the portal applies to the very
  next request.
- A change made by another process (the `callrec users ...` CLI) is found by polling
  SQLite's `data_version` every `poll_interval` (0.25 s), and a reload follows at once.
  A removed user or a changed password therefore stops working within `poll_interval`
  plus one reload (milliseconds for thousands of users) of the CLI's commit.
- The snapshot is trusted for `max_stale` (2 s) after the poll last confirmed it. If the
  poll cannot run (the database locked or failing), lookups past that reload themselves
  and, if the database still cannot be read, fail with `StorageUnavailable`, which the
  SIP side answers with 503. So whatever happens, no credential is accepted more than
  `max_stale` after the change that revoked it was committed.

Reloads are serialised by one lock. A reload during which a registration was written
here is done again, so the snapshot never loses a write it raced with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from storage.changes import DirectorySnapshot, DirectoryWatch, load_directory
from storage.connection import POSTGRESQL
from storage.database import Store
from storage.models import Credentials, Device, Did, Organisation, User
from storage.organisations import did_matches

__all__ = ["MAX_STALE_S", "POLL_INTERVAL_S", "CachedDirectory"]

log = logging.getLogger("callrec.directory")

POLL_INTERVAL_S = 0.25
MAX_STALE_S = 2.0

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


@dataclass(frozen=True)
class CachedBinding:
    """One registration as the SIP side reads it (b2bua.services.StoredBinding)."""

    contact: str
    received: str
    call_id: str
    cseq: int
    expires_at: float
    instance: str | None
    updated_at: float


@dataclass
class _Snapshot:
    organisations: dict[str, Organisation]  # by domain, lower case
    dids: list[Did]
    users: dict[tuple[int, str], User]
    credentials: dict[tuple[int, str], Credentials]
    devices: dict[int, list[Device]]
    # By user id, most recently refreshed first (the store's order).
    bindings: dict[int, list[CachedBinding]]
    local_changes: int
    data_version: int
    confirmed_at: float = field(default=0.0)


def _build(
    data: DirectorySnapshot, local_changes: int, data_version: int, confirmed_at: float
) -> _Snapshot:
    users = data.users
    by_extension = {(user.org_id, user.extension): user for user in users}
    by_id = {user.id: user for user in users}
    credentials: dict[tuple[int, str], Credentials] = {}
    devices_of: dict[int, list[Device]] = {}
    for device in data.devices:  # by id: the first device with a username has it
        devices_of.setdefault(device.user_id, []).append(device)
        owner = by_id.get(device.user_id)
        if owner is None or not device.username:
            continue
        key = (owner.org_id, device.username)
        if key not in credentials:
            credentials[key] = Credentials(
                owner, device.username, owner.realm, device.ha1_md5, device.ha1_sha256
            )
    for user in users:  # an extension wins over a device username
        credentials[(user.org_id, user.extension)] = Credentials(
            user, user.extension, user.realm, user.ha1_md5, user.ha1_sha256
        )
    bindings: dict[int, list[CachedBinding]] = {}
    for r in data.registrations:
        bindings.setdefault(r.user_id, []).append(
            CachedBinding(
                r.contact, r.received, r.call_id, r.cseq, r.expires_at, r.instance, r.updated_at
            )
        )
    return _Snapshot(
        {org.domain.lower(): org for org in data.organisations},
        list(data.dids),
        by_extension,
        credentials,
        devices_of,
        bindings,
        local_changes,
        data_version,
        confirmed_at,
    )


class CachedDirectory:
    """`b2bua.services.Directory` from memory, over `store` (see the module docstring).

    Built by the composition root with its task group's `spawn`, which runs the poll.
    """

    def __init__(
        self,
        store: Store,
        *,
        spawn: Spawn,
        poll_interval: float = POLL_INTERVAL_S,
        max_stale: float = MAX_STALE_S,
    ) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.max_stale = max_stale
        self.watch = DirectoryWatch(store.database)
        self.reloads = 0
        self._snapshot: _Snapshot | None = None
        self._installed = False
        self._lock = asyncio.Lock()
        self._writes = 0
        self._poll_failing = False
        spawn(self._run())

    # ------------------------------------------------------------------ freshness
    def _trusted(self, snapshot: _Snapshot) -> bool:
        return (
            snapshot.local_changes == self.watch.local_changes
            and time.monotonic() - snapshot.confirmed_at <= self.max_stale
        )

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._trusted(snapshot):
            return snapshot  # the INVITE's path: no await that suspends
        async with self._lock:
            while True:
                snapshot = self._snapshot
                if snapshot is not None and self._trusted(snapshot):
                    return snapshot
                await self._reload()

    async def _reload(self) -> None:
        """Read the whole directory again; call with the lock held."""
        if not self._installed:
            await self.watch.install()
            self._installed = True
        while True:
            started = time.monotonic()
            local_changes = self.watch.local_changes
            writes = self._writes
            data_version = await self.watch.data_version()
            data = await load_directory(self.store.database, time.time())
            if writes == self._writes:
                break  # else a registration was written meanwhile: read it too
        self._snapshot = _build(data, local_changes, data_version, started)
        self.reloads += 1

    async def _run(self) -> None:
        """Load, then poll `data_version` until the task group is cancelled."""
        while True:
            try:
                async with self._lock:
                    snapshot = self._snapshot
                    if snapshot is None or not self._trusted(snapshot):
                        await self._reload()
                    else:
                        started = time.monotonic()
                        if await self.watch.data_version() != snapshot.data_version:
                            await self._reload()
                        else:
                            snapshot.confirmed_at = started
                if self._poll_failing:
                    log.warning("the directory can be read again")
                    self._poll_failing = False
            except Exception as exc:  # logged once per outage; lookups fail past max_stale
                if not self._poll_failing:
                    log.error("cannot check the directory for changes: %s", exc)
                    self._poll_failing = True
            await asyncio.sleep(self.poll_interval)

    # ------------------------------------------------------------------ lookups
    async def organisation_for_domain(self, domain: str | None) -> Organisation | None:
        snapshot = await self._current()
        found = snapshot.organisations.get(domain.lower()) if domain else None
        if found is None and len(snapshot.organisations) == 1:
            # One organisation: its phones may use any domain (an address, say).
            return next(iter(snapshot.organisations.values()))
        return found

    async def find_credentials(self, org_id: int, username: str) -> Credentials | None:
        return (await self._current()).credentials.get((org_id, username))

    async def get_user(self, org_id: int, extension: str) -> User | None:
        return (await self._current()).users.get((org_id, extension))

    async def route_number(self, number: str) -> User | None:
        """The user a call from the trunk to `number` rings: the organisation whose
        number range holds it (the range's extension, or the number itself as an
        extension); with a single organisation and no range holding it, the number as
        that organisation's extension."""
        snapshot = await self._current()
        for did in snapshot.dids:
            if did_matches(did, number):
                return snapshot.users.get((did.org_id, did.target(number)))
        if len(snapshot.organisations) == 1:
            only = next(iter(snapshot.organisations.values()))
            return snapshot.users.get((only.id, number))
        return None

    async def list_devices(self, org_id: int, extension: str) -> list[Device]:
        snapshot = await self._current()
        user = snapshot.users.get((org_id, extension))
        return list(snapshot.devices.get(user.id, ())) if user is not None else []

    async def bindings(self, org_id: int, extension: str, now: float) -> list[CachedBinding]:
        snapshot = await self._current()
        user = snapshot.users.get((org_id, extension))
        if user is None:
            return []
        found = [b for b in snapshot.bindings.get(user.id, ()) if b.expires_at > now]
        if found or self.store.database.dialect != POSTGRESQL:
            return found
        # Nodes sharing the store: the phone may have registered through another node
        # since the last poll; ask the store before answering 480.
        org = next((o for o in snapshot.organisations.values() if o.id == org_id), None)
        if org is None:
            return []
        return [
            CachedBinding(
                r.contact, r.received, r.call_id, r.cseq, r.expires_at, r.instance, r.updated_at
            )
            for r in await self.store.bindings(org.scope, extension, now)
        ]

    # ------------------------------------------------------------------ registrations
    def _wrote(self) -> dict[int, list[CachedBinding]] | None:
        """Note a registration write; the snapshot's bindings to update, if loaded."""
        self._writes += 1
        return self._snapshot.bindings if self._snapshot is not None else None

    async def upsert_binding(
        self,
        user_id: int,
        contact: str,
        received: str,
        call_id: str,
        cseq: int,
        expires_at: float,
        device_username: str | None = None,
        *,
        instance: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        await self.store.upsert_binding(
            user_id,
            contact,
            received,
            call_id,
            cseq,
            expires_at,
            device_username,
            instance=instance,
            user_agent=user_agent,
        )
        bindings = self._wrote()
        if bindings is None:
            return
        kept = [
            b
            for b in bindings.get(user_id, ())
            if b.contact != contact and (instance is None or b.instance != instance)
        ]
        added = CachedBinding(contact, received, call_id, cseq, expires_at, instance, time.time())
        bindings[user_id] = [added, *kept]

    async def remove_binding(self, user_id: int, contact: str) -> bool:
        removed = await self.store.remove_binding(user_id, contact)
        bindings = self._wrote()
        if bindings is not None and user_id in bindings:
            bindings[user_id] = [b for b in bindings[user_id] if b.contact != contact]
        return removed

    async def remove_all_bindings(self, user_id: int) -> int:
        removed = await self.store.remove_all_bindings(user_id)
        bindings = self._wrote()
        if bindings is not None:
            bindings.pop(user_id, None)
        return removed

    async def purge_expired_bindings(self, now: float) -> int:
        purged = await self.store.purge_expired_bindings(now)
        bindings = self._wrote()
        if bindings is not None:
            for user_id, kept in list(bindings.items()):
                bindings[user_id] = [b for b in kept if b.expires_at > now]
        return purged

    # ------------------------------------------------------------------ call records
    async def create_call(self, org_id: int, **fields: Any) -> int:
        return await self.store.create_call(org_id, **fields)

    async def update_call(self, call_id: int, **fields: Any) -> None:
        await self.store.update_call(call_id, **fields)
