"""Which language a page speaks, checked rule by rule: the login page follows the
browser's Accept-Language (the organisation's language when the browser names none
callrec speaks); once logged in, a user's own language comes first, then the
organisation's, and Accept-Language no longer counts; an admin reads the
organisation's."""

from __future__ import annotations

import aiohttp

from tests.portal.conftest import PASSWORDS, Fixture, login, new_session
from tests.storage.orgs import ORG


async def _lang(session: aiohttp.ClientSession, url: str, accept: str | None) -> str:
    headers = {"Accept-Language": accept} if accept else {}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200
        return response.headers["Content-Language"]


async def test_login_page_follows_the_browser_then_the_organisation(portal: Fixture) -> None:
    await portal.store.set_org_setting(ORG, "language", "nl")
    async with new_session() as session:
        assert await _lang(session, f"{portal.url}/login", "en-GB,en;q=0.8") == "en"
        assert await _lang(session, f"{portal.url}/login", "nl-BE") == "nl"
        assert await _lang(session, f"{portal.url}/login", "de-DE") == "nl"  # the org's
        assert await _lang(session, f"{portal.url}/login", None) == "nl"
    await portal.store.set_org_setting(ORG, "language", "en")
    async with new_session() as session:
        assert await _lang(session, f"{portal.url}/login", "fr") == "en"


async def test_user_over_organisation_over_browser(portal: Fixture) -> None:
    await portal.store.set_org_setting(ORG, "language", "nl")
    await portal.store.set_language(ORG, "201", "en")
    async with new_session() as alice, new_session() as bob:
        await login(alice, portal.url, "201", PASSWORDS["201"])
        await login(bob, portal.url, "202", PASSWORDS["202"])
        # Alice chose English: a Dutch browser and a Dutch organisation do not change it.
        assert await _lang(alice, f"{portal.url}/reports", "nl") == "en"
        # Bob chose nothing: the organisation's Dutch, whatever his browser says.
        assert await _lang(bob, f"{portal.url}/reports", "en") == "nl"
        # Bob's own choice wins from his next page on.
        await portal.store.set_language(ORG, "202", "en")
        assert await _lang(bob, f"{portal.url}/reports", "nl") == "en"
        # Back to the organisation's when he clears it.
        await portal.store.set_language(ORG, "202", None)
        assert await _lang(bob, f"{portal.url}/reports", "en") == "nl"


async def test_admin_reads_the_organisations_language(portal: Fixture) -> None:
    await portal.store.set_org_setting(ORG, "language", "nl")
    async with new_session() as session:
        await login(session, portal.url, "root", "admin-secret-1")
        assert await _lang(session, f"{portal.url}/users", "en") == "nl"
