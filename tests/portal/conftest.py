"""A real portal on 127.0.0.1 with a real store, real WAV files and logged-in clients."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile
from argon2 import PasswordHasher

from portal.app import PortalHandle, start_portal_at
from portal.services import PortalServices
from storage.database import Store
from storage.models import OrgScope
from tests.storage.orgs import ORG

ADMIN = ("root", "admin-secret-1")
PASSWORDS = {"201": "alice-pass-1", "202": "bob-pass-22", "203": "carol-pass-3"}
DAY = 86400.0
# 2024-05-01T12:00:00Z
BASE_TIME = 1714564800.0


@dataclass
class Fixture:
    """The running portal and what was put in its store."""

    portal: PortalHandle
    store: Store
    storage_dir: Path
    recordings: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    sha256: dict[int, str] = field(default_factory=dict)
    exports: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.portal.url


def write_wav(path: Path, seconds: float, frequency: float, *, subtype: str = "PCM_16") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000.0
    tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    soundfile.write(str(path), tone, 8000, subtype=subtype)
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def party_users(store: Store, caller: str, callee: str) -> dict[str, int | None]:
    """The user ids a call between these numbers is filed with, as the B2BUA files
    them: a party who is one of the organisation's users is that user."""
    users = {number: await store.get_user(ORG, number) for number in (caller, callee)}
    return {
        "caller_user_id": user.id if (user := users[caller]) is not None else None,
        "callee_user_id": user.id if (user := users[callee]) is not None else None,
    }


async def add_recorded_call(
    fixture: Fixture,
    key: str,
    *,
    caller: tuple[str, str],
    callee: tuple[str, str],
    owner: str | None,
    started_at: float,
    seconds: float = 2.0,
    frequency: float = 440.0,
) -> int:
    """A finished, answered call with a complete recording file; returns the recording id."""
    store = fixture.store
    call_id = await store.create_call(
        ORG.id,
        **await party_users(store, caller[0], callee[0]),
        sip_call_id=f"{key}@test",
        direction="outbound",
        caller_ext=caller[0],
        caller_name=caller[1],
        callee_ext=callee[0],
        callee_name=callee[1],
        started_at=started_at,
        answered_at=started_at + 3.0,
        ended_at=started_at + 3.0 + seconds,
        disposition="answered",
    )
    relative = f"recordings/2024/05/01/{key}.wav"
    digest = write_wav(fixture.storage_dir / relative, seconds, frequency)
    recording_id = await store.create_recording(
        call_id=call_id,
        path=relative,
        format="wav",
        channels=1,
        sample_rate=8000,
        started_at=started_at + 3.0,
        retention_days=90,
        owner_ext=owner,
    )
    await store.finish_recording(
        recording_id,
        status="complete",
        ended_at=started_at + 3.0 + seconds,
        duration_s=seconds,
        segments=[(0.0, seconds)],
        sha256=digest,
        size=(fixture.storage_dir / relative).stat().st_size,
    )
    fixture.calls[key] = call_id
    fixture.recordings[key] = recording_id
    fixture.sha256[recording_id] = digest
    return recording_id


@pytest.fixture
async def portal(tmp_path: Path) -> AsyncIterator[Fixture]:
    storage_dir = tmp_path / "data"
    # Cheap argon2 parameters keep the fixture fast; the production defaults are tested
    # in tests/storage.
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    store = await Store.open(storage_dir / "callrec.db", hasher=hasher)
    await store.add_admin(ORG, *ADMIN, email="root@example.org")
    await store.add_user(ORG, "201", "Alice Archer", mode="always")
    await store.add_user(ORG, "202", "Bob Baker", mode="on-demand")
    await store.add_user(ORG, "203", "Carol Cole", mode="never")
    for extension, password in PASSWORDS.items():
        await store.set_portal_password(ORG, extension, password)

    fixture_box: list[Fixture] = []

    async def request_export(
        org: OrgScope, month: str, requested_by: str, *, email: str | None, address: str | None
    ) -> int:
        fixture_box[0].exports.append((month, requested_by))
        return await store.create_export(org, month, requested_by, time.time())

    services = PortalServices(
        storage_dir=storage_dir,
        recordings_dir=storage_dir / "recordings",
        request_export=request_export,
    )
    handle = await start_portal_at(store, services, "127.0.0.1", 0)
    fixture = Fixture(handle, store, storage_dir)
    fixture_box.append(fixture)
    # Alice (201) calls Bob (202): Alice's recording.
    await add_recorded_call(
        fixture,
        "alice-bob",
        caller=("201", "Alice Archer"),
        callee=("202", "Bob Baker"),
        owner="201",
        started_at=BASE_TIME,
        seconds=3.0,
        frequency=440.0,
    )
    # Carol (203) calls an outside number: Carol's recording, nothing to do with 201/202.
    await add_recorded_call(
        fixture,
        "carol-out",
        caller=("203", "Carol Cole"),
        callee=("0612345678", "Trunk"),
        owner="203",
        started_at=BASE_TIME + DAY,
        seconds=2.0,
        frequency=660.0,
    )
    # Bob calls Carol, not recorded.
    fixture.calls["bob-carol"] = await store.create_call(
        ORG.id,
        **await party_users(store, "202", "203"),
        sip_call_id="bob-carol@test",
        direction="outbound",
        caller_ext="202",
        caller_name="Bob Baker",
        callee_ext="203",
        callee_name="Carol Cole",
        started_at=BASE_TIME + 2 * DAY,
        answered_at=BASE_TIME + 2 * DAY + 2,
        ended_at=BASE_TIME + 2 * DAY + 65,
        disposition="answered",
    )
    try:
        yield fixture
    finally:
        await handle.stop()
        await store.close()


_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


async def login(session: aiohttp.ClientSession, url: str, name: str, password: str) -> str:
    """Log in through the form like a browser; returns the session's CSRF token."""
    async with session.get(f"{url}/login") as response:
        match = _CSRF_INPUT.search(await response.text())
    assert match is not None
    async with session.post(
        f"{url}/login",
        data={"csrf_token": match.group(1), "name": name, "password": password, "next": "/"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
    async with session.get(f"{url}/api/v1/me") as response:
        assert response.status == 200
        me = await response.json()
    token: str = me["csrf_token"]
    return token


@dataclass
class Client:
    """A logged-in HTTP client and its CSRF token."""

    session: aiohttp.ClientSession
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}


def new_session() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def admin(portal: Fixture) -> AsyncIterator[Client]:
    async with new_session() as session:
        yield Client(session, await login(session, portal.url, *ADMIN))


@pytest.fixture
async def alice(portal: Fixture) -> AsyncIterator[Client]:
    async with new_session() as session:
        yield Client(session, await login(session, portal.url, "201", PASSWORDS["201"]))


@pytest.fixture
async def bob(portal: Fixture) -> AsyncIterator[Client]:
    async with new_session() as session:
        yield Client(session, await login(session, portal.url, "202", PASSWORDS["202"]))


@pytest.fixture
async def carol(portal: Fixture) -> AsyncIterator[Client]:
    async with new_session() as session:
        yield Client(session, await login(session, portal.url, "203", PASSWORDS["203"]))
