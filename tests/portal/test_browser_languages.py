"""The portal in real headless Chromium, in Dutch and in English.

A Dutch browser (Accept-Language nl) gets the Dutch login page; an admin switches the
portal to Dutch and to Amsterdam time in the Settings form, works through the pages in
Dutch (the slider's days, a refused field, a notice, a recorded call at its local time,
the player) and switches back to English, which the same pages then speak.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.portal.chromium import chromium_page, requires_chromium
from tests.portal.conftest import ADMIN, Fixture
from tests.storage.orgs import ORG

playwright_api = pytest.importorskip("playwright.async_api")
if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = requires_chromium


@pytest.fixture
async def page(portal: Fixture) -> AsyncIterator[Page]:
    async with chromium_page() as tab:
        yield tab


def _nav(page: Page, name: str) -> object:
    return page.get_by_role("navigation", name="Hoofdmenu").get_by_role("link", name=name)


async def test_the_portal_in_dutch_and_back_in_english(
    portal: Fixture, page: Page, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    await page.set_extra_http_headers({"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.5"})
    await page.goto(f"{portal.url}/reports")
    await expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
    assert await page.locator("html").get_attribute("lang") == "nl"
    await page.get_by_label("Naam of toestelnummer").fill(ADMIN[0])
    await page.get_by_label("Wachtwoord").fill("wrong password")
    await page.get_by_role("button", name="Inloggen").click()
    await expect(page.get_by_role("alert")).to_have_text("Verkeerde naam of wachtwoord.")
    await page.get_by_label("Naam of toestelnummer").fill(ADMIN[0])
    await page.get_by_label("Wachtwoord").fill(ADMIN[1])
    await page.get_by_role("button", name="Inloggen").click()
    # Logged in as an admin: the language in force (English so far).
    await expect(page.get_by_role("heading", name="Reports")).to_be_visible()

    # Switch the portal to Dutch and Amsterdam time in the Settings form.
    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Recording settings")
        .click()
    )
    await page.get_by_label("Language", exact=True).select_option("nl")
    await page.get_by_label("Time zone").fill("Europe/Amsterdam")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.locator("p.notice")).to_have_text("Instellingen opgeslagen.")
    await expect(page.get_by_role("heading", name="Opname-instellingen")).to_be_visible()
    assert await page.locator("html").get_attribute("lang") == "nl"
    assert await portal.store.org_settings(ORG) == {
        "language": "nl",
        "timezone": "Europe/Amsterdam",
    }
    # The slider speaks Dutch too, as it moves.
    slider = page.get_by_label("Bewaartermijn")
    await slider.focus()
    await page.keyboard.press("End")
    await expect(page.locator("#retention-value")).to_have_text("365 dagen")
    await expect(page.get_by_text("30 tot 120 dagen, of 180 of 365.")).to_be_visible()
    # A refused field, marked in Dutch.
    await page.get_by_label("Functiecode").fill("5*")
    await page.get_by_role("button", name="Instellingen opslaan").click()
    await expect(page.get_by_text("de functiecode moet een * zijn gevolgd door")).to_be_visible()
    assert await page.get_by_label("Functiecode").get_attribute("aria-invalid") == "true"
    await page.get_by_label("Functiecode").fill("*1")
    await expect(
        page.get_by_label("Gesproken melding, in de taal die hieronder gekozen is")
    ).to_be_checked()
    await page.screenshot(path=str(tmp_path / "instellingen.png"), full_page=True)

    # Reports: the Alice-Bob call answered at 12:00:03 UTC shows at 14:00:03 in Amsterdam.
    await _nav(page, "Rapporten").click()
    await expect(page.get_by_role("heading", name="Rapporten")).to_be_visible()
    await expect(page.locator("#call-count")).to_have_text(
        "3 gesprekken. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    row = page.locator(f'tr[data-call-id="{portal.calls["alice-bob"]}"]')
    await expect(row).to_contain_text("01-05-2024 14:00:03")
    await expect(row.get_by_role("link", name="Downloaden")).to_be_visible()
    audio = row.get_by_label(f"De opname van gesprek {portal.calls['alice-bob']} afspelen")
    await audio.evaluate("el => el.play()")
    await page.wait_for_function(
        "el => !el.paused && el.currentTime > 0", arg=await audio.element_handle(), timeout=10_000
    )
    await audio.evaluate("el => el.pause()")
    # The date filter reads local days.
    await page.get_by_label("Van", exact=True).fill("2024-05-02")
    await page.get_by_label("Tot en met", exact=True).fill("2024-05-02")
    await page.get_by_role("button", name="Filteren").click()
    await expect(page.locator("#call-count")).to_contain_text("1 gesprek.")
    await page.screenshot(path=str(tmp_path / "rapporten.png"), full_page=True)

    await _nav(page, "Gebruikers").click()
    await expect(page.get_by_role("heading", name="Gebruikers")).to_be_visible()
    await page.get_by_label("Toestelnummer").fill("204")
    await page.get_by_label("Naam", exact=True).fill("Dirk de Vries")
    await page.get_by_role("button", name="Gebruiker toevoegen").click()
    await expect(page.locator("p.notice")).to_have_text("Dirk de Vries (204) is toegevoegd.")

    await _nav(page, "Bulkdownload").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "Bulkdownload vraagt een bewaartermijn van 180 dagen of meer; die is nu 90 dagen."
    )
    await _nav(page, "Logboek").click()
    await expect(
        page.get_by_role("columnheader", name="Wanneer (Europe/Amsterdam)")
    ).to_be_visible()

    # And back to English through the Dutch form.
    await _nav(page, "Opname-instellingen").click()
    await page.get_by_label("Taal", exact=True).select_option("en")
    await page.get_by_role("button", name="Instellingen opslaan").click()
    await expect(page.locator("p.notice")).to_have_text("Settings saved.")
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    await expect(page.locator("#call-count")).to_have_text(
        "3 calls. Times are Europe/Amsterdam time."
    )
    await expect(row).to_contain_text("2024-05-01 14:00:03")
    assert await page.locator("html").get_attribute("lang") == "en"
