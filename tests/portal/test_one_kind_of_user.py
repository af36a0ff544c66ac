"""One kind of user, through the portal's pages and the REST API: the same fields, a
new user on demand, a SIP password generated and shown once (its HA1 is what works,
nothing else is kept), devices with their own username and password, portal logins
given and taken away, and every change in the audit log without a password."""

from __future__ import annotations

import re

import pytest

from storage.accounts import ha1
from tests.portal.conftest import Client, Fixture, login, new_session
from tests.storage.orgs import ORG

API = "/api/v1"
_PASSWORD = re.compile(r"<code data-password>([^<]+)</code>")
_USERNAME = re.compile(r"<code data-username>([^<]+)</code>")


def _stored_text(fixture: Fixture) -> bytes:
    """Every byte of the database file and its WAL (where fresh writes are)."""
    path = fixture.store.path
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def _post_form(client: Client, url: str, **fields: str) -> tuple[int, str]:
    async with client.session.post(
        url, data={"csrf_token": client.csrf, **fields}, allow_redirects=False
    ) as response:
        return response.status, await response.text()


async def _audit(fixture: Fixture) -> list[tuple[str, str, str | None, str | None]]:
    entries = await fixture.store.list_audit(ORG, 200)
    return [(e.actor, e.action, e.object, e.detail) for e in entries]


async def test_portal_user_gets_a_generated_sip_password_shown_once(
    portal: Fixture, admin: Client
) -> None:
    status, page = await _post_form(
        admin, f"{portal.url}/users", extension="210", name="Dora Dekker", email="d@example.org"
    )
    assert status == 201, page
    match = _PASSWORD.search(page)
    assert match is not None, page
    password = match.group(1)
    assert len(password) == 16
    user = await portal.store.get_user(ORG, "210")
    assert user is not None
    # On demand, like every new user; the SIP credentials are this password's HA1.
    assert user.recording_mode == "on-demand"
    assert user.ha1_md5 == ha1("210", user.realm, password)
    assert not user.portal_login
    # Shown once: not on the users page, not on the user's page, not in the store.
    for url in (f"{portal.url}/users", f"{portal.url}/users/210"):
        async with admin.session.get(url) as response:
            assert password not in await response.text()
    assert password.encode() not in _stored_text(portal)
    actions = await _audit(portal)
    assert ("admin:root", "user.add", "user:210", "mode on-demand, sip password generated") in (
        actions
    )
    assert all(password not in (detail or "") for *_, detail in actions)


async def test_portal_user_with_typed_password_and_portal_login(
    portal: Fixture, admin: Client
) -> None:
    status, _ = await _post_form(
        admin,
        f"{portal.url}/users",
        extension="211",
        name="Eli Evers",
        mode="always",
        password="typed-sip-secret",
        portal_password="portal-secret-9",
    )
    assert status == 303
    user = await portal.store.get_user(ORG, "211")
    assert user is not None and user.portal_login and user.recording_mode == "always"
    assert user.ha1_md5 == ha1("211", user.realm, "typed-sip-secret")
    async with new_session() as session:
        await login(session, portal.url, "211", "portal-secret-9")
        async with session.get(f"{portal.url}{API}/me") as response:
            assert (await response.json())["actor"] == "user:211"


async def test_devices_get_their_own_username_and_password(portal: Fixture, admin: Client) -> None:
    status, page = await _post_form(admin, f"{portal.url}/users/201/devices", username="alice-desk")
    assert status == 201, page
    username, password = _USERNAME.search(page), _PASSWORD.search(page)
    assert username is not None and password is not None
    assert username.group(1) == "alice-desk"
    credentials = await portal.store.find_credentials(ORG, "alice-desk")
    assert credentials is not None and credentials.user.extension == "201"
    assert credentials.ha1_md5 == ha1("alice-desk", credentials.realm, password.group(1))
    # A new password for the device replaces the old one; removing it ends its sign-in.
    [device] = await portal.store.list_devices(ORG, "201")
    status, page = await _post_form(admin, f"{portal.url}/users/201/devices/{device.id}/password")
    renewed = _PASSWORD.search(page)
    assert status == 200 and renewed is not None and renewed.group(1) != password.group(1)
    credentials = await portal.store.find_credentials(ORG, "alice-desk")
    assert credentials is not None
    assert credentials.ha1_md5 == ha1("alice-desk", credentials.realm, renewed.group(1))
    status, _ = await _post_form(admin, f"{portal.url}/users/201/devices/{device.id}/remove")
    assert status == 303
    assert await portal.store.find_credentials(ORG, "alice-desk") is None
    actions = [a[1] for a in await _audit(portal)]
    assert {"device.add", "device.password.set", "device.remove"} <= set(actions)


async def test_edit_page_changes_the_same_fields(portal: Fixture, admin: Client) -> None:
    status, _ = await _post_form(
        admin, f"{portal.url}/users/203", name="Carol Cole-Smit", email="carol@example.org"
    )
    assert status == 303
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and user.name == "Carol Cole-Smit" and user.email == "carol@example.org"
    status, page = await _post_form(admin, f"{portal.url}/users/203/password")
    match = _PASSWORD.search(page)
    assert status == 200 and match is not None
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and user.ha1_md5 == ha1("203", user.realm, match.group(1))
    # Carol loses her portal login: her open session ends with it.
    async with new_session() as session:
        await login(session, portal.url, "203", "carol-pass-3")
        status, _ = await _post_form(admin, f"{portal.url}/users/203/portal-login", action="remove")
        assert status == 303
        async with session.get(f"{portal.url}{API}/me") as response:
            assert response.status == 401
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and not user.portal_login
    # Removing asks first.
    status, _ = await _post_form(admin, f"{portal.url}/users/203/remove")
    assert status == 422 and await portal.store.get_user(ORG, "203") is not None
    status, _ = await _post_form(admin, f"{portal.url}/users/203/remove", confirm="yes")
    assert status == 303 and await portal.store.get_user(ORG, "203") is None
    actions = [a[1] for a in await _audit(portal)]
    for action in ("user.change", "password.set", "portal_password.remove", "user.remove"):
        assert action in actions


async def test_api_creates_and_edits_the_same_fields(portal: Fixture, admin: Client) -> None:
    body = {
        "extension": "220",
        "name": "Fay Fox",
        "generate_password": True,
        "portal_password": "fay-portal-1",
        "devices": ["fay-mobile"],
    }
    async with admin.session.post(
        f"{portal.url}{API}/users", json=body, headers=admin.headers
    ) as response:
        assert response.status == 201
        created = await response.json()
    assert created["recording_mode"] == "on-demand"
    assert created["portal_login"] is True and created["has_password"] is True
    password = created["password"]
    assert created["devices"][0]["username"] == "fay-mobile"
    user = await portal.store.get_user(ORG, "220")
    assert user is not None and user.ha1_md5 == ha1("220", user.realm, password)
    async with admin.session.get(f"{portal.url}{API}/users/220") as response:
        assert "password" not in await response.json()
    async with admin.session.patch(
        f"{portal.url}{API}/users/220", json={"email": "fay@example.org"}, headers=admin.headers
    ) as response:
        assert response.status == 200
        assert (await response.json())["email"] == "fay@example.org"
    async with admin.session.post(
        f"{portal.url}{API}/users/220/devices",
        json={"username": "fay-desk", "password": "desk-secret-1"},
        headers=admin.headers,
    ) as response:
        assert response.status == 201
        device = await response.json()
        assert "password" not in device  # not generated: not echoed
    credentials = await portal.store.find_credentials(ORG, "fay-desk")
    assert credentials is not None
    assert credentials.ha1_md5 == ha1("fay-desk", credentials.realm, "desk-secret-1")
    async with admin.session.put(
        f"{portal.url}{API}/users/220/devices/{device['id']}/password",
        json={"generate_password": True},
        headers=admin.headers,
    ) as response:
        assert response.status == 200
        assert len((await response.json())["password"]) == 16
    async with admin.session.delete(
        f"{portal.url}{API}/users/220/portal-password", headers=admin.headers
    ) as response:
        assert response.status == 204
    async with admin.session.delete(
        f"{portal.url}{API}/users/220", headers=admin.headers
    ) as response:
        assert response.status == 204
    actions = [(a[0], a[1]) for a in await _audit(portal)]
    for action in (
        "user.add",
        "user.change",
        "device.add",
        "device.password.set",
        "portal_password.remove",
        "user.remove",
    ):
        assert ("admin:root", action) in actions
    for *_, detail in await _audit(portal):
        assert password not in (detail or "") and "desk-secret-1" not in (detail or "")


@pytest.mark.parametrize(
    "body",
    [
        {"extension": "230", "name": "X", "password": "a", "generate_password": True},
        {"extension": "230", "name": "X", "generate_password": "yes"},
        {"extension": "230", "name": "X", "portal_password": "short"},
    ],
)
async def test_api_refuses_contradictions(portal: Fixture, admin: Client, body: dict) -> None:
    async with admin.session.post(
        f"{portal.url}{API}/users", json=body, headers=admin.headers
    ) as response:
        assert response.status == 422
    assert await portal.store.get_user(ORG, "230") is None


async def test_no_password_column_in_clear(portal: Fixture) -> None:
    # The schema has no column that could hold a SIP, device or portal password in
    # clear: HA1 values and argon2 hashes only.
    async with portal.store.database.read() as session:
        columns = {
            str(row[1])
            for table in ("users", "devices", "portal_sessions")
            for row in await session.all(f"PRAGMA table_info({table})")
        }
    assert "ha1_md5" in columns and "portal_password_hash" in columns
    assert {c for c in columns if "password" in c} == {"portal_password_hash"}
