"""Open redirect after the portal login, against a real `callrec serve`.

`/login?next=...` must only ever send a browser to a path of this portal. Before the
fix, `next=%2F%09%2Fevil.example%2F` passed the "starts with one slash" check and the
login answered `Location: /\t/evil.example/`, which a browser reads as
`//evil.example/` (it drops tab, CR and LF from URLs). Each variant here goes through
both doors: the login page's hidden `next` field (GET) and the posted form (POST, as a
tampered form would send it); the answer must stay on the portal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import pytest
from yarl import URL

from testkit.harness import CallrecServer, make_server

pytestmark = pytest.mark.e2e

ADMIN = ("root", "admin-secret-1")
LANDING = "/settings"  # where an admin lands when `next` is "/" or refused
_HIDDEN = re.compile(r'name="(csrf_token|next)" value="([^"]*)"')

# `next` as it appears, percent-encoded, in the query string of the login URL.
HOSTILE = [
    "%2F%09%2Fevil.example%2F",
    "%2F%0A%2Fevil.example%2F",
    "%2F%0D%2Fevil.example%2F",
    "%2F%0D%0A%2Fevil.example%2F",
    "%2F%2Fevil.example%2F",
    "%2F%5Cevil.example%2F",
    "%2F%5C%5Cevil.example%2F",
    "%5C%5Cevil.example%2F",
    "https%3A%2F%2Fevil.example%2F",
    "HTTPS%3A%2F%2Fevil.example",
    "javascript%3Aalert(document.cookie)",
    "%20%2F%2Fevil.example%2F",
    "%2F%2509%2Fevil.example%2F",  # encoded twice: %09 once decoded
    "%2F%252F%252Fevil.example%2F",
    "%2F%E3%80%80%2Fevil.example%2F",  # U+3000 ideographic space
    "%2F%00%2Fevil.example%2F",
    "evil.example",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))
    srv.cli("admin", "add", ADMIN[0], "--password", ADMIN[1])
    yield from srv.serving()


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_page(
    client: aiohttp.ClientSession, server: CallrecServer, raw_next: str
) -> dict[str, str]:
    """GET /login?next=RAW (sent exactly as written); the form's hidden fields."""
    url = URL(f"{server.portal_url}/login?next={raw_next}", encoded=True)
    async with client.get(url) as response:
        assert response.status == 200
        return dict(_HIDDEN.findall(await response.text()))


async def post_login(
    client: aiohttp.ClientSession, server: CallrecServer, csrf: str, next_value: str
) -> str:
    """POST the login form with `next_value`; the Location of the 303."""
    async with client.post(
        f"{server.portal_url}/login",
        data={"csrf_token": csrf, "name": ADMIN[0], "password": ADMIN[1], "next": next_value},
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]


def assert_stays_on_portal(server: CallrecServer, location: str) -> None:
    assert location in ("/", LANDING), repr(location)
    # What a browser would make of it, after dropping what it drops.
    cleaned = re.sub(r"[\t\r\n]", "", location).replace("\\", "/")
    resolved = urlsplit(urljoin(f"{server.portal_url}/login", cleaned))
    assert resolved.netloc == urlsplit(server.portal_url).netloc


@pytest.mark.parametrize("raw_next", HOSTILE)
async def test_hostile_next_never_leaves_the_portal(server: CallrecServer, raw_next: str) -> None:
    async with session() as client:
        fields = await login_page(client, server, raw_next)
        assert fields["next"] == "/", fields
        location = await post_login(client, server, fields["csrf_token"], fields["next"])
        assert_stays_on_portal(server, location)
    # A form tampered with after the page: the POST checks again.
    async with session() as client:
        fields = await login_page(client, server, "%2F")
        location = await post_login(client, server, fields["csrf_token"], unquote(raw_next))
        assert_stays_on_portal(server, location)


@pytest.mark.parametrize(
    ("raw_next", "expected"),
    [
        ("%2Freports", "/reports"),
        ("%2Freports%3Fpage%3D2", "/reports?page=2"),
        ("%2Freports%3Fq%3DAlice%2520Martin", "/reports?q=Alice%20Martin"),
    ],
)
async def test_a_path_of_the_portal_still_works(
    server: CallrecServer, raw_next: str, expected: str
) -> None:
    async with session() as client:
        fields = await login_page(client, server, raw_next)
        assert fields["next"] == expected
        location = await post_login(client, server, fields["csrf_token"], fields["next"])
        assert location == expected
        async with client.get(f"{server.portal_url}{location}") as response:
            assert response.status == 200
