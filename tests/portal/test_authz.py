"""A user reaches only their own calls and recordings, whatever the route or the id."""

from __future__ import annotations

import pytest
from yarl import URL

from tests.portal.conftest import Client, Fixture, add_recorded_call
from tests.storage.orgs import ORG

API = "/api/v1"

# (who asks, whose recording): Carol was not on the Alice-Bob call, Alice and Bob were not
# on Carol's call to an outside number.
FOREIGN = [("carol", "alice-bob"), ("alice", "carol-out"), ("bob", "carol-out")]
ROUTES = ["", "/audio", "/download"]


@pytest.fixture
def clients(alice: Client, bob: Client, carol: Client) -> dict[str, Client]:
    return {"alice": alice, "bob": bob, "carol": carol}


async def _get(client: Client, url: str, **kwargs: object) -> tuple[int, bytes]:
    async with client.session.get(URL(url, encoded=True), **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


@pytest.mark.parametrize(("who", "whose"), FOREIGN)
@pytest.mark.parametrize("route", ROUTES)
async def test_foreign_recording_by_id(
    portal: Fixture, clients: dict[str, Client], who: str, whose: str, route: str
) -> None:
    recording_id = portal.recordings[whose]
    url = f"{portal.url}{API}/recordings/{recording_id}{route}"
    for range_header in (None, "bytes=0-", "bytes=44-99"):
        headers = {"Range": range_header} if range_header else {}
        status, body = await _get(clients[who], url, headers=headers)
        assert status == 404
        assert b"RIFF" not in body and portal.sha256[recording_id].encode() not in body
    async with clients[who].session.head(url) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("who", "own"), [("alice", "alice-bob"), ("bob", "alice-bob"), ("carol", "carol-out")]
)
@pytest.mark.parametrize("route", ROUTES)
async def test_own_recording_is_reachable(
    portal: Fixture, clients: dict[str, Client], who: str, own: str, route: str
) -> None:
    """The control: the same routes work for a party to the call."""
    status, body = await _get(
        clients[who], f"{portal.url}{API}/recordings/{portal.recordings[own]}{route}"
    )
    assert status == 200
    if route:
        assert body.startswith(b"RIFF")


@pytest.mark.parametrize(("who", "whose"), FOREIGN)
async def test_foreign_call_by_id(
    portal: Fixture, clients: dict[str, Client], who: str, whose: str
) -> None:
    status, _ = await _get(clients[who], f"{portal.url}{API}/calls/{portal.calls[whose]}")
    assert status == 404


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?extension=201",
        "?extension=202",
        "?extension=203",
        "?recorded_only=true",
        "?from=2024-01-01&to=2024-12-31",
        "?page_size=200",
        "?page=2&page_size=1",
    ],
)
@pytest.mark.parametrize("listing", ["/calls", "/recordings"])
async def test_lists_never_show_foreign_rows(
    portal: Fixture, clients: dict[str, Client], query: str, listing: str
) -> None:
    for who, whose in FOREIGN:
        async with clients[who].session.get(f"{portal.url}{API}{listing}{query}") as response:
            assert response.status == 200
            page = await response.json()
        if listing == "/calls":
            ids = {call["id"] for call in page["items"]}
            recording_ids = {r["id"] for call in page["items"] for r in call["recordings"]}
            assert portal.calls[whose] not in ids, (who, query)
        else:
            recording_ids = {r["id"] for r in page["items"]}
        assert portal.recordings[whose] not in recording_ids, (who, query)


async def test_list_totals_are_scoped(portal: Fixture, clients: dict[str, Client]) -> None:
    async with clients["carol"].session.get(f"{portal.url}{API}/calls") as response:
        page = await response.json()
    # Carol's own call out and Bob's call to her; not Alice-Bob.
    assert page["total"] == 2
    assert {c["id"] for c in page["items"]} == {
        portal.calls["carol-out"],
        portal.calls["bob-carol"],
    }


@pytest.mark.parametrize(
    "tampered",
    [
        "{id}.0",
        "0{id}",
        "+{id}",
        "-{id}",
        "{id}%20",
        "%20{id}",
        "{id};x=1",
        "{id}%00",
        "0x{id}",
        "{id}e0",
        "%31",  # "1" percent-encoded is the same id: must still be scoped
        "{id}/../{id}",
        "{other}/..%2F{id}",
        "99999999999999999999999999",
        "-1",
        "0",
    ],
)
async def test_tampered_ids(portal: Fixture, clients: dict[str, Client], tampered: str) -> None:
    foreign = portal.recordings["alice-bob"]
    own = portal.recordings["carol-out"]
    text = tampered.format(id=foreign, other=own)
    for route in ROUTES:
        status, body = await _get(clients["carol"], f"{portal.url}{API}/recordings/{text}{route}")
        assert status in (400, 404), (text, route)
        assert b"RIFF" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/recordings/..%2F..%2Fcallrec.db/audio",
        "/recordings/%2e%2e/%2e%2e/callrec.db",
        "/recordings/1/..%2F..%2F..%2Fcallrec.db",
        "/recordings/1/audio/..%2F..%2Fcallrec.db",
        "/recordings/..\\..\\callrec.db/download",
        "/../../callrec.db",
        "/recordings/%252e%252e%252fcallrec.db/audio",
    ],
)
async def test_path_traversal_in_urls(
    portal: Fixture, clients: dict[str, Client], admin: Client, path: str
) -> None:
    for client in (clients["carol"], admin):
        status, body = await _get(client, f"{portal.url}{API}{path}")
        assert status in (400, 404, 405), path
        assert b"SQLite format" not in body and b"RIFF" not in body


@pytest.mark.parametrize(
    "stored_path",
    ["../callrec.db", "../../../../etc/passwd", "/etc/passwd", "recordings/../callrec.db"],
)
async def test_stored_paths_outside_the_storage_dir_are_refused(
    portal: Fixture, admin: Client, stored_path: str
) -> None:
    """Even an admin gets nothing outside the storage folder if a row was tampered."""
    recording_id = await add_recorded_call(
        portal,
        "evil",
        caller=("201", "Alice"),
        callee=("202", "Bob"),
        owner="201",
        started_at=1714564800.0,
    )
    async with portal.store.database.transaction() as session:
        await session.execute(
            "UPDATE recordings SET path = ? WHERE id = ?", (stored_path, recording_id)
        )
    for route in ("/audio", "/download"):
        status, body = await _get(admin, f"{portal.url}{API}/recordings/{recording_id}{route}")
        assert status == 404
        assert b"SQLite format" not in body and b"root:" not in body


async def test_users_see_only_their_own_profile(
    portal: Fixture, clients: dict[str, Client]
) -> None:
    carol = clients["carol"]
    async with carol.session.get(f"{portal.url}{API}/users") as response:
        assert [u["extension"] for u in (await response.json())["items"]] == ["203"]
    for path in ("/users/201", "/users/201/devices", "/users/202"):
        status, _ = await _get(carol, f"{portal.url}{API}{path}")
        assert status == 404, path
    status, _ = await _get(carol, f"{portal.url}{API}/users/203")
    assert status == 200


@pytest.mark.parametrize("page", ["/settings", "/users", "/bulk", "/audit"])
async def test_admin_pages_refuse_users(
    portal: Fixture, clients: dict[str, Client], page: str
) -> None:
    status, body = await _get(clients["alice"], f"{portal.url}{page}")
    assert status == 403
    assert b"Traceback" not in body


async def test_reports_page_shows_only_own_recordings(
    portal: Fixture, clients: dict[str, Client]
) -> None:
    status, body = await _get(clients["carol"], f"{portal.url}/reports?page_size=200")
    assert status == 200
    html = body.decode()
    assert f"/recordings/{portal.recordings['carol-out']}/audio" in html
    assert f"/recordings/{portal.recordings['alice-bob']}/" not in html
    assert "Alice Archer" not in html


async def test_user_forms_cannot_change_modes(portal: Fixture, clients: dict[str, Client]) -> None:
    alice = clients["alice"]
    async with alice.session.post(
        f"{portal.url}/users/203/mode",
        data={"csrf_token": alice.csrf, "mode": "always"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and user.recording_mode == "never"
