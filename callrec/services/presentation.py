"""How callrec speaks to people: their language (gettext catalogues), their time zone, and
the locale's way of writing dates and numbers (Babel).

A `Presentation` is one reader's view: a language of `callrec.policy.LANGUAGES`, an IANA
zone and the catalogue of that language. Everything people read goes through one: the
portal's pages, the export mail, the names of files and ZIP entries, the date filter and
the export month. Storage stays in UTC; a Presentation converts at the edge (`local`,
`day_bounds`, `month_bounds`).

`Presentations` is the one place that decides which language and zone apply:
`for_settings(settings, user_language)` takes the settings in force (the stored ones over
the config's, `RecordingSettings.language` and `.timezone`) and a user's own language
over them. The settings are the reader's organisation's (its language and time zone;
the server's config gives the defaults of new organisations). `negotiate_language`
reads `Accept-Language` for pages shown before anyone logs in.

Messages are English msgids. Code that has no Presentation at hand marks a message with
`N_("... {name} ...", name=value)`, a `Text` translated where it is shown; code that has
one calls `presentation.gettext` / `ngettext` (both are extraction keywords of
babel.cfg). Catalogues are `<catalogue_dir>/<language>/LC_MESSAGES/messages.mo`; English
needs none.
"""

from __future__ import annotations

import functools
import gettext as gettext_module
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal

from callrec.config import Config
from callrec.policy import (
    DEFAULT_LANGUAGE,
    DEFAULT_TIMEZONE,
    LANGUAGES,
    RecordingSettings,
)
from storage.database import Store
from storage.models import OrgScope

__all__ = [
    "DOMAIN",
    "LANGUAGE_NAMES",
    "N_",
    "Presentation",
    "Presentations",
    "Text",
    "negotiate_language",
]

DOMAIN: Final = "messages"
# Each language named in itself, for the language choices.
LANGUAGE_NAMES: Final = {"en": "English", "nl": "Nederlands"}
# How a date and a time of day are written. English keeps ISO 8601 (what the portal has
# always shown, and unambiguous where US and European day orders meet); other languages
# use their locale's short date and medium time from Babel's CLDR data.
_DATE_FORMAT: Final = {"en": "yyyy-MM-dd"}
_TIME_FORMAT: Final = {"en": "HH:mm:ss"}
_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# One Accept-Language element: a language range and an optional weight.
_LANGUAGE_RANGE = re.compile(
    r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*"
)


@dataclass(frozen=True)
class Text:
    """A message for people, translated where it is shown: an English `msgid` with
    `{named}` fields and their values. str() is the English text."""

    msgid: str
    values: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.msgid.format(**self.values) if self.values else self.msgid


def N_(msgid: str, **values: object) -> Text:
    """Mark `msgid` for translation where it is shown (see `Presentation.text`)."""
    return Text(msgid, values)


@dataclass(frozen=True)
class Presentation:
    """One reader's language, time zone and catalogue."""

    language: str
    timezone: ZoneInfo
    translations: gettext_module.NullTranslations = field(
        default_factory=gettext_module.NullTranslations, compare=False
    )

    # -- words ---------------------------------------------------------------------------

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return self.translations.ngettext(singular, plural, count)

    def text(self, message: Text | str) -> str:
        """A marked message in this language, its fields filled in (a plain str is shown
        as it is: it was not written for translation)."""
        if isinstance(message, str):
            return message
        translated = self.gettext(message.msgid)
        return translated.format(**message.values) if message.values else translated

    @functools.cached_property
    def locale(self) -> Locale:
        return Locale.parse(self.language)

    # -- times ---------------------------------------------------------------------------

    @property
    def zone_name(self) -> str:
        """The IANA name of the zone ("Europe/Amsterdam")."""
        return self.timezone.key

    def local(self, timestamp: float) -> datetime:
        """A stored UTC timestamp as an aware datetime in this zone."""
        return datetime.fromtimestamp(timestamp, tz=self.timezone)

    def when(self, timestamp: float | None) -> str:
        """Date and time of day, in this zone, as this language writes them."""
        if timestamp is None:
            return ""
        moment = self.local(timestamp)
        return f"{self._date(moment)} {self._time(moment)}"

    def time_of_day(self, timestamp: float | None) -> str:
        """The time of day alone, in this zone, as this language writes it."""
        if timestamp is None:
            return ""
        return self._time(self.local(timestamp))

    def day(self, timestamp: float | None) -> str:
        if timestamp is None:
            return ""
        return self._date(self.local(timestamp))

    def month_name(self, month: str) -> str:
        """ "2026-03" as "March 2026" / "maart 2026" (the text unchanged if it is no month)."""
        match = _MONTH.fullmatch(month)
        if match is None:
            return month
        first = date(int(match.group(1)), int(match.group(2)), 1)
        return format_date(first, "LLLL y", locale=self.locale)

    def file_stamp(self, timestamp: float) -> str:
        """`YYYY-MM-DD_HHMMSS` in this zone: the start of a file or ZIP entry name."""
        return self.local(timestamp).strftime("%Y-%m-%d_%H%M%S")

    def zip_time(self, timestamp: float) -> tuple[int, int, int, int, int, int]:
        """A ZIP entry's date and time (local time, as ZIP readers show it; ZIP dates
        start in 1980)."""
        moment = self.local(timestamp)
        if moment.year < 1980:
            return (1980, 1, 1, 0, 0, 0)
        return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)

    def day_bounds(self, day: str) -> tuple[float, float]:
        """[start, end) in UTC seconds of local calendar day "YYYY-MM-DD" (23 or 25 hours
        long on the days the clocks change); ValueError if it is no date."""
        if not _DAY.fullmatch(day):
            raise ValueError(f"not a date YYYY-MM-DD: {day!r}")
        first = date.fromisoformat(day)
        return self._midnight(first), self._midnight(first + timedelta(days=1))

    def month_bounds(self, month: str) -> tuple[float, float]:
        """[start, end) in UTC seconds of local calendar month "YYYY-MM"; ValueError if it
        is no month."""
        match = _MONTH.fullmatch(month)
        if match is None:
            raise ValueError(f"not a month YYYY-MM: {month!r}")
        year, number = int(match.group(1)), int(match.group(2))
        following = date(year + (number == 12), number % 12 + 1, 1)
        return self._midnight(date(year, number, 1)), self._midnight(following)

    def this_month(self, timestamp: float) -> str:
        """The local "YYYY-MM" holding `timestamp`."""
        moment = self.local(timestamp)
        return f"{moment.year:04d}-{moment.month:02d}"

    def _midnight(self, day: date) -> float:
        # No zone skips or repeats midnight on the days callrec supports; fold=0 takes
        # the first if one ever does.
        return datetime(day.year, day.month, day.day, tzinfo=self.timezone).timestamp()

    def _date(self, moment: datetime) -> str:
        return format_date(moment, _DATE_FORMAT.get(self.language, "short"), locale=self.locale)

    def _time(self, moment: datetime) -> str:
        pattern = _TIME_FORMAT.get(self.language, "medium")
        return format_time(moment, pattern, tzinfo=self.timezone, locale=self.locale)

    def datetime_long(self, timestamp: float) -> str:
        """Date, time and zone for a mail ("1 mei 2024 14:00 CEST")."""
        return format_datetime(
            self.local(timestamp), "d MMMM y HH:mm zzz", tzinfo=self.timezone, locale=self.locale
        )

    # -- numbers -------------------------------------------------------------------------

    def number(self, value: float, decimals: int = 0) -> str:
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
        return format_decimal(value, pattern, locale=self.locale)

    def size(self, count: int | None) -> str:
        """Bytes for people: "512 B", "1.5 MB" / "1,5 MB"."""
        if count is None:
            return ""
        value = float(count)
        for unit in ("B", "KB", "MB", "GB"):
            if value < 1024 or unit == "GB":
                return f"{self.number(value, 0 if unit == 'B' else 1)} {unit}"
            value /= 1024
        return f"{self.number(value, 1)} GB"  # pragma: no cover (the loop returns)


class Presentations:
    """Builds Presentations from the settings in force, with each language's catalogue
    read once from `catalogue_dir` (None: English only, every language falls back to
    the msgids)."""

    def __init__(self, catalogue_dir: Path | None = None) -> None:
        self.catalogue_dir = catalogue_dir
        self._translations: dict[str, gettext_module.NullTranslations] = {}
        self._zones: dict[str, ZoneInfo] = {}

    def get(self, language: str, timezone: str) -> Presentation:
        """The Presentation of `language` in `timezone` (unknown ones fall back to the
        defaults: the settings were checked by `callrec.policy` before they got here)."""
        if language not in LANGUAGES:
            language = DEFAULT_LANGUAGE
        return Presentation(language, self._zone(timezone), self.translations(language))

    def for_settings(
        self, settings: RecordingSettings, user_language: str | None = None
    ) -> Presentation:
        """The one rule: a user's own language over the language in force; the zone in
        force."""
        language = user_language if user_language in LANGUAGES else settings.language
        return self.get(language, settings.timezone)

    async def in_force(
        self, store: Store, config: Config, org: OrgScope, user_language: str | None = None
    ) -> Presentation:
        """`for_settings` on `org`'s settings in force: its stored ones over the config's."""
        settings = config.recording_settings.with_stored(await store.org_settings(org))
        return self.for_settings(settings, user_language)

    def translations(self, language: str) -> gettext_module.NullTranslations:
        if language not in self._translations:
            if language == DEFAULT_LANGUAGE or self.catalogue_dir is None:
                catalogue = gettext_module.NullTranslations()
            else:
                catalogue = gettext_module.translation(
                    DOMAIN, self.catalogue_dir, languages=[language], fallback=True
                )
            self._translations[language] = catalogue
        return self._translations[language]

    def _zone(self, name: str) -> ZoneInfo:
        if name not in self._zones:
            try:
                self._zones[name] = ZoneInfo(name)
            except (ValueError, OSError):
                self._zones[name] = ZoneInfo(DEFAULT_TIMEZONE)
        return self._zones[name]


def negotiate_language(header: str | None, available: tuple[str, ...] = LANGUAGES) -> str | None:
    """The language of `available` an `Accept-Language` header prefers most (RFC 9110
    12.5.4: by q-value, then order; "nl-BE" matches "nl"), or None if it names none."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header[:1000].split(",")):
        match = _LANGUAGE_RANGE.fullmatch(part)
        if match is None:
            continue
        try:
            weight = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if weight <= 0:
            continue
        ranked.append((-weight, position, match.group(1).lower()))
    for _, _, tag in sorted(ranked):
        primary = tag.split("-", 1)[0]
        if primary in available:
            return primary
        if tag == "*":
            return None  # anything will do: the server's language
    return None
