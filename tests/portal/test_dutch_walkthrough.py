"""The manuals' flow, in Dutch, in real headless Chromium: the admin of a Dutch
organisation (ZPEAK "Gespreksopname", Simmpl/Callvoip "Call Recording") logs in, puts a
user on recording on demand, raises the retention and turns bulk download on under the
recording settings, finds the "Bulkdownload" button on Rapporten, finds a call by part
of the caller's number and plays it. Every page speaks Dutch, and times are Amsterdam's,
on both sides of a DST change. The labels are the catalogue's (portal/locale/nl), which
say "Op verzoek", "Opname-instellingen" and "Rapporten" where the manuals say "Op
aanvraag", "Instellingen" and "Rapportages"."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from storage.models import OrgScope
from tests.portal.chromium import chromium_page, requires_chromium
from tests.portal.conftest import Fixture, write_wav

playwright_api = pytest.importorskip("playwright.async_api")
if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = requires_chromium

ADMIN = ("bram", "bram-password-1")
# 2024-07-15 17:08:00 UTC: 19:08 in Amsterdam (summer time, UTC+2).
SUMMER = 1721063280.0
# 2024-01-10 09:00:00 UTC: 10:00 in Amsterdam (winter time, UTC+1).
WINTER = 1704877200.0
# English the pages must not show once the organisation speaks Dutch.
ENGLISH = (
    "Recording settings", "Reports", "Users", "Audit", "Log out", "Save", "Filter",
    "Download", "Times are", "calls", "On demand", "Bulk download", "Retention",
)  # fmt: skip


@dataclass(frozen=True)
class Bakery:
    scope: OrgScope
    summer_call: int
    winter_call: int


async def _recorded_call(
    portal: Fixture, org: OrgScope, key: str, caller: str, callee_user: str, at: float
) -> int:
    """A call from the outside number `caller` to a user, answered 4 s in, recorded."""
    store = portal.store
    user = await store.get_user(org, callee_user)
    assert user is not None
    call_id = await store.create_call(
        org.id, callee_user_id=user.id, sip_call_id=f"{key}@nl", direction="inbound",
        caller_ext=caller, caller_name=None, callee_ext=user.extension, callee_name=user.name,
        started_at=at, answered_at=at + 4, ended_at=at + 64, disposition="answered",
    )  # fmt: skip
    relative = f"recordings/nl/{key}.wav"
    digest = write_wav(portal.storage_dir / relative, 3.0, 440.0)
    recording_id = await store.create_recording(
        call_id=call_id, path=relative, format="wav", channels=1, sample_rate=8000,
        started_at=at + 4, retention_days=365, owner_ext=user.extension,
    )  # fmt: skip
    await store.finish_recording(
        recording_id, status="complete", ended_at=at + 7, duration_s=3.0,
        segments=[(0.0, 3.0)], sha256=digest,
        size=(portal.storage_dir / relative).stat().st_size,
    )  # fmt: skip
    return call_id


@pytest.fixture
async def bakery(portal: Fixture) -> Bakery:
    store = portal.store
    org = await store.add_organisation(
        "bakkerij", "Bakkerij Jansen", "bakkerij.example",
        language="nl", timezone="Europe/Amsterdam",
    )  # fmt: skip
    scope = org.scope
    await store.add_admin(scope, *ADMIN)
    await store.add_user(scope, "201", "Sanne Jansen", mode="always")
    await store.add_user(scope, "202", "Pieter Bakker", mode="never")
    summer = await _recorded_call(portal, scope, "summer", "0612345678", "201", SUMMER)
    winter = await _recorded_call(portal, scope, "winter", "0207654321", "201", WINTER)
    return Bakery(scope, summer, winter)


@pytest.fixture
async def page(portal: Fixture) -> AsyncIterator[Page]:
    async with chromium_page() as tab:
        yield tab


async def _speaks_dutch(page: Page) -> None:
    assert await page.locator("html").get_attribute("lang") == "nl"
    text = await page.locator("body").inner_text()
    english = [phrase for phrase in ENGLISH if re.search(rf"\b{re.escape(phrase)}\b", text)]
    assert not english, f"{page.url} shows English: {english}"


async def test_a_dutch_admin_follows_the_manual(
    portal: Fixture, bakery: Bakery, page: Page
) -> None:
    expect = playwright_api.expect
    menu = page.get_by_role("navigation", name="Hoofdmenu")
    await page.set_extra_http_headers({"Accept-Language": "nl-NL,nl;q=0.9"})

    # Log in (two organisations on the platform: the browser's language before login).
    await page.goto(f"{portal.url}/login")
    await expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
    await page.get_by_label("Naam of toestelnummer").fill(ADMIN[0])
    await page.get_by_label("Wachtwoord").fill(ADMIN[1])
    await page.get_by_role("button", name="Inloggen").click()
    await expect(page.get_by_role("heading", name="Opname-instellingen")).to_be_visible()
    await _speaks_dutch(page)

    # Gebruikers: Pieter is recorded on demand from now on.
    await menu.get_by_role("link", name="Gebruikers").click()
    await expect(page.get_by_role("heading", name="Gebruikers")).to_be_visible()
    pieter = page.locator('tr[data-extension="202"]')
    await pieter.get_by_label("Gespreksopname").select_option(label="Op verzoek")
    await pieter.get_by_role("button", name="Opslaan").click()
    await expect(page.locator("p.notice")).to_have_text(
        "Opgeslagen: gespreksopname van Pieter Bakker (202) op verzoek."
    )
    await _speaks_dutch(page)
    user = await portal.store.get_user(bakery.scope, "202")
    assert user is not None and user.recording_mode == "on-demand"

    # Rapporten has no Bulkdownload button while bulk download is off.
    await menu.get_by_role("link", name="Rapporten").click()
    await expect(page.get_by_role("heading", name="Rapporten")).to_be_visible()
    title = page.locator(".title-row")
    await expect(title.get_by_role("link", name="Bulkdownload")).to_have_count(0)

    # Opname-instellingen: a year's retention, then bulk download on.
    await menu.get_by_role("link", name="Opname-instellingen").click()
    await page.get_by_label("Bewaartermijn").focus()
    await page.keyboard.press("End")
    await expect(page.locator("#retention-value")).to_have_text("365 dagen")
    await page.get_by_role("group", name="Bulkdownload").get_by_label("Aan").check()
    await page.get_by_role("button", name="Instellingen opslaan").click()
    await expect(page.locator("p.notice")).to_have_text(
        "Instellingen opgeslagen. Een andere bewaartermijn geldt alleen voor nieuwe opnames."
    )
    await _speaks_dutch(page)
    settings = await portal.store.org_settings(bakery.scope)
    assert (settings["retention_days"], settings["bulk_download"]) == ("365", "on")

    # Rapporten: the button is there; both calls at their Amsterdam times.
    await menu.get_by_role("link", name="Rapporten").click()
    await expect(title.get_by_role("link", name="Bulkdownload")).to_be_visible()
    assert await title.get_by_role("link", name="Bulkdownload").get_attribute("href") == "/bulk"
    await expect(page.locator("#call-count")).to_have_text(
        "2 gesprekken. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    summer_row = page.locator(f'tr[data-call-id="{bakery.summer_call}"]')
    winter_row = page.locator(f'tr[data-call-id="{bakery.winter_call}"]')
    await expect(summer_row).to_contain_text("15-07-2024 19:08:04")
    await expect(winter_row).to_contain_text("10-01-2024 10:00:04")
    await _speaks_dutch(page)

    # Find the summer call by part of the caller's number, as written on a note.
    await page.get_by_label("Naam of nummer").fill("234 5")
    await page.get_by_role("button", name="Filteren").click()
    await expect(page.locator("#call-count")).to_have_text(
        "1 gesprek. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    await expect(summer_row).to_contain_text("0612345678")
    await expect(winter_row).to_have_count(0)
    await _speaks_dutch(page)

    # And play it.
    audio = summer_row.get_by_label(f"De opname van gesprek {bakery.summer_call} afspelen")
    await audio.evaluate("el => el.play()")
    await page.wait_for_function(
        "el => !el.paused && el.currentTime > 0", arg=await audio.element_handle(), timeout=10_000
    )
    await audio.evaluate("el => el.pause()")
    plays = [
        e for e in await portal.store.list_audit(bakery.scope, 20) if e.action == "recording.play"
    ]
    assert plays and plays[0].actor == "admin:bram"
