"""Headless Debian Chromium driven by Playwright, shared by the portal browser tests.

Used by tests/portal/test_browser.py (a portal on a seeded store) and
tests/e2e/test_portal_e2e.py (the real `callrec serve` and a real call).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = os.environ.get("CALLREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # el.play() from a test script has no user gesture behind it.
    "--autoplay-policy=no-user-gesture-required",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"

requires_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is not installed (apt-get install chromium)",
)


@asynccontextmanager
async def chromium_page(*, timeout_ms: float = 15_000) -> AsyncIterator[Page]:
    """A fresh tab (downloads accepted, 1280x800) in a headless Chromium, closed after."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(
                accept_downloads=True, viewport={"width": 1280, "height": 800}
            )
            tab = await context.new_page()
            tab.set_default_timeout(timeout_ms)
            yield tab
            await context.close()
        finally:
            await browser.close()


async def fill_login_form(page: Page, name: str, password: str) -> None:
    """Fill and submit the portal's login form shown on `page`."""
    await page.get_by_label("Name or extension").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
