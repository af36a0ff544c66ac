"""End-to-end: the web portal of a real `callrec serve`, a real call and a real browser.

1. A tester's journey in headless Chromium: log in, put users on recording, set the
   feature code and retention, place a call with `callrec phone`, find it in Reports,
   play it and download it. The on-demand code set in the browser must reach the B2BUA.
2. Bulk export: order a month over the REST API, receive the mail on a real SMTP server
   (aiosmtpd), download the ZIP with the mailed link and check its manifest.

The first test also refreshes docs/settings.png and docs/reports.png.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import hashlib
import io
import json
import os
import re
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from callrec_phone.phone import PhoneProcess, PhoneResult
from testkit.audio import tone_wav
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, free_port, make_server
from testkit.waiting import WaitTimeout, wait_until
from tests.portal.chromium import DOCS, chromium_page, fill_login_form, requires_chromium
from tests.portal.conftest import login, new_session

playwright_api = pytest.importorskip("playwright.async_api")
aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session
    from playwright.async_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ADMIN = ("root", "admin-secret-1")
ADMIN_EMAIL = "root@example.org"
PASSWORDS = {"201": "pw-alice-201", "202": "pw-bob-202"}


def start_server(root: Path, extra_config: str = "") -> CallrecServer:
    server = make_server(root, extra_config)
    for extension, name in (("201", "Alice Archer"), ("202", "Bob Baker")):
        server.add_user(extension, name, PASSWORDS[extension], "--mode", "never")
    server.cli("admin", "add", ADMIN[0], "--password", ADMIN[1], "--email", ADMIN_EMAIL)
    server.start()
    return server


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """A 440 Hz tone that `callrec phone --play` loops into the call."""
    return tone_wav(tmp_path / "tone.wav", 440.0, seconds=2.0)


def trunk_phone(server: CallrecServer, calls: int) -> PhoneProcess:
    """A pjsua2 phone answering on the trunk's address (callrec trusts it)."""
    phone = PhoneProcess(server.trunk_phone_args(calls=calls))
    phone.wait_for("started", 10)
    return phone


def dial(server: CallrecServer, extension: str, *options: str) -> PhoneProcess:
    return PhoneProcess(server.dial_args(extension, PASSWORDS[extension], *options, timeout_s=20))


async def finish(*phones: PhoneProcess) -> list[PhoneResult]:
    """Wait for the phones (each killed by PID after 30 s) without blocking the loop."""
    try:
        return list(await asyncio.gather(*(asyncio.to_thread(p.wait, 30) for p in phones)))
    finally:
        for phone in phones:
            phone.kill()


def wait_for_recordings(
    server: CallrecServer, callers: set[str], timeout: float = 15.0
) -> dict[str, dict[str, Any]]:
    """The finished recording of each caller's call, by caller extension."""

    def finished() -> dict[str, dict[str, Any]] | None:
        found = {
            row["call"]["caller"]["extension"]: row
            for row in server.recordings()
            if row["call"]["caller"]["extension"] in callers and row["status"] != "recording"
        }
        return found if set(found) == callers else None

    try:
        return wait_until(
            finished, timeout=timeout, what=f"finished recordings of {callers}", interval=0.3
        )
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}\n{server.log()[-3000:]}") from None


def hms(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


# -- 1. the tester's journey in the browser ----------------------------------------------


async def put_on_recording(page: Page, extension: str) -> None:
    """The + on Recording settings: the user starts as on demand."""
    expect = playwright_api.expect
    await page.get_by_label("Add a user").select_option(extension)
    await page.get_by_role("button", name="Add user to recording").click()
    await expect(page.locator(f'tr[data-extension="{extension}"]')).to_contain_text("On demand")


@requires_chromium
async def test_tester_records_a_real_call_and_plays_and_downloads_it(
    tmp_path: Path, wav: Path
) -> None:
    expect = playwright_api.expect
    server = start_server(tmp_path / "callrec")
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        async with chromium_page() as page:
            await page.goto(f"{server.portal_url}/settings")
            await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            await fill_login_form(page, *ADMIN)
            await expect(page.get_by_role("heading", name="Recording settings")).to_be_visible()

            # 201 on recording with the +, then always with the record button.
            await put_on_recording(page, "201")
            alice = page.locator('tr[data-extension="201"]')
            await alice.get_by_role("button", name="Record always").click()
            await expect(alice).to_contain_text("Always")
            # 202 stays on demand: recorded only once they dial the feature code.
            await put_on_recording(page, "202")

            await page.get_by_label("Feature code").fill("*5")
            slider = page.get_by_label("Retention")
            await slider.focus()
            await page.keyboard.press("End")  # 365
            await page.keyboard.press("ArrowLeft")  # 180
            await expect(page.locator("#retention-value")).to_have_text("180 days")
            await page.get_by_role("button", name="Save settings").click()
            await expect(page.locator("p.notice")).to_contain_text("new recordings only")
            await expect(page.get_by_label("Feature code")).to_have_value("*5")
            await page.screenshot(path=str(shots / "settings.png"), full_page=True)

            # What the browser did is in the store the B2BUA reads.
            users = {
                u["extension"]: u["recording_mode"]
                for u in json.loads(server.cli("users", "list", "--json").stdout)
            }
            assert users == {"201": "always", "202": "on-demand"}
            response = await page.request.get(f"{server.portal_url}/api/v1/settings")
            settings = await response.json()
            assert (settings["feature_code"], settings["retention_days"]) == ("*5", 180)

            # Two real calls to the trunk, side by side: 201 (always) talks ~4 s; 202
            # (on demand) dials *5 by RFC 2833, which only works if the B2BUA took the
            # code from the store (its built-in default is *1).
            trunk = trunk_phone(server, calls=2)
            # The B2BUA re-reads the stored settings every 2 s and logs the change.
            await asyncio.to_thread(
                wait_until,
                lambda: "now: feature code *5" in server.log(),
                timeout=10,
                what="the B2BUA taking the new feature code",
            )
            alice_phone = dial(server, "201", "--play", str(wav), "--hangup-after", "4")
            bob_phone = dial(
                server,
                "202",
                "--play",
                str(wav),
                "--digits",
                "*5",
                "--dtmf-method",
                "rfc2833",
                "--at",
                "0.5",
                "--hangup-after",
                "3",
            )
            dialled = await finish(alice_phone, bob_phone)
            answered = await finish(trunk)
            for result in [*dialled, *answered]:
                assert result.returncode == 0, (result.events, result.stderr[-2000:])

            found = await asyncio.to_thread(wait_for_recordings, server, {"201", "202"})
            recording = found["201"]
            assert recording["status"] == "complete"
            assert recording["retention_days"] == 180
            assert 3.0 <= recording["duration_s"] <= 5.5
            on_demand = found["202"]
            assert on_demand["status"] == "complete"
            assert on_demand["segments"], on_demand
            # The *5 came 0.5 s into a 3 s call: the recording starts there, not at 0.
            assert on_demand["duration_s"] < 3.0
            calls = {c["id"]: c for c in server.calls()}
            call = calls[recording["call_id"]]
            assert call["ended_at"] is not None and call["duration_s"] is not None

            # Reports: the call with names, extensions and its talk time.
            await (
                page.get_by_role("navigation", name="Main")
                .get_by_role("link", name="Reports")
                .click()
            )
            await expect(page.get_by_role("heading", name="Reports")).to_be_visible()
            row = page.locator(f'tr[data-call-id="{call["id"]}"]')
            caller_cell, callee_cell = (
                row.locator("td.party").nth(0),
                row.locator("td.party").nth(1),
            )
            await expect(caller_cell).to_contain_text("Alice Archer")
            await expect(caller_cell).to_contain_text("201")
            await expect(callee_cell).to_contain_text(TRUNK_NUMBER)
            if call["callee"]["name"]:
                await expect(callee_cell).to_contain_text(call["callee"]["name"])
            await expect(row.locator("td.num")).to_have_text(hms(call["duration_s"]))
            await expect(row.locator("td.num")).to_have_text(re.compile(r"00:00:0[3-5]"))
            await expect(
                page.locator(f'tr[data-call-id="{on_demand["call_id"]}"]')
            ).to_contain_text("Bob Baker")

            # Play it: the element must really reach the playing state.
            audio = row.locator("audio")
            await audio.evaluate("el => el.play()")
            await page.wait_for_function(
                "el => !el.paused && el.currentTime > 0",
                arg=await audio.element_handle(),
                timeout=10_000,
            )
            await audio.evaluate("el => el.pause()")
            await page.screenshot(path=str(shots / "reports.png"), full_page=True)

            # Download it: the bytes are the file the store vouches for.
            async with page.expect_download() as download_info:
                await row.get_by_role("link", name="Download").click()
            download = await download_info.value
            saved = Path(await download.path())
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == recording["sha256"]
            assert saved.stat().st_size == recording["bytes"]
            assert download.suggested_filename.endswith(".wav")
    finally:
        server.stop()
    # Only a run that got this far, and was asked to (CALLREC_SCREENSHOTS=1), refreshes
    # the documentation's screenshots; an ordinary test run leaves docs/ alone.
    if not os.environ.get("CALLREC_SCREENSHOTS"):
        return
    DOCS.mkdir(exist_ok=True)
    for name in ("settings.png", "reports.png"):
        shutil.copyfile(shots / name, DOCS / name)


# -- 2. bulk export by mail ------------------------------------------------------------


@dataclass
class Inbox:
    """An aiosmtpd handler (it runs in the controller's thread) keeping what arrives."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        self.arrived.set()
        return "250 OK"

    def wait(self, timeout: float) -> tuple[list[str], EmailMessage]:
        if not self.arrived.wait(timeout):
            raise AssertionError(f"no mail within {timeout} s")
        return self.messages[0]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port(socket.SOCK_STREAM)
    controller = aiosmtpd_controller.Controller(inbox, hostname=HOST, port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def message_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


async def test_month_export_is_mailed_as_a_signed_link_to_a_valid_zip(
    tmp_path: Path, wav: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, smtp_port = smtp
    server = start_server(
        tmp_path / "callrec",
        f'[smtp]\nhost = "{HOST}"\nport = {smtp_port}\nsender = "callrec@example.org"\n'
        "[retention]\ndefault_days = 180\n",
    )
    try:
        server.cli("users", "set-mode", "201", "always")
        server.cli("settings", "set", "bulk_download", "on")
        trunk = trunk_phone(server, calls=1)
        results = await finish(
            dial(server, "201", "--play", str(wav), "--hangup-after", "2"), trunk
        )
        for result in results:
            assert result.returncode == 0, (result.events, result.stderr[-2000:])
        recording = (await asyncio.to_thread(wait_for_recordings, server, {"201"}))["201"]
        assert recording["status"] == "complete" and recording["retention_days"] == 180
        month = recording["started_at"][:7]
        assert re.fullmatch(r"\d{4}-\d{2}", month), recording["started_at"]

        async with new_session() as session:
            csrf = await login(session, server.portal_url, *ADMIN)
            headers = {"X-CSRF-Token": csrf}
            exports = f"{server.portal_url}/api/v1/exports"
            async with session.post(exports, json={"month": month}, headers=headers) as answer:
                assert answer.status == 202, await answer.text()
                export_id = (await answer.json())["id"]

            recipients, message = await asyncio.to_thread(inbox.wait, 20.0)
            assert recipients == [ADMIN_EMAIL]
            body = message_text(message)
            links = re.findall(
                rf"{re.escape(server.portal_url)}/exports/download\?token=[A-Za-z0-9._~%-]+", body
            )
            assert links, body
            link = links[0]
            token = link.split("token=", 1)[1]
            assert token.split(".", 1)[0] == str(export_id)

            # Retention below 180 days: refused while bulk download is on; switched
            # off and shortened, an order is refused, saying why.
            settings = f"{server.portal_url}/api/v1/settings"
            async with session.patch(
                settings, json={"retention_days": 90}, headers=headers
            ) as answer:
                assert answer.status == 422 and (await answer.json())["field"] == "bulk_download"
            async with session.patch(
                settings, json={"retention_days": 90, "bulk_download": "off"}, headers=headers
            ) as answer:
                assert answer.status == 200, await answer.text()
            async with session.post(exports, json={"month": month}, headers=headers) as answer:
                assert answer.status == 409
                refusal = await answer.json()
            assert refusal["field"] == "retention_days"
            assert refusal["error"] == (
                "Bulk download needs a retention of 180 days or more; it is 90 days now."
            )

        # The mailed link leads to the login page first: a forwarded link gives nothing.
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(link, allow_redirects=False) as answer,
        ):
            assert answer.status == 303 and answer.headers["Location"].startswith("/login")
        # Logged in to the export's organisation, the link gives the ZIP.
        async with new_session() as anonymous:
            await login(anonymous, server.portal_url, *ADMIN)
            async with anonymous.get(link) as answer:
                assert answer.status == 200, await answer.text()
                assert answer.headers["Content-Type"] == "application/zip"
                archive = await answer.read()
            # A flipped signature, another export's id, a later expiry: all refused.
            export_part, expiry, signature = token.split(".")
            flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
            tampered = [
                f"{export_part}.{expiry}.{flipped}",
                f"{export_id + 1}.{expiry}.{signature}",
                f"{export_part}.{int(expiry) + 86400}.{signature}",
                f"../{token}",
            ]
            for bad in tampered:
                url = f"{server.portal_url}/exports/download?token={bad}"
                async with anonymous.get(url) as answer:
                    assert answer.status == 403, bad

        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            assert zipped.testzip() is None
            manifest = list(
                csv.DictReader(io.StringIO(zipped.read("manifest.csv").decode("utf-8")))
            )
            assert len(manifest) == 1
            for entry in manifest:
                content = zipped.read(entry["file"])
                assert hashlib.sha256(content).hexdigest() == entry["sha256"]
            assert manifest[0]["sha256"] == recording["sha256"]
            assert manifest[0]["caller_ext"] == "201"
            assert set(zipped.namelist()) == {"manifest.csv", manifest[0]["file"]}
    finally:
        server.stop()
