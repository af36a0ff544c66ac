#!/usr/bin/env python3
"""Screenshots of every portal page, in English and in Dutch, for docs/screenshots/.

    venv/bin/python scripts/screenshots.py [--out DIR] [--chromium PATH] [--languages en nl]

Starts the real portal (`portal.app.start_portal_at`) on 127.0.0.1 over a fresh store in
a temporary folder, filled with a small demo: organisation "default" (Acme) with an
admin, three users and their calls (one recorded always, one on demand with its spans,
one not recorded), an uploaded notice, an export, and a second organisation for the
operator's pages. Headless Debian Chromium (Playwright) then logs in as the admin, as a
user and as the operator and saves one PNG per page in `DIR/<language>/`, at 1280x800
(the page's full height) and the reports also at a phone's 390x844. Nothing outside the
temporary folder and DIR is touched. The demo's calls have fixed dates; what the portal
dates by today (the operator's usage month) changes with the day it runs.
tests/portal/test_screenshots.py runs it into a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the project's packages are beside it
    sys.path.insert(0, str(ROOT))

from argon2 import PasswordHasher  # noqa: E402

from portal.app import PortalHandle, start_portal_at  # noqa: E402
from portal.services import PortalServices  # noqa: E402
from storage.database import Store  # noqa: E402
from storage.models import OrgScope  # noqa: E402
from storage.notices import NOTICE_SETTING, NoticeFiles, UploadedNotice  # noqa: E402

CHROMIUM = os.environ.get("CALLREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip
ADMIN = ("beheer", "admin-secret-1")
OPERATOR = ("operator", "operator-secret-1")
# Two organisations: a user logs in as extension@organisation.
USER = ("202@default", "bram-pass-22")
DEFAULT_ORG = OrgScope(1, "default")
# 2024-05-13 (a Monday) 09:00 in Amsterdam.
BASE = datetime(2024, 5, 13, 7, 0, tzinfo=UTC).timestamp()
LOGIN_LABELS = {
    "en": ("Name or extension", "Password", "Log in"),
    "nl": ("Naam of toestelnummer", "Wachtwoord", "Inloggen"),
}


@dataclass(frozen=True)
class Shot:
    """One page: who looks at it, where, and the file name."""

    who: str
    path: str
    name: str
    phone: bool = False


SHOTS = (
    Shot("admin", "/settings", "settings"),
    Shot("admin", "/settings/recording-users/201/remove", "remove-confirm"),
    Shot("admin", "/users", "users"),
    Shot("admin", "/reports", "reports"),
    Shot("admin", "/reports?q=0612", "reports-search"),
    Shot("admin", "/reports", "reports-phone", phone=True),
    Shot("admin", "/bulk", "bulk-download"),
    Shot("admin", "/audit", "audit"),
    Shot("user", "/reports", "user-reports"),
    Shot("operator", "/operator", "operator-organisations"),
    Shot("operator", "/operator/orgs/default", "operator-organisation"),
    Shot("anonymous", "/login", "login"),
)


def _wav(seconds: float, frequency: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000.0
    out = io.BytesIO()
    soundfile.write(out, 0.3 * np.sin(2 * np.pi * frequency * t), 8000, format="WAV",
                    subtype="PCM_16")  # fmt: skip
    return out.getvalue()


async def _call(
    store: Store, storage: Path, key: str, caller: tuple[str, str], callee: tuple[str, str],
    at: float, *, recorded: str | None, seconds: float = 95.0,
) -> None:  # fmt: skip
    call_id = await store.create_call(
        DEFAULT_ORG.id, sip_call_id=f"{key}@demo", direction="outbound",
        caller_ext=caller[0], caller_name=caller[1], callee_ext=callee[0],
        callee_name=callee[1], started_at=at, answered_at=at + 4, ended_at=at + 4 + seconds,
        disposition="answered",
    )  # fmt: skip
    if recorded is None:
        return
    relative = f"recordings/2024/05/13/{key}.wav"
    (storage / relative).parent.mkdir(parents=True, exist_ok=True)
    (storage / relative).write_bytes(_wav(3.0, 440.0))
    started = at + 4 if recorded == "always" else at + 20
    recording_id = await store.create_recording(
        call_id=call_id, path=relative, format="wav", channels=1, sample_rate=8000,
        started_at=started, retention_days=180, owner_ext=caller[0],
    )  # fmt: skip
    if recorded == "on-demand":
        for offset, action in ((0, "start"), (31, "stop"), (52, "start"), (70, "stop")):
            await store.add_recording_toggle(recording_id, started + offset, action, "rfc4733")
    await store.finish_recording(
        recording_id, status="complete", ended_at=at + 4 + seconds, duration_s=seconds,
        segments=[(0.0, seconds)], size=(storage / relative).stat().st_size,
    )  # fmt: skip


async def seed(store: Store, storage: Path) -> None:
    """The demo the pages show."""
    org = DEFAULT_ORG
    await store.add_admin(org, *ADMIN, email="beheer@acme.example")
    await store.add_operator(*OPERATOR)
    await store.add_user(org, "201", "Anna de Vries", mode="always")
    await store.add_user(org, "202", "Bram Jansen", mode="on-demand")
    await store.add_user(org, "203", "Carla Smit", mode="never")
    await store.set_portal_password(org, "202", USER[1])
    await store.set_org_settings(
        org, {"retention_days": "180", "bulk_download": "on", "timezone": "Europe/Amsterdam"}
    )
    await _call(store, storage, "anna-out", ("201", "Anna de Vries"),
                ("0612345678", "Klantenservice"), BASE, recorded="always")  # fmt: skip
    await _call(store, storage, "bram-out", ("202", "Bram Jansen"),
                ("0201234567", "Leverancier"), BASE + 3600, recorded="on-demand")  # fmt: skip
    await _call(store, storage, "carla-anna", ("203", "Carla Smit"), ("201", "Anna de Vries"),
                BASE + 7200, recorded=None, seconds=40.0)  # fmt: skip
    export_id = await store.create_export(org, "2024-04", "admin:beheer", BASE)
    await store.update_export(export_id, "ready", path="exports/1-2024-04.zip",
                              finished_at=BASE + 60)  # fmt: skip
    notice = _wav(2.0, 600.0)
    file = NoticeFiles(storage).save(org.id, notice)
    record = UploadedNotice(file, "welkom-acme.wav", 2.0, BASE - 86400, "admin:beheer")
    await store.set_org_settings(org, {NOTICE_SETTING: record.to_setting(),
                                       "announcement": "uploaded"})  # fmt: skip
    await store.add_organisation("globex", "Globex B.V.", "globex.example",
                                 language="nl", timezone="Europe/Amsterdam")  # fmt: skip
    await store.add_did(org, "31201000", "31201099")


async def _login(page: object, url: str, language: str, name: str, password: str) -> None:
    from playwright.async_api import Page

    assert isinstance(page, Page)
    name_label, password_label, button = LOGIN_LABELS[language]
    await page.goto(f"{url}/login")
    await page.get_by_label(name_label).fill(name)
    await page.get_by_label(password_label, exact=True).fill(password)
    await page.get_by_role("button", name=button).click()
    await page.wait_for_url(lambda target: "/login" not in target)


async def shoot(url: str, out: Path, languages: list[str], chromium: str,
                store: Store) -> list[Path]:  # fmt: skip
    from playwright.async_api import async_playwright

    written: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            for language in languages:
                await store.set_org_setting(DEFAULT_ORG, "language", language)
                folder = out / language
                folder.mkdir(parents=True, exist_ok=True)
                for who in ("admin", "user", "operator", "anonymous"):
                    for phone in (False, True):
                        shots = [s for s in SHOTS if s.who == who and s.phone == phone]
                        if not shots:
                            continue
                        size = {"width": 390, "height": 844} if phone else {
                            "width": 1280, "height": 800}  # fmt: skip
                        context = await browser.new_context(
                            viewport=size, locale=language, device_scale_factor=1,
                            extra_http_headers={"Accept-Language": language},
                        )  # fmt: skip
                        page = await context.new_page()
                        page.set_default_timeout(15_000)
                        credentials = {"admin": ADMIN, "user": USER, "operator": OPERATOR}
                        if who in credentials:
                            await _login(page, url, language, *credentials[who])
                        for shot in shots:
                            await page.goto(url + shot.path)
                            await page.wait_for_load_state("networkidle")
                            shown = await page.get_attribute("html", "lang")
                            if who != "operator" and shown != language:
                                # (The operator's pages follow the server's language.)
                                raise RuntimeError(f"{shot.path} is in {shown}, not {language}")
                            target = folder / f"{shot.name}.png"
                            await page.screenshot(path=str(target), full_page=True)
                            written.append(target)
                        await context.close()
        finally:
            await browser.close()
    return written


async def run(out: Path, languages: list[str], chromium: str) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="callrec-shots-") as temporary:
        storage = Path(temporary) / "data"
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        store = await Store.open(storage / "callrec.db", hasher=hasher)
        handle: PortalHandle | None = None
        try:
            await seed(store, storage)
            services = PortalServices(storage_dir=storage, recordings_dir=storage / "recordings")
            handle = await start_portal_at(store, services, "127.0.0.1", 0)
            return await shoot(handle.url, out, languages, chromium, store)
        finally:
            if handle is not None:
                await handle.stop()
            await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--languages", nargs="+", default=["en", "nl"], choices=["en", "nl"])
    args = parser.parse_args(argv)
    written = asyncio.run(run(args.out, args.languages, args.chromium))
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
