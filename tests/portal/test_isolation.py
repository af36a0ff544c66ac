"""Nothing of one organisation reaches another, by any route of the portal.

The routes are read from the running aiohttp application's router, so a route added
later is walked too. Each one is asked, with organisation A's ids, extension and slug
in its path (and in the body of a write), by organisation B's admin, B's user and the
platform's operator. A route that names something of A must answer 403 or 404 (405
where recordings cannot be changed at all); no answer may hold anything of A (its
users' names, its calls' ids, its recordings' bytes, its export's ZIP); and after the
walk A's data is as it was. The same routes asked by A's own admin do give A's data
(a walk that cannot fail proves nothing).
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from callrec.config import load_config
from callrec.services.export import ExportService, portal_secret, sign_download
from portal.context import CONTEXT
from storage.models import OrgScope
from tests.portal.conftest import ADMIN, PASSWORDS, Fixture, login, new_session
from tests.storage.orgs import ORG

# What organisation A holds and B must never see.
A_MARKERS = (b"Alice Archer", b"Bob Baker", b"Carol Cole", b"alice-bob@test", b"bob-carol@test")
A_ONLY_EXTENSION = "203"  # B has a 201 of its own, never a 203
WRITE_BODY = {
    "mode": "always",
    "language": "nl",
    "password": "long-enough-password",
    "portal_password": "long-enough-password",
    "uri": "sip:intruder@b.example",
    "month": "2024-05",
    "name": "intruder",
    "extension": A_ONLY_EXTENSION,
    "first": "31999000",
}
# Routes that are not about an organisation's data at all.
PUBLIC = {"/login", "/api/v1/openapi.json"}


@dataclass
class Orgs:
    fixture: Fixture
    a_export: int
    a_token_id: int
    a_did: int
    a_link: str
    zip_bytes: bytes
    b: OrgScope
    a_device: int = 0


@pytest.fixture
async def orgs(portal: Fixture, tmp_path: Path) -> AsyncIterator[Orgs]:
    store = portal.store
    # A is the fixture's default organisation; its export is ready, with a ZIP.
    zip_path = portal.storage_dir / "exports" / "a-2024-05.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("manifest.csv", "Alice Archer,alice-bob@test\n")
    a_export = await store.create_export(ORG, "2024-05", "admin:root", time.time())
    await store.update_export(
        a_export, "ready", path="exports/a-2024-05.zip", finished_at=time.time()
    )
    a_token_id, _ = await store.create_api_token(ORG, "a-token", "admin:root")
    a_did = (await store.add_did(ORG, "31201000", "31201099")).id
    a_device = (await store.add_device(ORG, A_ONLY_EXTENSION, "carol-desk", password="pw-1")).id
    # The real link check, so a link that verifies would hand out the ZIP.
    config_path = tmp_path / "callrec.toml"
    config_path.write_text(f'[storage]\ndir = "{portal.storage_dir}"\n')
    config = load_config(config_path)
    services = portal.portal.app[CONTEXT].services
    services.verify_export_link = ExportService(store, config, spawn=None).verify_link
    secret = await portal_secret(store, config)
    a_link = "/exports/download?token=" + sign_download(
        secret, ORG.id, a_export, time.time() + 3600
    )
    # B: its admin, a user with the same extension as one of A's, its own call.
    b = (await store.add_organisation("beta", "Beta", "beta.example")).scope
    await store.add_admin(b, "bea", "bea-password-1")
    await store.add_user(b, "201", "Bert Beta", mode="always")
    await store.set_portal_password(b, "201", "bert-password-1")
    await store.add_operator("ops", "ops-password-1")
    await store.create_call(
        b.id, sip_call_id="beta@test", direction="outbound", caller_ext="201", started_at=1.0
    )
    yield Orgs(portal, a_export, a_token_id, a_did, a_link, zip_path.read_bytes(), b, a_device)


def _fill(path: str, orgs: Orgs) -> str:
    """`path` with organisation A's things in its placeholders."""
    fixture = orgs.fixture
    ids = {
        "/api/v1/calls/": fixture.calls["alice-bob"],
        "/api/v1/recordings/": fixture.recordings["alice-bob"],
        "/api/v1/exports/": orgs.a_export,
        "/api/v1/tokens/": orgs.a_token_id,
        "/dids/": orgs.a_did,
        "/devices/": orgs.a_device,
    }
    filled = path.replace("{extension}", A_ONLY_EXTENSION).replace("{slug}", ORG.slug)
    if "{id}" in filled:
        (number,) = [value for prefix, value in ids.items() if prefix in filled]
        filled = filled.replace("{id}", str(number))
    assert "{" not in filled, f"a placeholder this walk does not know: {path}"
    return filled


def _routes(app: web.Application) -> list[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "OPTIONS"):
            continue
        found.add((route.method, str(path)))
    return sorted(found)


# Routes that create a user: given A's extension they would make one of B's own, and
# the walk's later requests would rightly find it; they get no extension.
CREATE_USER = ("/api/v1/users", "/users")


async def _ask(
    session: aiohttp.ClientSession, csrf: str, base: str, method: str, path: str
) -> tuple[int, bytes]:
    url = base + path
    body = {k: v for k, v in WRITE_BODY.items() if k != "extension" or path not in CREATE_USER}
    if method == "GET":
        async with session.get(url, allow_redirects=False) as response:
            return response.status, await response.read()
    if path.startswith("/api/"):
        headers = {"X-CSRF-Token": csrf}
        async with session.request(
            method, url, json=body, headers=headers, allow_redirects=False
        ) as response:
            return response.status, await response.read()
    form = {**body, "csrf_token": csrf, "action": "did.remove", "id": "1"}
    async with session.request(method, url, data=form, allow_redirects=False) as response:
        return response.status, await response.read()


def _names_a(path: str, filled: str) -> bool:
    return filled != path or "token=" in filled


async def _walk(orgs: Orgs, name: str, password: str, *, operator: bool = False) -> list[str]:
    fixture = orgs.fixture
    problems: list[str] = []
    routes = _routes(fixture.portal.app)
    assert len(routes) > 40, routes  # the walk covers the API and the pages
    async with new_session() as session:
        csrf = await login(session, fixture.url, name, password)
        for method, path in [*routes, ("GET", orgs.a_link)]:
            if path in PUBLIC or path == "/logout":
                continue
            filled = _fill(path, orgs) if path != orgs.a_link else path
            status, body = await _ask(session, csrf, fixture.url, method, filled)
            leaked = [m.decode() for m in A_MARKERS if m in body]
            if orgs.zip_bytes in body or body.startswith(b"PK"):
                leaked.append("the export ZIP")
            if body.startswith(b"RIFF"):
                leaked.append("audio")
            if leaked:
                problems.append(f"{method} {filled}: {status} holds {leaked}")
            operator_route = path.startswith(("/api/v1/orgs", "/api/v1/usage", "/operator"))
            if operator and operator_route:
                continue  # the operator's own pages: no organisation's data, checked above
            if _names_a(path, filled) and status not in (403, 404, 405):
                problems.append(f"{method} {filled}: {status}, not refused")
    return problems


async def _state_of_a(fixture: Fixture) -> tuple[object, ...]:
    store = fixture.store
    return (
        await store.list_users(ORG),
        await store.org_settings(ORG),
        await store.list_api_tokens(ORG),
        await store.list_dids(ORG),
        await store.list_exports(ORG),
        [(d.uri) for d in await store.list_devices(ORG, A_ONLY_EXTENSION)],
    )


async def test_organisation_b_and_the_operator_get_nothing_of_organisation_a(
    orgs: Orgs,
) -> None:
    before = await _state_of_a(orgs.fixture)
    problems = await _walk(orgs, "bea", "bea-password-1")
    problems += await _walk(orgs, "201@beta.example", "bert-password-1")
    assert await _state_of_a(orgs.fixture) == before
    # The operator may change organisation A itself (its name, domain, language,
    # numbers: that is the operator's work), never read or change its data.
    problems += await _walk(orgs, "ops", "ops-password-1", operator=True)
    assert problems == [], "\n".join(problems)
    assert (await _state_of_a(orgs.fixture))[0] == before[0]


async def test_organisation_a_sees_its_own_through_the_same_routes(orgs: Orgs) -> None:
    """The positive control: A's admin gets A's call, recording, audio, user, export and
    ZIP through the very paths B was refused."""
    fixture = orgs.fixture
    async with new_session() as session:
        await login(session, fixture.url, *ADMIN)
        seen: dict[str, tuple[int, bytes]] = {}
        for method, path in _routes(fixture.portal.app):
            if method != "GET" or "{" not in path or path.startswith(("/api/v1/orgs", "/op")):
                continue
            filled = _fill(path, orgs)
            async with session.get(fixture.url + filled) as response:
                seen[path] = (response.status, await response.read())
        async with session.get(fixture.url + orgs.a_link) as response:
            assert response.status == 200 and await response.read() == orgs.zip_bytes
    assert all(status == 200 for status, _ in seen.values()), {
        path: status for path, (status, _) in seen.items()
    }
    assert b"alice-bob@test" in seen["/api/v1/calls/{id}"][1]
    assert seen["/api/v1/recordings/{id}/audio"][1].startswith(b"RIFF")
    assert b"Carol Cole" in seen["/api/v1/users/{extension}"][1]


async def test_a_user_logs_in_to_their_own_organisation(orgs: Orgs) -> None:
    """Extension 201 exists in both organisations: the domain (or slug) says which."""
    fixture = orgs.fixture
    for name, password, expected in [
        ("201@beta.example", "bert-password-1", "Bert Beta"),
        ("201@beta", "bert-password-1", "Bert Beta"),
        (f"201@{ORG.slug}", PASSWORDS["201"], "Alice Archer"),
    ]:
        async with new_session() as session:
            await login(session, fixture.url, name, password)
            async with session.get(fixture.url + "/api/v1/users/201") as response:
                assert (await response.json())["name"] == expected
    async with new_session() as session:
        # Bert's password is not Alice's, and a bare extension is ambiguous now.
        for name, password in [
            (f"201@{ORG.slug}", "bert-password-1"),
            ("201", PASSWORDS["201"]),
        ]:
            async with session.get(fixture.url + "/login") as response:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
            assert token is not None
            async with session.post(
                fixture.url + "/login",
                data={"csrf_token": token.group(1), "name": name, "password": password},
                allow_redirects=False,
            ) as response:
                assert response.status == 401, name
