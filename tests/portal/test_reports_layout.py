"""The Reports page fits a 1280 px window and a phone's width (390 px) in Chromium: no
horizontal scrolling, and every Download button on screen and visible.

Measured in the browser (`scrollWidth` of the page against the viewport, and each
button's box), with long names, long numbers and on-demand spans in the rows, in
English and in Dutch (whose labels are longer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.portal.chromium import CHROMIUM, CHROMIUM_ARGS, fill_login_form, requires_chromium
from tests.portal.conftest import ADMIN, BASE_TIME, Fixture, add_recorded_call
from tests.storage.orgs import ORG

playwright_api = pytest.importorskip("playwright.async_api")
if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = requires_chromium

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}


async def _crowd(portal: Fixture) -> None:
    """Rows that push the columns: long names and numbers, several recordings' spans."""
    for index in range(4):
        recording_id = await add_recorded_call(
            portal,
            f"long-{index}",
            caller=("201", "Alexandra Wilhelmina van Oldenbarnevelt-Schimmelpenninck"),
            callee=("+3120555012345678", "Internationale Handelsonderneming Noord-Holland"),
            owner="201",
            started_at=BASE_TIME + 3 * 86400 + index * 600,
        )
        at = BASE_TIME + 3 * 86400 + index * 600 + 3
        for offset, action in ((0, "start"), (1, "stop"), (1.5, "start"), (2, "stop")):
            await portal.store.add_recording_toggle(recording_id, at + offset, action, "rfc4733")


async def _measure(page: Page, tmp_path: Path, name: str) -> None:
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    document_width, body_width, viewport = widths
    assert document_width <= viewport and body_width <= viewport, (name, widths)
    buttons = page.locator("tr[data-call-id] .player a.button")
    count = await buttons.count()
    assert count >= 6, count
    for index in range(count):
        button = buttons.nth(index)
        await button.scroll_into_view_if_needed()
        assert await button.is_visible()
        box = await button.bounding_box()
        assert box is not None and box["width"] > 20
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport, (name, index, box)
    # Scrolling sideways moves nothing: there is nothing beside the page.
    scrolled = await page.evaluate(
        "() => { window.scrollTo(500, window.scrollY); return window.scrollX; }"
    )
    assert scrolled == 0, name
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("language", ["en", "nl"])
async def test_reports_fit_a_window_and_a_phone(
    portal: Fixture, tmp_path: Path, language: str
) -> None:
    from playwright.async_api import async_playwright, expect

    await _crowd(portal)
    await portal.store.set_org_setting(ORG, "language", language)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            for name, (width, height) in VIEWPORTS.items():
                context = await browser.new_context(
                    viewport={"width": width, "height": height},
                    is_mobile=name == "phone",
                    has_touch=name == "phone",
                    device_scale_factor=1,
                    locale=language,
                )
                page = await context.new_page()
                page.set_default_timeout(15_000)
                await page.goto(f"{portal.url}/login?next=/reports")
                if language == "en":
                    await fill_login_form(page, *ADMIN)
                else:
                    await page.get_by_label("Naam of toestelnummer").fill(ADMIN[0])
                    await page.get_by_label("Wachtwoord").fill(ADMIN[1])
                    await page.get_by_role("button", name="Inloggen").click()
                await expect(page.locator("#call-count")).to_be_visible()
                await expect(page.locator(".spans").first).to_be_visible()
                await _measure(page, tmp_path, f"{language}-{name}")
                await context.close()
        finally:
            await browser.close()
