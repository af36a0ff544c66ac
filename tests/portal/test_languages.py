"""The portal in Dutch and in English, in local time, on a real server (tests/portal/conftest).

Which language a page speaks: the browser's Accept-Language before login; after it, a
user's own language over the language in force (the stored setting over the config's).
Times are shown, filtered and put in file names in the zone in force, across the 2026
changes of Europe/Amsterdam (29 March, 25 October).
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from tests.portal.conftest import Client, Fixture, add_recorded_call, new_session
from tests.storage.orgs import ORG

AMSTERDAM = "Europe/Amsterdam"


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


async def page(client: Client | aiohttp.ClientSession, url: str, **headers: str) -> str:
    session = client.session if isinstance(client, Client) else client
    async with session.get(url, headers=headers) as response:
        assert response.status < 500
        return await response.text()


async def test_the_login_page_speaks_the_browsers_language(portal: Fixture) -> None:
    async with new_session() as session:
        async with session.get(
            f"{portal.url}/login", headers={"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.8"}
        ) as response:
            dutch = await response.text()
            assert response.headers["Content-Language"] == "nl"
        assert '<html lang="nl">' in dutch
        assert "<h1>Inloggen</h1>" in dutch and "Naam of toestelnummer" in dutch
        english = await page(session, f"{portal.url}/login", **{"Accept-Language": "en-GB"})
        assert "<h1>Log in</h1>" in english and '<html lang="en">' in english
        # A language callrec does not speak: the language in force (English here).
        french = await page(session, f"{portal.url}/login", **{"Accept-Language": "fr-FR"})
        assert "<h1>Log in</h1>" in french
        # A wrong password is answered in the browser's language.
        token = french.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        async with session.post(
            f"{portal.url}/login",
            data={"csrf_token": token, "name": "root", "password": "wrong", "next": "/"},
            headers={"Accept-Language": "nl"},
        ) as response:
            assert response.status == 401
            assert "Verkeerde naam of wachtwoord." in await response.text()
    await portal.store.set_org_setting(ORG, "language", "nl")
    async with new_session() as session:
        # No preference sent: the language in force.
        assert "<h1>Inloggen</h1>" in await page(session, f"{portal.url}/login")
        # The browser's preference still wins before anyone has logged in.
        english = await page(session, f"{portal.url}/login", **{"Accept-Language": "en"})
        assert "<h1>Log in</h1>" in english


async def test_the_portal_in_dutch_after_an_admin_chooses_it(
    portal: Fixture, admin: Client
) -> None:
    settings = await page(admin, f"{portal.url}/settings")
    token = settings.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {
        "csrf_token": token,
        "feature_code": "*1",
        "retention_position": "60",
        "retention_current": "90",
        "announcement": "default",
        "channels": "mono",
        "language": "nl",
        "timezone": "UTC",
    }
    async with admin.session.post(f"{portal.url}/settings", data=form) as response:
        saved = await response.text()
    # The notice is shown after the change, so in the new language.
    assert "Instellingen opgeslagen." in saved and "<h1>Opname-instellingen</h1>" in saved
    assert await portal.store.org_settings(ORG) == {"language": "nl"}
    audit = await portal.store.list_audit(ORG, 5)
    assert audit[0].action == "settings.change" and audit[0].detail == '{"language": "nl"}'

    # A refused field is marked in Dutch.
    form["feature_code"] = "5*"
    async with admin.session.post(f"{portal.url}/settings", data=form) as response:
        assert response.status == 422
        refused = await response.text()
    assert "de functiecode moet een * zijn gevolgd door één cijfer" in refused
    assert "Verbeter de gemarkeerde velden." in refused
    form["feature_code"] = "*1"
    form["timezone"] = "Mars/Olympus"
    async with admin.session.post(f"{portal.url}/settings", data=form) as response:
        assert response.status == 422
        assert "vul een tijdzone in" in await response.text()

    reports = await page(admin, f"{portal.url}/reports")
    assert "<h1>Rapporten</h1>" in reports
    assert "3 gesprekken. Tijden zijn in tijdzone UTC." in reports
    assert "01-05-2024 12:00:03" in reports  # answered at 12:00:03 UTC, Dutch date order
    assert ">Downloaden</a>" in reports and "beheerder" in reports
    users = await page(admin, f"{portal.url}/users")
    assert (
        "<h1>Gebruikers</h1>" in users and "Op verzoek" in users and "Van de organisatie" in users
    )
    bulk = await page(admin, f"{portal.url}/bulk")
    assert "Bulkdownload vraagt een bewaartermijn van 180 dagen of meer" in bulk
    audit_page = await page(admin, f"{portal.url}/audit")
    assert "Wanneer (UTC)" in audit_page and "Pagina 1 van 1" in audit_page
    missing = await page(admin, f"{portal.url}/nowhere")
    assert "<h1>Niet gevonden</h1>" in missing and "Terug naar het portaal" in missing
    # An error raised by an operation shared with the API is translated on the page.
    async with admin.session.post(
        f"{portal.url}/users",
        data={"csrf_token": token, "extension": "201", "name": "Again"},
    ) as response:
        assert response.status == 409
        assert "gebruiker 201 bestaat al" in await response.text()
    # The API stays English for programs.
    async with admin.session.post(
        f"{portal.url}/api/v1/users",
        json={"extension": "201", "name": "Again"},
        headers=admin.headers,
    ) as response:
        assert response.status == 409
        assert (await response.json())["error"] == "user 201 already exists"


async def test_a_user_reads_the_portal_in_their_own_language(
    portal: Fixture, admin: Client, alice: Client, bob: Client
) -> None:
    assert "<h1>Reports</h1>" in await page(alice, f"{portal.url}/reports")
    async with alice.session.put(
        f"{portal.url}/api/v1/users/201/language", json={"language": "nl"}, headers=alice.headers
    ) as response:
        assert response.status == 200
        assert (await response.json())["language"] == "nl"
    assert "<h1>Rapporten</h1>" in await page(alice, f"{portal.url}/reports")
    assert "<h1>Reports</h1>" in await page(bob, f"{portal.url}/reports")
    assert "<h1>Recording settings</h1>" in await page(admin, f"{portal.url}/settings")
    # A user cannot set someone else's; a language callrec does not speak is refused.
    async with bob.session.put(
        f"{portal.url}/api/v1/users/201/language", json={"language": "en"}, headers=bob.headers
    ) as response:
        assert response.status == 404
    async with alice.session.put(
        f"{portal.url}/api/v1/users/201/language", json={"language": "fr"}, headers=alice.headers
    ) as response:
        assert response.status == 422 and (await response.json())["field"] == "language"

    # The admin sets Bob's on the Users page, then puts Alice back on the organisation's.
    users = await page(admin, f"{portal.url}/users")
    token = users.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    for extension, language in (("202", "nl"), ("201", "")):
        async with admin.session.post(
            f"{portal.url}/users/{extension}/language",
            data={"csrf_token": token, "language": language},
        ) as response:
            assert response.status == 200
            assert f"({extension}) language." in await response.text()
    assert "<h1>Rapporten</h1>" in await page(bob, f"{portal.url}/reports")
    assert "<h1>Reports</h1>" in await page(alice, f"{portal.url}/reports")
    bob_user = await portal.store.get_user(ORG, "202")
    alice_user = await portal.store.get_user(ORG, "201")
    assert bob_user is not None and bob_user.language == "nl"
    assert alice_user is not None and alice_user.language is None
    actions = [entry.action for entry in await portal.store.list_audit(ORG, 10)]
    assert actions.count("language.change") == 3


async def test_times_dates_and_names_are_local_across_the_clock_changes(
    portal: Fixture, admin: Client
) -> None:
    await portal.store.set_org_setting(ORG, "timezone", AMSTERDAM)
    # 19:08 in Amsterdam on the day summer time starts (17:08 UTC).
    summer = await add_recorded_call(
        portal,
        "summer",
        caller=("201", "Alice Archer"),
        callee=("202", "Bob Baker"),
        owner="201",
        started_at=utc(2026, 3, 29, 17, 8, 0) - 3.0,
    )
    # 23:30 in Amsterdam on the day winter time returns (22:30 UTC): still 25 October.
    await add_recorded_call(
        portal,
        "late",
        caller=("202", "Bob Baker"),
        callee=("201", "Alice Archer"),
        owner="202",
        started_at=utc(2026, 10, 25, 22, 30, 0),
    )
    # 00:30 in Amsterdam on 26 October (23:30 UTC on the 25th): the next day.
    await add_recorded_call(
        portal,
        "after-midnight",
        caller=("203", "Carol Cole"),
        callee=("201", "Alice Archer"),
        owner="203",
        started_at=utc(2026, 10, 25, 23, 30, 0),
    )
    reports = await page(admin, f"{portal.url}/reports?extension=201&from=2026-03-29&to=2026-03-29")
    assert "2026-03-29 19:08:00" in reports  # answered: the recording's start
    assert "Times are Europe/Amsterdam time." in reports
    assert "1 call." in reports

    day = await page(admin, f"{portal.url}/reports?from=2026-10-25&to=2026-10-25")
    assert f'data-call-id="{portal.calls["late"]}"' in day
    assert f'data-call-id="{portal.calls["after-midnight"]}"' not in day
    assert "2026-10-25 23:30:00" in day
    next_day = await page(admin, f"{portal.url}/reports?from=2026-10-26&to=2026-10-26")
    assert f'data-call-id="{portal.calls["after-midnight"]}"' in next_day
    assert "2026-10-26 00:30:00" in next_day
    # The API reads its day filters in the same zone (and answers in UTC ISO-8601).
    async with admin.session.get(
        f"{portal.url}/api/v1/calls", params={"from": "2026-10-25", "to": "2026-10-25"}
    ) as response:
        body = await response.json()
    assert [item["id"] for item in body["items"]] == [portal.calls["late"]]
    assert body["items"][0]["started_at"] == "2026-10-25T22:30:00.000Z"

    # The downloaded file is named in local time.
    async with admin.session.get(f"{portal.url}/api/v1/recordings/{summer}/download") as response:
        assert response.status == 200
        disposition = response.headers["Content-Disposition"]
    assert 'filename="2026-03-29_190800_201-Alice-Archer_to_202-Bob-Baker_' in disposition
    audit = await page(admin, f"{portal.url}/audit")
    assert "When (Europe/Amsterdam)" in audit

    # In Dutch, the same moment in the Dutch order.
    await portal.store.set_org_setting(ORG, "language", "nl")
    dutch = await page(admin, f"{portal.url}/reports?from=2026-03-29&to=2026-03-29")
    assert "29-03-2026 19:08:00" in dutch
