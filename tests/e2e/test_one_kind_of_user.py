"""End-to-end: one kind of user on a real `callrec serve`. An admin adds a user in the
portal, which generates a SIP password and shows it once; a phone REGISTERs with that
password (raw digest, as a phone does) and is accepted. A device added in the portal
gets its own username and password and registers with them. A portal session outlives
a restart of the server (the same cookie works), and logout ends it for good. The CLI
makes the same user (`users add --portal-login`, `devices add --password-file`) and says
so in Dutch."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.message import SipResponse
from testkit.harness import HOST, CallrecServer, make_server
from testkit.sip_register import register as register_udp
from testkit.waiting import port_bound, wait_until

pytestmark = pytest.mark.e2e

ADMIN, ADMIN_PASSWORD = "root", "admin-secret-1"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PASSWORD = re.compile(r"<code data-password>([^<]+)</code>")
_DOMAIN = re.compile(r"<code data-domain>([^<]+)</code>")


class Browser:
    """A cookie-keeping HTTP client of the portal, like a browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, **fields: str) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def login(self, name: str, password: str) -> None:
        _, page = self.get("/login")
        token = _CSRF.search(page)
        assert token is not None
        status, _ = self.post(
            "/login", csrf_token=token.group(1), name=name, password=password, next="/"
        )
        assert status == 200  # the redirect to the home page, followed

    def csrf(self) -> str:
        status, me = self.get("/api/v1/me")
        assert status == 200, me
        token: str = json.loads(me)["csrf_token"]
        return token

    @property
    def session_cookie(self) -> str | None:
        for cookie in self.cookies:
            if cookie.name == "callrec_session":
                return cookie.value
        return None


def portal_up(server: CallrecServer) -> None:
    """Wait for the portal: the harness waits for SIP, which may answer first."""
    wait_until(
        lambda: port_bound(server.portal_port, "tcp"), timeout=15, what="the portal listening"
    )


def register(server: CallrecServer, username: str, password: str, domain: str) -> SipResponse:
    """REGISTER `username`@`domain` from a fresh UDP port, answering the digest
    challenge with `password`; the final response."""
    return register_udp(server.sip_port, username, password, domain).response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.cli("admin", "add", ADMIN, "--password", ADMIN_PASSWORD)
    srv.start()
    try:
        portal_up(srv)
        yield srv
    finally:
        srv.stop()


def test_portal_user_and_device_register_with_generated_passwords(
    server: CallrecServer,
) -> None:
    browser = Browser(server.portal_url)
    browser.login(ADMIN, ADMIN_PASSWORD)
    status, page = browser.post(
        "/users", csrf_token=browser.csrf(), extension="401", name="Gina Groen"
    )
    assert status == 201, page
    password, domain = _PASSWORD.search(page), _DOMAIN.search(page)
    assert password is not None and domain is not None
    # The phone's REGISTER with the password the portal showed is accepted...
    assert register(server, "401", password.group(1), domain.group(1)).status == 200
    # ... and a wrong one is not.
    assert register(server, "401", password.group(1) + "x", domain.group(1)).status != 200
    users = json.loads(server.cli("users", "list", "--json").stdout)
    [gina] = [user for user in users if user["extension"] == "401"]
    assert gina["recording_mode"] == "on-demand" and gina["has_password"]

    status, page = browser.post(
        "/users/401/devices", csrf_token=browser.csrf(), username="gina-dect"
    )
    assert status == 201, page
    device_password = _PASSWORD.search(page)
    assert device_password is not None and device_password.group(1) != password.group(1)
    assert register(server, "gina-dect", device_password.group(1), domain.group(1)).status == 200
    # The device's own password is not the user's.
    assert register(server, "gina-dect", password.group(1), domain.group(1)).status != 200


def test_a_session_survives_a_restart_and_logout_ends_it(server: CallrecServer) -> None:
    browser = Browser(server.portal_url)
    browser.login(ADMIN, ADMIN_PASSWORD)
    cookie = browser.session_cookie
    assert cookie is not None
    csrf = browser.csrf()
    server.stop()
    server.start()
    portal_up(server)
    # The same cookie, after the restart: still logged in, with the same CSRF token.
    assert browser.csrf() == csrf
    assert browser.get("/users")[0] == 200
    # The store holds the token's hash, never the token.
    stored = b"".join(p.read_bytes() for p in server.data_dir.glob("callrec.db*"))
    assert cookie.encode() not in stored
    assert browser.post("/logout", csrf_token=csrf)[0] == 200
    # Replayed after logout, the cookie names nobody, restart or not.
    stale = Browser(server.portal_url)
    stale.cookies.set_cookie(_cookie(cookie))
    assert stale.get("/api/v1/me")[0] == 401


def _cookie(value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(
        0, "callrec_session", value, None, False, HOST, False, False, "/", True, False,
        None, True, None, None, {},
    )  # fmt: skip


def test_cli_makes_the_same_user_and_speaks_dutch(server: CallrecServer, tmp_path: Path) -> None:
    sip_file, portal_file, device_file = (tmp_path / name for name in ("sip", "portal", "dev"))
    sip_file.write_text("hans-sip-secret\n")
    portal_file.write_text("hans-portal-1\n")
    device_file.write_text("hans-desk-secret\n")
    added = server.cli(
        "users", "add", "402", "--name", "Hans Hout", "--password-file", str(sip_file),
        "--portal-login", "--portal-password-file", str(portal_file), "--lang", "nl",
    )  # fmt: skip
    assert "gebruiker 402 (Hans Hout) toegevoegd, modus on-demand" in added.stdout
    device = server.cli(
        "devices", "add", "402", "hans-desk", "--password-file", str(device_file), "--lang", "nl"
    )
    assert "toestel" in device.stdout and "SIP-gebruikersnaam hans-desk" in device.stdout
    [domain] = {u["realm"] for u in json.loads(server.cli("users", "list", "--json").stdout)}
    assert register(server, "402", "hans-sip-secret", domain).status == 200
    assert register(server, "hans-desk", "hans-desk-secret", domain).status == 200
    browser = Browser(server.portal_url)
    browser.login("402", "hans-portal-1")
    assert json.loads(browser.get("/api/v1/me")[1])["actor"] == "user:402"
