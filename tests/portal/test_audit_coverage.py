"""Every change made through the portal or the REST API lands in the audit log.

The test walks the router: every route that is not a GET must be in CHANGES (a call
that changes something, and the audit action it must leave, in the right log with the
caller as actor) or in NOT_CHANGES (with the reason). A new change route without an
entry fails here, so it cannot ship unaudited. No entry's detail may hold a password."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from storage.models import OrgScope
from tests.portal.conftest import ADMIN, Client, Fixture, login, new_session
from tests.storage.orgs import ORG

API = "/api/v1"
OPERATOR = ("ops", "ops-password-1")
SECRETS = ("sip-secret-9", "portal-secret-9", "device-secret-9", "admin-secret-2")


@dataclass(frozen=True)
class Change:
    """Call `path` with `method` and a body; expect `action` in the admin's organisation
    log (`platform`: the operators' log)."""

    action: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    platform: bool = False
    query: dict[str, str] | None = None


# (method, route as the router names it) -> the change it makes. Paths are filled
# from FILL; they run in this order (the device and the token exist when used).
CHANGES: dict[tuple[str, str], Change] = {
    ("POST", f"{API}/users"): Change(
        "user.add", json={"extension": "230", "name": "Api User", "password": "sip-secret-9"}
    ),
    ("PATCH", f"{API}/users/{{extension}}"): Change("user.change", json={"name": "Api User 2"}),
    ("PUT", f"{API}/users/{{extension}}/password"): Change(
        "password.set", json={"generate_password": True}
    ),
    ("PUT", f"{API}/users/{{extension}}/mode"): Change("mode.change", json={"mode": "always"}),
    ("DELETE", f"{API}/users/{{extension}}/recording"): Change("mode.change"),
    ("PUT", f"{API}/users/{{extension}}/portal-password"): Change(
        "portal_password.set", json={"password": "portal-secret-9"}
    ),
    ("DELETE", f"{API}/users/{{extension}}/portal-password"): Change("portal_password.remove"),
    ("PUT", f"{API}/users/{{extension}}/language"): Change(
        "language.change", json={"language": "nl"}
    ),
    ("POST", f"{API}/users/{{extension}}/devices"): Change(
        "device.add", json={"username": "api-desk", "password": "device-secret-9"}
    ),
    ("PUT", f"{API}/users/{{extension}}/devices/{{id}}/password"): Change(
        "device.password.set", json={"generate_password": True}
    ),
    ("DELETE", f"{API}/users/{{extension}}/devices/{{id}}"): Change("device.remove"),
    ("PUT", f"{API}/settings"): Change("settings.change", json={"feature_code": "*5"}),
    ("PATCH", f"{API}/settings"): Change("settings.change", json={"feature_code": "*6"}),
    ("POST", f"{API}/tokens"): Change("token.create", json={"name": "audit-test"}),
    ("DELETE", f"{API}/tokens/{{id}}"): Change("token.revoke"),
    ("DELETE", f"{API}/users/{{extension}}"): Change("user.remove"),
    ("POST", "/users"): Change(
        "user.add", form={"extension": "231", "name": "Page User", "password": "sip-secret-9"}
    ),
    ("POST", "/users/{extension}"): Change(
        "user.change", form={"name": "Page User 2", "email": "p@example.org"}
    ),
    ("POST", "/users/{extension}/password"): Change("password.set", form={}),
    ("POST", "/users/{extension}/portal-login"): Change(
        "portal_password.set", form={"portal_password": "portal-secret-9"}
    ),
    ("POST", "/users/{extension}/mode"): Change("mode.change", form={"mode": "never"}),
    ("POST", "/users/{extension}/language"): Change("language.change", form={"language": "en"}),
    ("POST", "/users/{extension}/devices"): Change("device.add", form={"username": "page-desk"}),
    ("POST", "/users/{extension}/devices/{id}/password"): Change("device.password.set", form={}),
    ("POST", "/users/{extension}/devices/{id}/remove"): Change("device.remove", form={}),
    ("POST", "/settings/recording-users"): Change("mode.change", form={"extension": "{extension}"}),
    ("POST", "/settings/recording-users/{extension}/mode"): Change(
        "mode.change", form={"mode": "always"}
    ),
    ("POST", "/settings/recording-users/{extension}/remove"): Change(
        "mode.change", form={"confirm": "yes"}
    ),
    ("POST", "/settings"): Change("settings.change", form={"feature_code": "*7"}),
    ("POST", "/users/{extension}/remove"): Change("user.remove", form={"confirm": "yes"}),
    ("POST", f"{API}/orgs"): Change(
        "org.add", json={"slug": "gamma", "name": "Gamma", "domain": "gamma.example"}, platform=True
    ),
    ("PATCH", f"{API}/orgs/{{slug}}"): Change(
        "org.change", json={"name": "Gamma 2"}, platform=True
    ),
    ("POST", f"{API}/orgs/{{slug}}/admins"): Change(
        "admin.add", json={"name": "gadmin", "password": "admin-secret-2"}, platform=True
    ),
    ("POST", f"{API}/orgs/{{slug}}/dids"): Change(
        "did.add", json={"first": "31500100"}, platform=True
    ),
    ("DELETE", f"{API}/orgs/{{slug}}/dids/{{id}}"): Change("did.remove", platform=True),
    ("POST", "/operator"): Change(
        "org.add", form={"slug": "delta", "name": "Delta", "domain": "delta.example"}, platform=True
    ),
    ("POST", "/operator/orgs/{slug}"): Change(
        "org.change", form={"name": "Gamma 3"}, platform=True
    ),
    ("POST", "/operator/language"): Change(
        "language.change", form={"language": "nl"}, platform=True
    ),
    # Last: gamma goes, with its admin and numbers, then delta (_prepare).
    ("DELETE", f"{API}/orgs/{{slug}}"): Change(
        "org.remove", platform=True, query={"confirm": "gamma"}
    ),
    ("POST", "/operator/orgs/{slug}/remove"): Change(
        "org.remove", form={"confirm": "yes"}, platform=True
    ),
}

NOT_CHANGES = {
    ("POST", "/login"): "a login is audited as login / login.failed (tests/portal/test_authz.py)",
    ("POST", "/logout"): "audited as logout; ends a session, changes no data",
    ("POST", f"{API}/exports"): "the export service audits the order (test_export.py)",
    ("POST", "/bulk"): "the export service audits the order (test_export.py)",
    ("POST", "/settings/notice"): "audited as notice.upload by portal.notice.save_notice",
}
_RECORDING_ROUTES = (f"{API}/recordings/{{id}}", f"{API}/recordings/{{id}}/audio")


def _refuses(method: str, path: str) -> bool:
    # Recordings cannot be changed: those routes answer 405 and change nothing.
    return path.startswith(_RECORDING_ROUTES)


def _routes(fixture: Fixture) -> set[tuple[str, str]]:
    found = set()
    for route in fixture.portal.app.router.routes():
        if route.method in ("GET", "HEAD", "*") or route.resource is None:
            continue
        info = route.resource.get_info()
        path = str(info.get("path") or info.get("formatter"))
        if not _refuses(route.method, path):
            found.add((route.method, path))
    return found


def test_every_change_route_is_listed() -> None:
    assert not set(CHANGES) & set(NOT_CHANGES)


async def test_every_change_is_audited(portal: Fixture, admin: Client) -> None:
    missing = _routes(portal) - set(CHANGES) - set(NOT_CHANGES)
    assert not missing, f"change routes with no audit check: {sorted(missing)}"
    await portal.store.add_operator(*OPERATOR)
    async with new_session() as session:
        operator = Client(session, await login(session, portal.url, *OPERATOR))
        ids: dict[str, str] = {"slug": "gamma"}
        for (method, route), change in CHANGES.items():
            client = operator if change.platform else admin
            extension = "231" if route.startswith(("/users", "/settings/")) else "230"
            await _prepare(portal, route, extension, ids)
            path = route.format(extension=extension, **{k: v for k, v in ids.items()})
            org = None if change.platform else ORG
            before = await portal.store.audit_total(org)
            status = await _call(client, portal.url + path, method, change, extension)
            assert status < 400, (method, route, status)
            entries = await portal.store.list_audit(
                org, await portal.store.audit_total(org) - before
            )
            actions = {entry.action for entry in entries}
            assert change.action in actions, (method, route, actions)
            actor = "operator:ops" if change.platform else f"admin:{ADMIN[0]}"
            assert any(e.actor == actor for e in entries), (method, route)
            for entry in entries:
                assert not any(secret in (entry.detail or "") for secret in SECRETS), entry
            if route == f"{API}/tokens":
                tokens = await portal.store.list_api_tokens(ORG)
                ids["id"] = str(tokens[-1].id)


async def _prepare(portal: Fixture, route: str, extension: str, ids: dict[str, str]) -> None:
    """Put the id a route names in `ids`: a device of `extension`, a DID of gamma."""
    if "/devices/{id}" in route:
        devices = await portal.store.list_devices(ORG, extension)
        ids["id"] = str(devices[-1].id)
    elif route == "/operator/orgs/{slug}/remove":
        ids["slug"] = "delta"  # gamma was removed through the API
    elif "/dids/{id}" in route:
        gamma = await portal.store.org_scope("gamma")
        ids["id"] = str((await portal.store.list_dids(OrgScope(gamma.id, gamma.slug)))[-1].id)


async def _call(client: Client, url: str, method: str, change: Change, extension: str) -> int:
    if change.form is not None:
        form = {k: v.format(extension=extension) for k, v in change.form.items()}
        async with client.session.post(
            url, data={"csrf_token": client.csrf, **form}, allow_redirects=False
        ) as response:
            return response.status
    request: Callable[..., Any] = getattr(client.session, method.lower())
    context: Awaitable[aiohttp.ClientResponse] = request(
        url, json=change.json or {}, headers=client.headers, params=change.query
    )
    async with context as response:  # type: ignore[attr-defined]
        return int(response.status)
