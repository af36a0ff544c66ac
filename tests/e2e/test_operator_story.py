"""End-to-end, as a story: an operator hosts two Dutch customers on one real
`callrec serve`, and each customer's admin follows the ZPEAK/Simmpl manual in Dutch.

1. The operator logs in to the portal in Chromium and adds two organisations on the
   Organisaties page, each with its own SIP domain, language nl, time zone
   Europe/Amsterdam and first admin (with an e-mail address for the monthly ZIP).
2. Each admin logs in (one browser asks for English: the organisation's language wins
   once logged in), adds two users on Gebruikers (the same extensions in both
   organisations), who start "Op verzoek" (the catalogue's label for on-demand), notes
   the SIP password the portal shows once, puts one user on "Altijd", and on
   Opname-instellingen sets its own feature code, its own retention and bulk download.
3. Real SIP peers (SIPp) call through callrec with those passwords and their
   organisation's domain, in both organisations at once: the `always` user calls out to
   the trunk (SIPp); the on-demand user calls out and keys the other organisation's
   feature code (nothing happens), then their own (recording starts there); and the
   on-demand user calls the `always` colleague, whose phone registered and answers. All
   six calls are recorded with their organisation's retention.
4. Each admin finds the outgoing call on Rapporten by part of the dialled number, sees
   it at its Amsterdam time, the internal call with both names and the on-demand
   call's recorded span, plays it (the audio request answers 200/206 and the element
   plays), and orders the month's ZIP with Bulkdownload: the Dutch e-mail reaches
   aiosmtpd with a link, and the ZIP behind it holds exactly the organisation's
   recordings, byte for byte.
5. Neither admin sees anything of the other organisation: not on Rapporten (both
   dialled the same number), Gebruikers or Bulkdownload, and the other's audio,
   download and ZIP links give 403/404. Each keeps its own settings. The operator's
   Organisaties page shows each organisation's usage, and no names.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hashlib
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from testkit.harness import HOST, CallrecServer, free_port, make_server
from testkit.sip_register import register
from testkit.sipp_runner import SippProcess, start_sipp, write_rtp_pcap
from testkit.waiting import wait_until, wait_until_async
from tests.e2e.test_organisations import UAC_DOMAIN
from tests.e2e.test_portal_e2e import Inbox
from tests.e2e.test_portal_e2e import smtp as smtp  # the aiosmtpd fixture: (Inbox, port)
from tests.portal.chromium import CHROMIUM, CHROMIUM_ARGS, requires_chromium

playwright_api = pytest.importorskip("playwright.async_api")
if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), requires_chromium]

OPERATOR = ("ops", "operator-secret-1")
ZONE = ZoneInfo("Europe/Amsterdam")
DUTCH = "nl-NL,nl;q=0.9"
# The number both organisations' `always` users dial: each finds only its own call.
DIALLED = "0201234567"
# The number the on-demand users dial, keying the other organisation's code at 0.7 s
# (nothing happens) and their own at 1.7 s of the call (recording starts).
DIALLED_ON_DEMAND = "0307654321"
OTHER_CODE_AT, OWN_CODE_AT = 0.5, 1.5
# What an admin types in Rapporten's search box: part of that number.
FRAGMENT = "12345"


@dataclass(frozen=True)
class Customer:
    """One organisation of the story: who it is, its admin and users, its settings."""

    slug: str
    name: str
    domain: str
    admin: str
    admin_password: str
    admin_email: str
    users: dict[str, str]  # extension -> name; the first one is put on "always"
    feature_code: str
    retention_days: int
    retention_keys: tuple[str, ...]  # on the slider, from where End puts it (365)
    browser_language: str  # Accept-Language of the admin's browser

    @property
    def always(self) -> str:
        return next(iter(self.users))

    @property
    def on_demand(self) -> str:
        return list(self.users)[1]


# Two customers as in the manuals: a ZPEAK customer and a Simmpl (Callvoip) customer.
BAKERY = Customer(
    "bakkerij", "Bakkerij Jansen", "bakkerij.example", "bram", "bram-password-1",
    "bram@bakkerij.example", {"201": "Sanne Jansen", "202": "Pieter Bakker"},
    "*5", 365, ("End",), DUTCH,
)  # fmt: skip
DENTIST = Customer(
    "tandarts", "Tandartspraktijk De Vries", "tandarts.example", "dirk", "dirk-password-1",
    "dirk@tandarts.example", {"201": "Eva de Vries", "202": "Johan Smit"},
    "*7", 180, ("End", "ArrowLeft"), "en-GB,en;q=0.9",
)  # fmt: skip
CUSTOMERS = (BAKERY, DENTIST)


@dataclass
class Outcome:
    """What one organisation ended up with, for the other's admin to try."""

    sip_passwords: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    zip_link: str = ""


# -- mail ------------------------------------------------------------------------------


def mails_to(inbox: Inbox, address: str) -> list[EmailMessage]:
    """The messages aiosmtpd took for `address` (appended in its controller's thread)."""
    return [message for rcpt, message in list(inbox.messages) if address in rcpt]


# -- server and browser ----------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, smtp: tuple[Inbox, int]) -> Iterator[CallrecServer]:
    _, smtp_port = smtp
    srv = make_server(
        tmp_path / "callrec",
        f'[smtp]\nhost = "{HOST}"\nport = {smtp_port}\nsender = "callrec@operator.example"\n',
        sipp=True,
    )
    srv.cli("admin", "add", OPERATOR[0], "--operator", "--password", OPERATOR[1])
    yield from srv.serving()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for the operator and both admins (a context each)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_tab(browser: Browser, accept_language: str) -> Page:
    context = await browser.new_context(
        accept_downloads=True,
        viewport={"width": 1280, "height": 800},
        extra_http_headers={"Accept-Language": accept_language},
    )
    tab = await context.new_page()
    tab.set_default_timeout(15_000)
    return tab


def cli_json(server: CallrecServer, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(server.cli(*args, "--json").stdout)
    return rows


def menu(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Hoofdmenu")


async def log_in(page: Page, url: str, name: str, password: str, *, dutch: bool) -> None:
    expect = playwright_api.expect
    await page.goto(f"{url}/login")
    if dutch:
        await expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
        await page.get_by_label("Naam of toestelnummer").fill(name)
        await page.get_by_label("Wachtwoord").fill(password)
        await page.get_by_role("button", name="Inloggen").click()
    else:  # the login page follows the browser until it knows the organisation
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        await page.get_by_label("Name or extension").fill(name)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Log in").click()


# -- 1. the operator -------------------------------------------------------------------


async def operator_adds_the_organisations(page: Page, url: str) -> None:
    expect = playwright_api.expect
    await log_in(page, url, *OPERATOR, dutch=True)
    await expect(page.get_by_role("heading", name="Organisaties", exact=True)).to_be_visible()
    for customer in CUSTOMERS:
        form = page.locator('form[action="/operator"]')
        await form.get_by_label("Korte naam").fill(customer.slug)
        await form.get_by_label("Naam", exact=True).fill(customer.name)
        await form.get_by_label("SIP-domein").fill(customer.domain)
        await form.get_by_label("Taal", exact=True).fill("nl")
        await form.get_by_label("Tijdzone").fill("Europe/Amsterdam")
        await form.get_by_label("Eerste beheerder").fill(customer.admin)
        await form.get_by_label("Wachtwoord").fill(customer.admin_password)
        await form.get_by_label("E-mail").fill(customer.admin_email)
        await form.get_by_role("button", name="Toevoegen").click()
        # The organisation's own page, with its first admin.
        await expect(page.get_by_role("heading", name=customer.name)).to_be_visible()
        await expect(page.get_by_label("SIP-domein")).to_have_value(customer.domain)
        await expect(page.get_by_label("Taal", exact=True)).to_have_value("nl")
        await expect(page.get_by_label("Tijdzone")).to_have_value("Europe/Amsterdam")
        await expect(page.locator("main li")).to_contain_text([customer.admin])
        await menu(page).get_by_role("link", name="Organisaties").click()
    # Both on the Organisaties page, each with its own domain, language and zone.
    for customer in CUSTOMERS:
        row = page.locator("tr", has=page.get_by_role("link", name=customer.name))
        for value in (customer.domain, "nl", "Europe/Amsterdam"):
            await expect(row).to_contain_text(value)


# -- 2. each admin sets up their organisation -------------------------------------------


async def admin_sets_up(page: Page, url: str, customer: Customer, outcome: Outcome) -> None:
    expect = playwright_api.expect
    await log_in(
        page, url, customer.admin, customer.admin_password,
        dutch=customer.browser_language == DUTCH,
    )  # fmt: skip
    await expect(page.get_by_role("heading", name="Opname-instellingen")).to_be_visible()
    assert await page.locator("html").get_attribute("lang") == "nl"

    # Gebruikers: two users; callrec makes each SIP password and shows it this once.
    await menu(page).get_by_role("link", name="Gebruikers").click()
    await expect(page.get_by_role("cell", name="Nog geen gebruikers.")).to_be_visible()
    add = page.get_by_role("region", name="Gebruiker toevoegen")
    for extension, name in customer.users.items():
        mode = add.get_by_label("Gespreksopname")
        # A new user starts on demand: "Op verzoek" in the catalogue (the manuals
        # say "Op aanvraag").
        await expect(mode).to_have_value("on-demand")
        await expect(mode.locator("option:checked")).to_have_text("Op verzoek")
        await add.get_by_label("Toestelnummer").fill(extension)
        await add.get_by_label("Naam", exact=True).fill(name)
        await add.get_by_role("button", name="Gebruiker toevoegen").click()
        shown = page.locator("section[data-generated]")
        await expect(shown).to_contain_text(f"{name} ({extension})")
        await expect(shown.locator("code[data-domain]")).to_have_text(customer.domain)
        outcome.sip_passwords[extension] = await shown.locator("code[data-password]").inner_text()
        assert len(outcome.sip_passwords[extension]) >= 12
        row = page.locator(f'tr[data-extension="{extension}"]')
        await expect(row.get_by_label("Gespreksopname")).to_have_value("on-demand")
        await expect(row.get_by_label("Gespreksopname").locator("option:checked")).to_have_text(
            "Op verzoek"
        )
    # The first user is recorded always.
    always = page.locator(f'tr[data-extension="{customer.always}"]')
    await always.get_by_label("Gespreksopname").select_option(label="Altijd")
    await always.get_by_role("button", name="Opslaan").click()
    await expect(page.locator("p.notice")).to_have_text(
        f"Opgeslagen: gespreksopname van {customer.users[customer.always]}"
        f" ({customer.always}) altijd."
    )

    # Opname-instellingen: both on recording; the code, the retention, bulk download.
    await menu(page).get_by_role("link", name="Opname-instellingen").click()
    await expect(page.locator(f'tr[data-extension="{customer.always}"] .pill')).to_have_text(
        "Altijd"
    )
    await expect(page.locator(f'tr[data-extension="{customer.on_demand}"] .pill')).to_have_text(
        "Op verzoek"
    )
    await page.get_by_label("Functiecode").fill(customer.feature_code)
    await page.get_by_label("Bewaartermijn").focus()
    for key in customer.retention_keys:
        await page.keyboard.press(key)
    await expect(page.locator("#retention-value")).to_have_text(f"{customer.retention_days} dagen")
    await page.get_by_role("group", name="Bulkdownload").get_by_label("Aan").check()
    await page.get_by_role("button", name="Instellingen opslaan").click()
    await expect(page.locator("p.notice")).to_have_text(
        "Instellingen opgeslagen. Een andere bewaartermijn geldt alleen voor nieuwe opnames."
    )
    await expect(page.get_by_label("Functiecode")).to_have_value(customer.feature_code)
    await expect(page.get_by_label("Tijdzone")).to_have_value("Europe/Amsterdam")
    await expect(page.get_by_label("Taal", exact=True)).to_have_value("nl")


# -- 3. calls through callrec -----------------------------------------------------------


def phone_calling(
    server: CallrecServer, work_dir: Path, customer: Customer, caller: str, password: str,
    callee: str, pcap: Path | None = None,
) -> SippProcess:  # fmt: skip
    """SIPp as `caller` of `customer` (From its domain) calling `callee`, with digest,
    sending `pcap` (default: SIPp's A-law speech) and hanging up 2.5 s after it."""
    return start_sipp(
        UAC_DOMAIN,
        work_dir=work_dir,
        timeout_s=30,
        ready_wait_s=0,
        remote=server.sip_address,
        local_port=free_port(),
        media_port=free_port(even=True, span=4),
        callee=callee,
        caller=caller,
        user=caller,
        password=password,
        call_length_ms=2500,
        pcap=pcap,
        keys={"domain": customer.domain},
        extra=["-auth_uri", f"{callee}@{server.sip_address}"],
    )


async def everyone_calls(
    server: CallrecServer, tmp_path: Path, outcomes: dict[str, Outcome]
) -> None:
    """In each organisation at once: the `always` user calls DIALLED on the trunk; the
    on-demand user calls DIALLED_ON_DEMAND keying the other organisation's feature code,
    then their own; and the on-demand user calls the `always` colleague, whose phone
    registered first."""
    sipps: dict[str, SippProcess] = {}
    try:
        sipps["trunk"] = server.start_sipp_trunk(
            tmp_path / "trunk", calls=2 * len(CUSTOMERS), timeout_s=30
        )
        for customer in CUSTOMERS:
            passwords = outcomes[customer.slug].sip_passwords
            done = await asyncio.to_thread(
                register, server.sip_port, customer.always, passwords[customer.always],
                customer.domain,
            )  # fmt: skip
            assert done.response.status == 200, done.response
            assert done.realm == customer.domain
            sipps[f"{customer.slug} {customer.always} answering"] = start_sipp(
                "uas_echo.xml",
                work_dir=tmp_path / f"{customer.slug}-answer",
                timeout_s=30,
                local_port=done.port,
                media_port=free_port(even=True, span=4),
                rtp_echo=True,
            )
        for customer in CUSTOMERS:
            passwords = outcomes[customer.slug].sip_passwords
            other = next(c for c in CUSTOMERS if c is not customer)
            codes = tmp_path / f"{customer.slug}-codes.pcap"
            write_rtp_pcap(
                codes,
                duration_s=OWN_CODE_AT + 1.0,
                digits=[
                    (OTHER_CODE_AT, "*"), (OTHER_CODE_AT + 0.2, other.feature_code[1]),
                    (OWN_CODE_AT, "*"), (OWN_CODE_AT + 0.2, customer.feature_code[1]),
                ],
            )  # fmt: skip
            calls = (
                (customer.always, DIALLED, None),
                (customer.on_demand, DIALLED_ON_DEMAND, codes),
                (customer.on_demand, customer.always, None),
            )
            for caller, callee, pcap in calls:
                sipps[f"{customer.slug} {caller} -> {callee}"] = phone_calling(
                    server, tmp_path / f"{customer.slug}-{caller}-{callee}", customer, caller,
                    passwords[caller], callee, pcap,
                )  # fmt: skip
        results = await asyncio.gather(*(asyncio.to_thread(s.wait) for s in sipps.values()))
    finally:
        for sipp in sipps.values():
            sipp.stop(grace_s=1.0)
    for what, result in zip(sipps, results, strict=True):
        assert result.ok, f"{what}: {result.summary()}\n{server.log()[-3000:]}"


def finished_calls(server: CallrecServer, customer: Customer) -> Outcome | None:
    """The organisation's three calls and their finished recordings, once there."""
    calls = cli_json(server, "calls", "list", "--org", customer.slug)
    if len(calls) < 3 or not all(call.get("ended_at") for call in calls):
        return None
    recordings = cli_json(server, "recordings", "list", "--org", customer.slug)
    if len(recordings) < 3 or any(r["status"] == "recording" for r in recordings):
        return None
    return Outcome(calls=calls, recordings=recordings)


def on_demand_recording(outcome: Outcome) -> dict[str, Any]:
    call = next(c for c in outcome.calls if c["callee"]["extension"] == DIALLED_ON_DEMAND)
    return next(r for r in outcome.recordings if r["call_id"] == call["id"])


# -- 4. Rapporten, playing and the monthly ZIP --------------------------------------------


def amsterdam(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZONE)


async def admin_finds_plays_and_orders(
    page: Page, url: str, customer: Customer, outcome: Outcome, inbox: Inbox
) -> None:
    expect = playwright_api.expect
    outgoing = next(call for call in outcome.calls if call["callee"]["extension"] == DIALLED)
    internal = next(call for call in outcome.calls if call["direction"] == "internal")
    recording = next(r for r in outcome.recordings if r["call_id"] == outgoing["id"])

    await menu(page).get_by_role("link", name="Rapporten").click()
    await expect(page.locator("#call-count")).to_have_text(
        "3 gesprekken. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    internal_row = page.locator(f'tr[data-call-id="{internal["id"]}"]')
    for extension, name in customer.users.items():
        await expect(internal_row).to_contain_text(extension)
        await expect(internal_row).to_contain_text(name)
    # The on-demand recording shows what was recorded, in Amsterdam's time.
    on_demand = on_demand_recording(outcome)
    [span] = on_demand["spans"]
    assert amsterdam(span["start"]).isoformat(timespec="seconds") == span["start_local"]
    await expect(page.locator(f'[data-spans-of="{on_demand["id"]}"]')).to_contain_text(
        f"Opgenomen: {amsterdam(span['start']).strftime('%H:%M:%S')}"
    )

    # Found by part of the number dialled; shown at Amsterdam's time.
    await page.get_by_label("Naam of nummer").fill(FRAGMENT)
    await page.get_by_role("button", name="Filteren").click()
    await expect(page.locator("#call-count")).to_have_text(
        "1 gesprek. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    row = page.locator(f'tr[data-call-id="{outgoing["id"]}"]')
    await expect(row).to_contain_text(DIALLED)
    await expect(row).to_contain_text(customer.users[customer.always])
    await expect(row.locator("td.time")).to_have_text(
        amsterdam(outgoing["started_at"]).strftime("%d-%m-%Y %H:%M:%S")
    )
    await expect(internal_row).to_have_count(0)

    # Played: the browser fetches the audio (200 or 206) and the element plays.
    audio = row.get_by_label(f"De opname van gesprek {outgoing['id']} afspelen")
    async with page.expect_response(
        lambda response: f"/api/v1/recordings/{recording['id']}/audio" in response.url
    ) as answered:
        await audio.evaluate("el => el.play()")
    assert (await answered.value).status in (200, 206)
    await page.wait_for_function(
        "el => !el.paused && el.currentTime > 0", arg=await audio.element_handle(), timeout=10_000
    )
    await audio.evaluate("el => el.pause()")

    # Bulkdownload on Rapporten: this month's ZIP (Amsterdam's month).
    await page.locator(".title-row").get_by_role("link", name="Bulkdownload").click()
    await expect(page.get_by_role("heading", name="Bulkdownload")).to_be_visible()
    month = await page.get_by_label("Maand").input_value()
    assert month == amsterdam(outgoing["started_at"]).strftime("%Y-%m")
    await page.get_by_role("button", name="ZIP bestellen").click()
    await expect(page.locator("p.notice")).to_have_text(
        f"Export van {month} besteld; u krijgt een e-mail zodra hij klaar is."
    )
    messages = await wait_until_async(
        lambda: mails_to(inbox, customer.admin_email),
        timeout=20,
        what=f"the export mail to {customer.admin_email}",
        interval=0.1,
    )
    assert len(messages) == 1
    assert messages[0]["Subject"] == f"callrec: opnames van {month} klaar om te downloaden"
    body = messages[0].get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert f"De opnames van {month} staan klaar om te downloaden:" in text, text
    links = re.findall(rf"{re.escape(url)}/exports/download\?token=[A-Za-z0-9._~%-]+", text)
    assert len(links) == 1, text
    outcome.zip_link = links[0]

    # The link, opened logged in, gives the ZIP with exactly this organisation's files.
    answer = await page.request.get(outcome.zip_link)
    assert answer.status == 200, await answer.text()
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await answer.body())) as archive:
        assert archive.testzip() is None
        manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        expected = {str(r["id"]): r["sha256"] for r in outcome.recordings}
        assert {entry["id"]: entry["sha256"] for entry in manifest} == expected
        for entry in manifest:
            assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == entry["sha256"]
        assert set(archive.namelist()) == {"manifest.csv", *(e["file"] for e in manifest)}


async def operator_sees_the_usage(page: Page, outcomes: dict[str, Outcome]) -> None:
    """The operator's Organisaties page bills each organisation for its own: two users
    on recording, two recordings, its retention; never a call or a name."""
    expect = playwright_api.expect
    await page.reload()
    for customer in CUSTOMERS:
        row = page.locator("tr", has=page.get_by_role("link", name=customer.name))
        numbers = row.locator("td.num")
        await expect(numbers.nth(0)).to_have_text("2")  # users on recording
        await expect(numbers.nth(1)).to_have_text(str(len(outcomes[customer.slug].recordings)))
        await expect(numbers.nth(4)).to_have_text(str(customer.retention_days))
    text = await page.locator("main").inner_text()
    for customer in CUSTOMERS:
        for name in customer.users.values():
            assert name not in text, name


# -- 5. nothing of one organisation for the other ----------------------------------------


async def sees_nothing_of(
    page: Page, url: str, me: Customer, mine: Outcome, other: Customer, theirs: Outcome
) -> None:
    expect = playwright_api.expect
    # Its own settings, untouched by the other admin's.
    await menu(page).get_by_role("link", name="Opname-instellingen").click()
    await expect(page.get_by_label("Functiecode")).to_have_value(me.feature_code)
    await expect(page.locator("#retention-value")).to_have_text(f"{me.retention_days} dagen")
    # The same number dialled in both organisations: only its own call is found.
    await page.goto(f"{url}/reports?q={FRAGMENT}")
    await expect(page.locator("#call-count")).to_have_text(
        "1 gesprek. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    await menu(page).get_by_role("link", name="Rapporten").click()
    await expect(page.locator("#call-count")).to_have_text(
        "3 gesprekken. Tijden zijn in tijdzone Europe/Amsterdam."
    )
    for call in mine.calls:
        await expect(page.locator(f'tr[data-call-id="{call["id"]}"]')).to_have_count(1)
    for call in theirs.calls:
        await expect(page.locator(f'tr[data-call-id="{call["id"]}"]')).to_have_count(0)
    for page_name in ("Rapporten", "Gebruikers", "Bulkdownload"):
        await menu(page).get_by_role("link", name=page_name).click()
        await expect(page.locator("html")).to_have_attribute("lang", "nl")
        text = await page.locator("main").inner_text()
        for name in (other.name, other.admin, *other.users.values()):
            assert name not in text, f"{page_name} shows {name!r}"
    for recording in theirs.recordings:
        for kind in ("audio", "download"):
            answer = await page.request.get(f"{url}/api/v1/recordings/{recording['id']}/{kind}")
            assert answer.status in (403, 404), (kind, answer.status)
    answer = await page.request.get(theirs.zip_link)
    assert answer.status == 403, answer.status


async def test_an_operator_hosts_two_dutch_customers_who_follow_the_manual(
    server: CallrecServer, smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, _ = smtp
    url = server.portal_url
    outcomes = {customer.slug: Outcome() for customer in CUSTOMERS}
    async with chromium() as browser:
        operator = await new_tab(browser, DUTCH)
        await operator_adds_the_organisations(operator, url)
        tabs = {c.slug: await new_tab(browser, c.browser_language) for c in CUSTOMERS}
        await asyncio.gather(
            *(admin_sets_up(tabs[c.slug], url, c, outcomes[c.slug]) for c in CUSTOMERS)
        )
        # The B2BUA takes each organisation's settings from the store (it re-reads them
        # every 2 s and logs the change): calls made from now on use them.
        wanted = [
            f"now: feature code {c.feature_code}, retention {c.retention_days} days"
            for c in CUSTOMERS
        ]
        await wait_until_async(
            lambda: all(line in server.log() for line in wanted),
            timeout=10,
            what=f"the B2BUA taking {wanted}",
            interval=0.1,
        )

        await everyone_calls(server, tmp_path, outcomes)
        for customer in CUSTOMERS:
            found = await asyncio.to_thread(
                wait_until,
                functools.partial(finished_calls, server, customer),
                timeout=15,
                what=f"{customer.slug}'s three finished, recorded calls",
                interval=0.2,
            )
            outcome = outcomes[customer.slug]
            outcome.calls, outcome.recordings = found.calls, found.recordings
            parties = sorted(
                (c["direction"], c["caller"]["extension"], c["callee"]["extension"])
                for c in outcome.calls
            )
            assert parties == [
                ("internal", customer.on_demand, customer.always),
                ("outbound", customer.always, DIALLED),
                ("outbound", customer.on_demand, DIALLED_ON_DEMAND),
            ], parties
            for recording in outcome.recordings:
                assert recording["status"] == "complete", recording
                assert recording["retention_days"] == customer.retention_days, recording
            assert sorted(r["call_id"] for r in outcome.recordings) == sorted(
                c["id"] for c in outcome.calls
            )
            # The on-demand call is recorded from the organisation's own code on; the
            # other organisation's code, keyed first, did nothing.
            [(start, _)] = on_demand_recording(outcome)["segments"]
            assert abs(start - (OWN_CODE_AT + 0.2)) <= 0.15, (customer.slug, start)

        await asyncio.gather(
            *(
                admin_finds_plays_and_orders(tabs[c.slug], url, c, outcomes[c.slug], inbox)
                for c in CUSTOMERS
            )
        )
        for customer, other in ((BAKERY, DENTIST), (DENTIST, BAKERY)):
            await sees_nothing_of(
                tabs[customer.slug], url, customer, outcomes[customer.slug], other,
                outcomes[other.slug],
            )  # fmt: skip
        await operator_sees_the_usage(operator, outcomes)
