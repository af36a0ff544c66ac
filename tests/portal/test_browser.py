"""The portal in real headless Chromium (Debian `chromium`, driven by Playwright).

Logs in as an admin, puts a user on recording, flips their mode, sets the feature code
and retention, finds a recorded call in Reports, plays it and downloads it. The
screenshots in docs/ come from the real call in tests/e2e/test_portal_e2e.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.portal.chromium import chromium_page, fill_login_form, requires_chromium
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


async def test_admin_records_a_user_and_plays_and_downloads_a_call(
    portal: Fixture, page: Page, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    await page.goto(f"{portal.url}/reports")
    # Not logged in: the login form, then back to Reports.
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await fill_login_form(page, *ADMIN)
    await expect(page.get_by_role("heading", name="Reports")).to_be_visible()

    # Put Carol (203, never recorded) on recording: she starts as on demand.
    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Recording settings")
        .click()
    )
    await page.get_by_label("Add a user").select_option("203")
    await page.get_by_role("button", name="Add user to recording").click()
    carol_row = page.locator('tr[data-extension="203"]')
    await expect(carol_row).to_contain_text("On demand")
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and user.recording_mode == "on-demand"

    # Flip her to always with the record button, and back is the same button.
    await carol_row.get_by_role("button", name="Record always").click()
    await expect(carol_row).to_contain_text("Always")
    await expect(carol_row.get_by_role("button", name="Always record")).to_have_attribute(
        "aria-pressed", "true"
    )
    user = await portal.store.get_user(ORG, "203")
    assert user is not None and user.recording_mode == "always"

    # A wrong feature code is refused with the field marked.
    await page.get_by_label("Feature code").fill("5*")
    await page.get_by_role("button", name="Save settings").click()
    await expect(
        page.get_by_text("the feature code must be * followed by one digit")
    ).to_be_visible()
    assert await page.get_by_label("Feature code").get_attribute("aria-invalid") == "true"

    # Feature code *5, retention 180 days with the keyboard on the slider.
    await page.get_by_label("Feature code").fill("*5")
    slider = page.get_by_label("Retention")
    await slider.focus()
    await page.keyboard.press("End")
    await expect(page.locator("#retention-value")).to_have_text("365 days")
    await page.keyboard.press("ArrowLeft")
    await expect(page.locator("#retention-value")).to_have_text("180 days")
    await expect(page.get_by_text("Changes affect new recordings only")).to_be_visible()
    await page.get_by_label("Beep").check()
    # Bulk download switched on: allowed with 180 days of retention.
    await page.get_by_role("group", name="Bulk download").get_by_label("On").check()
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.locator("p.notice")).to_contain_text("new recordings only")
    stored = await portal.store.org_settings(ORG)
    assert stored["feature_code"] == "*5"
    assert stored["retention_days"] == "180"
    assert stored["announcement"] == "beep"
    assert stored["bulk_download"] == "on"
    await expect(page.get_by_label("Feature code")).to_have_value("*5")

    # The Users page: add a user (on demand, like every new user; the SIP password made
    # for them shown once), then the mode dropdown and Save.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    await page.get_by_label("Extension").fill("204")
    await page.get_by_label("Name").fill("Dan Dale")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("p.notice")).to_contain_text("Added Dan Dale (204)")
    await expect(page.locator("code[data-password]")).to_have_count(1)
    await page.locator("#mode-202").select_option("always")
    await page.locator('tr[data-extension="202"]').get_by_role("button", name="Save").click()
    await expect(page.locator("p.notice")).to_contain_text("Bob Baker (202)")
    user = await portal.store.get_user(ORG, "202")
    assert user is not None and user.recording_mode == "always"
    user = await portal.store.get_user(ORG, "204")
    assert user is not None and user.recording_mode == "on-demand" and user.has_password

    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Recording settings")
        .click()
    )
    # Dan is among the users on recording (on demand), not among those to add.
    await expect(page.locator("main")).to_contain_text("Dan Dale")
    await expect(page.locator('#add-extension option[value="204"]')).to_have_count(0)
    await page.screenshot(path=str(tmp_path / "settings.png"), full_page=True)

    # Reports: the recorded Alice-Bob call with its player and download button.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    recording_id = portal.recordings["alice-bob"]
    row = page.locator(f'tr[data-call-id="{portal.calls["alice-bob"]}"]')
    await expect(row).to_contain_text("Alice Archer")
    await expect(row).to_contain_text("Bob Baker")
    await expect(row).to_contain_text("00:00:03")
    await expect(row).to_contain_text("2024-05-01 12:00:00")
    audio = row.locator("audio")
    await expect(audio).to_have_attribute("preload", "none")
    await page.screenshot(path=str(tmp_path / "reports.png"), full_page=True)

    # Play it: the element must really reach the playing state.
    await audio.evaluate("el => el.play()")
    await page.wait_for_function(
        "el => !el.paused && el.currentTime > 0", arg=await audio.element_handle(), timeout=10_000
    )
    # Seek within it (the server answers the Range request).
    await audio.evaluate("el => { el.currentTime = 2.0; }")
    await page.wait_for_function(
        "el => el.currentTime >= 2.0 && !el.seeking", arg=await audio.element_handle()
    )
    await audio.evaluate("el => el.pause()")

    # Download it: the bytes are the recording's SHA-256.
    async with page.expect_download() as download_info:
        await row.get_by_role("link", name="Download").click()
    download = await download_info.value
    saved = await download.path()
    assert hashlib.sha256(Path(saved).read_bytes()).hexdigest() == portal.sha256[recording_id]
    assert download.suggested_filename.endswith(f"_{recording_id}.wav")
    assert "201-Alice-Archer_to_202-Bob-Baker" in download.suggested_filename

    # Everything above is in the audit log, and the audit page shows it.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    for action in (
        "login",
        "mode.change",
        "settings.change",
        "recording.play",
        "recording.download",
    ):
        await expect(page.get_by_role("cell", name=action, exact=True).first).to_be_visible()

    # Bulk download is switched on (with 180 days): Reports offers it.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    await page.get_by_role("main").get_by_role("link", name="Bulk download").click()
    await page.get_by_label("Month").fill("2024-05")
    await page.get_by_role("button", name="Order ZIP").click()
    await expect(page.locator("p.notice")).to_contain_text("Export of 2024-05 ordered")
    await expect(page.get_by_role("cell", name="2024-05", exact=True)).to_be_visible()
    assert portal.exports == [("2024-05", "admin:root")]


async def test_bulk_download_refused_below_180_days(portal: Fixture, page: Page) -> None:
    expect = playwright_api.expect
    await page.goto(f"{portal.url}/bulk")
    await fill_login_form(page, *ADMIN)
    await expect(page.get_by_role("heading", name="Bulk download")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text(
        "Bulk download needs a retention of 180 days or more; it is 90 days now."
    )
    await expect(page.get_by_role("button", name="Order ZIP")).to_be_disabled()


async def test_user_sees_only_own_calls_in_reports(portal: Fixture, page: Page) -> None:
    expect = playwright_api.expect
    await page.goto(f"{portal.url}/login")
    await fill_login_form(page, "203", "carol-pass-3")
    await expect(page.get_by_role("heading", name="Reports")).to_be_visible()
    await expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Recording settings")
    ).to_have_count(0)
    await expect(page.locator("tbody tr")).to_have_count(2)
    await expect(page.locator("main")).not_to_contain_text("Alice Archer")
