"""Languages, local time and number formats: `callrec.services.presentation`.

Times are stored in UTC and shown in the zone in force; Europe/Amsterdam changes to
summer time on 2026-03-29 (02:00 -> 03:00) and back on 2026-10-25 (03:00 -> 02:00).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from callrec.config import ConfigError, load_config
from callrec.policy import LANGUAGES, InvalidChoice, RecordingSettings, parse_timezone
from callrec.services.mailer import export_failed_mail, export_ready_mail
from callrec.services.presentation import (
    N_,
    Presentations,
    negotiate_language,
)
from portal.services import CATALOGUES

AMSTERDAM = "Europe/Amsterdam"
PRESENTATIONS = Presentations(CATALOGUES)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_a_1908_amsterdam_call_shows_1908_in_winter_and_in_summer() -> None:
    dutch = PRESENTATIONS.get("nl", AMSTERDAM)
    english = PRESENTATIONS.get("en", AMSTERDAM)
    # Winter (UTC+1): 18:08 UTC is 19:08 in Amsterdam.
    assert dutch.when(utc(2026, 3, 20, 18, 8, 5)) == "20-03-2026 19:08:05"
    assert english.when(utc(2026, 3, 20, 18, 8, 5)) == "2026-03-20 19:08:05"
    # Summer (UTC+2), the day after the change: 17:08 UTC is 19:08.
    assert dutch.when(utc(2026, 3, 30, 17, 8, 5)) == "30-03-2026 19:08:05"
    # UTC stays UTC.
    assert PRESENTATIONS.get("en", "UTC").when(utc(2026, 3, 30, 17, 8, 5)) == (
        "2026-03-30 17:08:05"
    )


def test_late_evening_calls_stay_on_their_local_day() -> None:
    zone = PRESENTATIONS.get("nl", AMSTERDAM)
    # 23:30 local on the last day of March (summer time) is 21:30 UTC the same day...
    late = utc(2026, 3, 31, 21, 30)
    assert zone.day(late) == "31-03-2026"
    # ...and 00:30 local on 1 November (winter time) is 23:30 UTC on 31 October.
    after_midnight = utc(2026, 10, 31, 23, 30)
    assert zone.day(after_midnight) == "01-11-2026"
    assert zone.this_month(after_midnight) == "2026-11"
    assert zone.file_stamp(after_midnight) == "2026-11-01_003000"


def test_day_bounds_are_local_and_23_or_25_hours_on_the_change_days() -> None:
    zone = PRESENTATIONS.get("en", AMSTERDAM)
    start, end = zone.day_bounds("2026-03-29")
    assert start == utc(2026, 3, 28, 23, 0)  # midnight CET
    assert end == utc(2026, 3, 29, 22, 0)  # next midnight, CEST
    assert end - start == 23 * 3600
    start, end = zone.day_bounds("2026-10-25")
    assert (start, end) == (utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0))
    assert end - start == 25 * 3600
    with pytest.raises(ValueError):
        zone.day_bounds("2026-02-30")
    with pytest.raises(ValueError):
        zone.day_bounds("29-03-2026")


def test_month_bounds_are_local_across_both_changes() -> None:
    zone = PRESENTATIONS.get("nl", AMSTERDAM)
    assert zone.month_bounds("2026-03") == (utc(2026, 2, 28, 23, 0), utc(2026, 3, 31, 22, 0))
    assert zone.month_bounds("2026-10") == (utc(2026, 9, 30, 22, 0), utc(2026, 10, 31, 23, 0))
    assert zone.month_bounds("2026-12") == (utc(2026, 11, 30, 23, 0), utc(2026, 12, 31, 23, 0))
    assert PRESENTATIONS.get("en", "UTC").month_bounds("2026-10") == (
        utc(2026, 10, 1),
        utc(2026, 11, 1),
    )
    with pytest.raises(ValueError):
        zone.month_bounds("2026-13")


def test_numbers_sizes_and_months_follow_the_locale() -> None:
    dutch = PRESENTATIONS.get("nl", "UTC")
    english = PRESENTATIONS.get("en", "UTC")
    assert dutch.number(1234567) == "1.234.567"
    assert english.number(1234567) == "1,234,567"
    assert dutch.size(1536) == "1,5 KB"
    assert english.size(1536) == "1.5 KB"
    assert dutch.size(512) == "512 B"
    assert dutch.month_name("2026-03") == "maart 2026"
    assert english.month_name("2026-03") == "March 2026"


def test_messages_are_translated_with_their_fields() -> None:
    dutch = PRESENTATIONS.get("nl", "UTC")
    english = PRESENTATIONS.get("en", "UTC")
    message = N_("user {extension} already exists", extension="201")
    assert str(message) == "user 201 already exists"
    assert english.text(message) == "user 201 already exists"
    assert dutch.text(message) == "gebruiker 201 bestaat al"
    assert dutch.gettext("Reports") == "Rapporten"
    assert dutch.gettext("{days} days") == "{days} dagen"
    one, many = "{shown} call.", "{shown} calls."  # not in the catalogue: English rules
    assert (dutch.ngettext(one, many, 1), dutch.ngettext(one, many, 2)) == (one, many)
    # A plain string was not written for translation: shown as it is.
    assert dutch.text("Reports") == "Reports"


def test_the_one_rule_user_language_over_the_settings_in_force() -> None:
    settings = RecordingSettings(language="nl", timezone=AMSTERDAM)
    assert PRESENTATIONS.for_settings(settings).language == "nl"
    assert PRESENTATIONS.for_settings(settings, "en").language == "en"
    assert PRESENTATIONS.for_settings(settings, "fr").language == "nl"  # not ours: ignored
    assert PRESENTATIONS.for_settings(settings).zone_name == AMSTERDAM
    # Without catalogues every language falls back to the English msgids.
    assert Presentations().get("nl", "UTC").gettext("Reports") == "Reports"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", "nl"),
        ("en-GB,en;q=0.9,nl;q=0.8", "en"),
        ("de-DE,de;q=0.9,nl;q=0.5,en;q=0.4", "nl"),
        ("en;q=0.3, nl-BE;q=0.8", "nl"),
        ("NL", "nl"),
        ("fr-FR,fr;q=0.9", None),
        ("nl;q=0, en", "en"),
        ("*", None),
        ("", None),
        (None, None),
        (";;;,,=q", None),
        ("nl;q=abc", None),
    ],
)
def test_accept_language_negotiation(header: str | None, expected: str | None) -> None:
    assert negotiate_language(header) == expected


def test_time_zones_are_checked_against_the_tz_database() -> None:
    assert parse_timezone(" Europe/Amsterdam ") == AMSTERDAM
    assert parse_timezone("UTC") == "UTC"
    for wrong in ("Mars/Olympus", "europe/amsterdam", "", "../etc/passwd", 5):
        with pytest.raises(InvalidChoice, match="IANA time zone"):
            parse_timezone(wrong)
    assert LANGUAGES == ("en", "nl")


def test_the_export_mail_in_dutch_and_in_english() -> None:
    expires = utc(2026, 10, 25, 12, 0)  # 13:00 in Amsterdam, after the change back
    dutch = export_ready_mail(
        "root@example.org",
        month="2026-10",
        link="https://portal.example/exports/download?token=x",
        files=1234,
        size=1_500_000,
        expires_at=expires,
        presentation=PRESENTATIONS.get("nl", AMSTERDAM),
    )
    assert dutch.subject == "callrec: opnames van 2026-10 klaar om te downloaden"
    assert "De opnames van 2026-10 staan klaar om te downloaden:" in dutch.body
    assert "1.234 opnames, 1,5 MB" in dutch.body
    assert "De link werkt tot 25 oktober 2026 13:00 CET" in dutch.body
    english = export_ready_mail(
        "root@example.org",
        month="2026-10",
        link="https://portal.example/exports/download?token=x",
        files=1,
        size=1_500_000,
        expires_at=expires,
    )
    assert english.subject == "callrec: recordings of 2026-10 ready to download"
    assert "1 recording, 1.5 MB" in english.body
    assert "The link works until 25 October 2026 12:00 UTC" in english.body
    failed = export_failed_mail(
        "root@example.org",
        month="2026-10",
        error="disk full",
        presentation=PRESENTATIONS.get("nl", AMSTERDAM),
    )
    assert failed.subject == "callrec: export van 2026-10 mislukt"
    assert failed.body.startswith("De export van de opnames van 2026-10 is mislukt:")


def test_the_config_gives_the_server_language_and_zone(tmp_path: Path) -> None:
    source = tmp_path / "callrec.toml"
    source.write_text('[portal]\nlanguage = "nl"\ntimezone = "Europe/Amsterdam"\n')
    config = load_config(source)
    assert (config.portal.language, config.portal.timezone) == ("nl", AMSTERDAM)
    settings = config.recording_settings
    assert (settings.language, settings.timezone) == ("nl", AMSTERDAM)
    # A stored setting overrides the config's, through the one rule.
    stored = settings.with_stored({"language": "en", "timezone": "UTC"})
    assert PRESENTATIONS.for_settings(stored).language == "en"
    defaults = load_config(None)
    assert (defaults.portal.language, defaults.portal.timezone) == ("en", "UTC")
    for line, key in (('language = "fr"', "language"), ('timezone = "CEST"', "timezone")):
        source.write_text(f"[portal]\n{line}\n")
        with pytest.raises(ConfigError, match=rf"\[portal\] {key}: "):
            load_config(source)
