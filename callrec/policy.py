"""callrec's product rules, in one leaf every layer may import.

Everything that decides what callrec allows lives here, and only here: the recording
modes and the mode of a new user; the on-demand feature code (`*` plus one digit);
retention (30..365 days, the portal slider's steps, the 180 days a bulk download needs,
the 7-day export link); how an internal call between two users' modes is recorded
(`internal_call_recording`); the choices of channels, format, announcement and paused
audio; the languages people are addressed in and the time zone they read times in; the
organisation-wide settings the portal and the CLI may change; and `RecordingSettings`,
the settings in force.

This module does no I/O (beyond the time zone names of the system's tz database, read
once) and imports nothing of the project (an import-linter contract
keeps it so). Every refusal is a `PolicyError`, a ValueError that names the setting
(`field`) and says in one line what is allowed.
"""

from __future__ import annotations

import enum
import functools
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any, Final

__all__ = [
    "ANNOUNCEMENTS",
    "ANNOUNCEMENT_FILE",
    "ANNOUNCEMENT_UPLOADED",
    "BULK_DOWNLOAD_MIN_RETENTION_DAYS",
    "CALLEE",
    "CALLER",
    "CHANNELS",
    "DEFAULT_FEATURE_CODE",
    "DEFAULT_LANGUAGE",
    "DEFAULT_RECORDING_MODE",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_TIMEZONE",
    "EXPORT_LINK_LIFETIME_S",
    "FEATURE_CODE_PATTERN",
    "FORMATS",
    "LANGUAGES",
    "PAUSED_MODES",
    "RECORDING_MODES",
    "RETENTION_MAX_DAYS",
    "RETENTION_MIN_DAYS",
    "RETENTION_SLIDER_DAYS",
    "SETTINGS_KEYS",
    "FeatureCode",
    "InternalCallRecording",
    "InvalidChoice",
    "InvalidFeatureCode",
    "InvalidRetention",
    "PolicyError",
    "RecordingMode",
    "RecordingSettings",
    "SettingKey",
    "UnknownSetting",
    "bulk_download_allowed",
    "check_settings",
    "internal_call_mode",
    "internal_call_recording",
    "parse_choice",
    "parse_language",
    "parse_retention_days",
    "parse_setting",
    "parse_switch",
    "parse_timezone",
]


class PolicyError(ValueError):
    """A value breaks a product rule. `field` names the setting; str() is one line a
    person can act on (what was given and what is allowed)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = str(field)
        self.message = message


class InvalidFeatureCode(PolicyError):
    """The feature code is not `*` followed by one digit."""


class InvalidRetention(PolicyError):
    """The retention is not a whole number of days within the bounds."""


class InvalidChoice(PolicyError):
    """A value is not one of the fixed choices of its setting."""


class UnknownSetting(PolicyError):
    """A setting the portal and the CLI cannot change (or that does not exist)."""


# -- the settings the portal and the CLI change ------------------------------------------


class SettingKey(enum.StrEnum):
    """Organisation-wide settings kept in the store; each overrides its config default."""

    FEATURE_CODE = "feature_code"
    RETENTION_DAYS = "retention_days"
    ANNOUNCEMENT = "announcement"
    CHANNELS = "channels"
    LANGUAGE = "language"
    TIMEZONE = "timezone"
    # Whether the organisation's admins may order a month's ZIP ("on"/"off"); "on" only
    # with a retention of BULK_DOWNLOAD_MIN_RETENTION_DAYS or more (`check_settings`).
    BULK_DOWNLOAD = "bulk_download"


SETTINGS_KEYS: Final[tuple[str, ...]] = tuple(key.value for key in SettingKey)


# -- recording modes -------------------------------------------------------------------


class RecordingMode(enum.StrEnum):
    """Whether a user's calls are recorded: never, always, or when they dial the code."""

    NEVER = "never"
    ALWAYS = "always"
    ON_DEMAND = "on-demand"

    @classmethod
    def parse(cls, value: object) -> RecordingMode:
        """The mode named by `value`; raises InvalidChoice."""
        return cls(parse_choice("mode", value, RECORDING_MODES))

    @property
    def records(self) -> bool:
        """A call of this user gets a recording session (started at once or on demand)."""
        return self is not RecordingMode.NEVER


RECORDING_MODES: Final[tuple[str, ...]] = tuple(mode.value for mode in RecordingMode)
# A new user records only when they ask for it.
DEFAULT_RECORDING_MODE: Final = RecordingMode.ON_DEMAND


# -- internal calls (a user calling another user of the same organisation) -------------

CALLER: Final = "caller"
CALLEE: Final = "callee"


@dataclass(frozen=True)
class InternalCallRecording:
    """How an internal call is recorded, from both parties' modes
    (`internal_call_recording`).

    `mode`: the call's mode. `owner`: the party whose mode decided it (`CALLER` or
    `CALLEE`; the caller on a tie, None for `never`): the recording is filed under that
    user's extension, while both parties see it as a call they took part in.
    `feature_code_parties`: whose phones' feature code toggles an on-demand recording
    (the on-demand parties; empty unless `mode` is on-demand).
    """

    mode: RecordingMode
    owner: str | None
    feature_code_parties: tuple[str, ...]


def internal_call_recording(caller_mode: object, callee_mode: object) -> InternalCallRecording:
    """The recording of an internal call between users of these modes.

    The rule: a party's mode is what they ask of every call they take part in, so the
    strongest mode of the two wins. `always` if either party is `always` (recorded from
    the answer, the feature code toggles nothing); else `on-demand` if either is
    `on-demand`, and then the feature code works from each on-demand party's phone (a
    `never` party cannot start a recording, just as they cannot on a trunk call); else
    `never`. Raises InvalidChoice for a value that is not a mode.
    """
    modes = {CALLER: RecordingMode.parse(caller_mode), CALLEE: RecordingMode.parse(callee_mode)}
    for mode in (RecordingMode.ALWAYS, RecordingMode.ON_DEMAND):
        parties = tuple(party for party, party_mode in modes.items() if party_mode is mode)
        if parties:
            toggling = parties if mode is RecordingMode.ON_DEMAND else ()
            return InternalCallRecording(mode, parties[0], toggling)
    return InternalCallRecording(RecordingMode.NEVER, None, ())


def internal_call_mode(caller_mode: object, callee_mode: object) -> RecordingMode:
    """The recording mode of an internal call (`internal_call_recording`'s rule)."""
    return internal_call_recording(caller_mode, callee_mode).mode


# -- the on-demand feature code ---------------------------------------------------------

_CODE_DIGITS = "0123456789"
# The feature code as a regular expression, for JSON schemas and HTML forms.
FEATURE_CODE_PATTERN: Final = r"\*[0-9]"
_FEATURE_CODE = re.compile(FEATURE_CODE_PATTERN)


@dataclass(frozen=True)
class FeatureCode:
    """The on-demand feature code: `*` then one digit 0-9 (str() gives e.g. "*1").

    Only `*` plus a digit can be told apart from the numbers people dial during a call
    (menus, PINs), and every DTMF method carries it. Build one with `parse`.
    """

    digit: str

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in _CODE_DIGITS:
            raise InvalidFeatureCode(
                SettingKey.FEATURE_CODE, _feature_code_message(f"*{self.digit}")
            )

    @classmethod
    def parse(cls, value: object) -> FeatureCode:
        """The feature code in `value` ("*1"; surrounding blanks ignored); a FeatureCode
        is returned as is. Raises InvalidFeatureCode for anything else."""
        if isinstance(value, FeatureCode):
            return value
        text = value.strip() if isinstance(value, str) else None
        if text is None or not _FEATURE_CODE.fullmatch(text):
            raise InvalidFeatureCode(SettingKey.FEATURE_CODE, _feature_code_message(value))
        return cls(text[1])

    @property
    def text(self) -> str:
        return f"*{self.digit}"

    def __str__(self) -> str:
        return self.text


def _feature_code_message(value: object) -> str:
    return f"the feature code must be * followed by one digit 0-9 (e.g. *1), got {value!r}"


DEFAULT_FEATURE_CODE: Final = FeatureCode("1")


# -- retention -------------------------------------------------------------------------

RETENTION_MIN_DAYS: Final = 30
RETENTION_MAX_DAYS: Final = 365
DEFAULT_RETENTION_DAYS: Final = 90
# The portal slider: 30..120 one day at a time, then the two long retentions. Any whole
# number of days within the bounds is accepted (the API and the CLI take any).
RETENTION_SLIDER_DAYS: Final[tuple[int, ...]] = (
    *range(RETENTION_MIN_DAYS, 121),
    180,
    RETENTION_MAX_DAYS,
)
# A month's ZIP of everyone's recordings is offered only to organisations that keep
# recordings at least this long.
BULK_DOWNLOAD_MIN_RETENTION_DAYS: Final = 180
# A ready export ZIP, and the signed link mailed for it, live this long.
EXPORT_LINK_LIFETIME_S: Final = 7 * 86400.0


def parse_retention_days(value: object) -> int:
    """The retention in days if `value` (an int, or a string of ASCII digits) is a whole
    number of days within the bounds; raises InvalidRetention."""
    days: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        days = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        days = int(value.strip())
    if days is None or not RETENTION_MIN_DAYS <= days <= RETENTION_MAX_DAYS:
        raise InvalidRetention(
            SettingKey.RETENTION_DAYS,
            f"invalid retention {value!r}: expected whole days from "
            f"{RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS}",
        )
    return days


def bulk_download_allowed(retention_days: int) -> bool:
    """Whether an organisation keeping recordings this long may switch bulk download on."""
    return retention_days >= BULK_DOWNLOAD_MIN_RETENTION_DAYS


_SWITCH_ON = ("on", "true", "yes", "1")
_SWITCH_OFF = ("off", "false", "no", "0")


def parse_switch(field: str, value: object) -> str:
    """ "on" or "off" from a switch's value (on/off, true/false, yes/no, 1/0, a bool);
    raises InvalidChoice."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _SWITCH_ON:
        return "on"
    if text in _SWITCH_OFF:
        return "off"
    raise InvalidChoice(field, f"{field} must be 'on' or 'off', got {value!r}")


def check_settings(settings: RecordingSettings) -> None:
    """The rules between settings, for a set of settings about to be stored: bulk
    download needs a retention of BULK_DOWNLOAD_MIN_RETENTION_DAYS or more (switching it
    on with less, or lowering the retention while it is on, is refused). Raises
    InvalidChoice naming the setting."""
    if settings.bulk_download and not bulk_download_allowed(settings.retention_days):
        raise InvalidChoice(
            SettingKey.BULK_DOWNLOAD,
            f"bulk download needs a retention of {BULK_DOWNLOAD_MIN_RETENTION_DAYS} days or"
            f" more (it would be {settings.retention_days}); switch it off first or keep"
            " recordings longer",
        )


# -- fixed choices ---------------------------------------------------------------------

CHANNELS: Final = ("mono", "stereo")
FORMATS: Final = ("wav", "flac")
# The announcement keywords; the config file may also name a WAV file. "default" is the
# shipped spoken notice in the language in force.
ANNOUNCEMENTS: Final = ("default", "beep", "none")
# The stored announcement that means "the WAV file the config names": choosing it in the
# portal or the API goes back to the config's file, and a path never leaves the server.
ANNOUNCEMENT_FILE: Final = "file"
# The stored announcement that means "the organisation's own notice, uploaded in the
# portal" (kept per organisation in the storage folder; the recording manager gives the
# media worker its file).
ANNOUNCEMENT_UPLOADED: Final = "uploaded"
# What an on-demand recording holds while paused: nothing, or silence of the same length.
PAUSED_MODES: Final = ("skip", "silence")


# -- language and time zone --------------------------------------------------------------

# The languages of the portal, the mails and the shipped notice (ISO 639-1 codes).
LANGUAGES: Final = ("en", "nl")
DEFAULT_LANGUAGE: Final = "en"
# Times are stored in UTC and shown in this IANA zone unless a setting says otherwise.
DEFAULT_TIMEZONE: Final = "UTC"


def parse_language(value: object, field: str = "language") -> str:
    """One of LANGUAGES (case and blanks ignored); raises InvalidChoice."""
    text = value.strip().lower() if isinstance(value, str) else value
    return parse_choice(field, text, LANGUAGES)


@functools.cache
def _timezone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(value: object, field: str = "timezone") -> str:
    """An IANA time zone name of the system's tz database ("Europe/Amsterdam", "UTC");
    raises InvalidChoice."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or text not in _timezone_names():
        raise InvalidChoice(
            field, f"{field} must be an IANA time zone such as 'Europe/Amsterdam', got {value!r}"
        )
    return text


def parse_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; raises InvalidChoice naming `field`."""
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(repr(choice) for choice in choices)
        raise InvalidChoice(field, f"{field} must be {options}, got {value!r}")
    return value


# -- a setting's stored text, and the settings in force ----------------------------------


def parse_setting(key: str, value: object) -> str:
    """The text to store for setting `key` given `value`; raises a PolicyError
    (UnknownSetting for a key that cannot be set)."""
    if key == SettingKey.FEATURE_CODE:
        return FeatureCode.parse(value).text
    if key == SettingKey.RETENTION_DAYS:
        return str(parse_retention_days(value))
    if key == SettingKey.ANNOUNCEMENT:
        return parse_choice(key, value, (*ANNOUNCEMENTS, ANNOUNCEMENT_FILE, ANNOUNCEMENT_UPLOADED))
    if key == SettingKey.CHANNELS:
        return parse_choice(key, value, CHANNELS)
    if key == SettingKey.LANGUAGE:
        return parse_language(value, key)
    if key == SettingKey.TIMEZONE:
        return parse_timezone(value, key)
    if key == SettingKey.BULK_DOWNLOAD:
        return parse_switch(key, value)
    raise UnknownSetting(
        key, f"unknown setting {key!r} (expected one of {', '.join(SETTINGS_KEYS)})"
    )


@dataclass(frozen=True)
class RecordingSettings:
    """The recording settings in force: the config's values, with the stored settings
    (`SettingKey`) over them. `announcement` is a keyword or, from the config file
    only, the absolute path of a WAV file; a stored ANNOUNCEMENT_FILE keeps the
    config's value. `language` and `timezone` are how people are addressed and what
    time they read (the spoken notice is in `language` too)."""

    feature_code: FeatureCode = DEFAULT_FEATURE_CODE
    retention_days: int = DEFAULT_RETENTION_DAYS
    announcement: str = "default"
    channels: str = "mono"
    format: str = "wav"
    paused: str = "skip"
    swallow_feature_code: bool = False
    language: str = DEFAULT_LANGUAGE
    timezone: str = DEFAULT_TIMEZONE
    # The switch as stored; `bulk_download_enabled` says whether it applies.
    bulk_download: bool = False

    @property
    def bulk_download_enabled(self) -> bool:
        """Bulk download is on and the retention allows it."""
        return self.bulk_download and bulk_download_allowed(self.retention_days)

    @property
    def announcement_file(self) -> str | None:
        """The name (not the path) of the WAV file the config names, if it does."""
        if self.announcement in ANNOUNCEMENTS or self.announcement == ANNOUNCEMENT_UPLOADED:
            return None
        return PurePath(self.announcement).name

    def with_stored(
        self,
        stored: Mapping[str, str],
        on_invalid: Callable[[PolicyError], None] | None = None,
    ) -> RecordingSettings:
        """These settings with the stored ones over them. A stored value that breaks a
        rule (written by an older version, or by hand) is skipped and handed to
        `on_invalid`; keys that are not settings are ignored."""
        changes: dict[str, Any] = {}
        for key in SettingKey:
            if key not in stored:
                continue
            try:
                text = parse_setting(key, stored[key])
            except PolicyError as exc:
                if on_invalid is not None:
                    on_invalid(exc)
                continue
            if key == SettingKey.ANNOUNCEMENT and text == ANNOUNCEMENT_FILE:
                continue  # the config's announcement (its file, if it names one)
            if key == SettingKey.FEATURE_CODE:
                changes[key] = FeatureCode.parse(text)
            elif key == SettingKey.RETENTION_DAYS:
                changes[key] = int(text)
            elif key == SettingKey.BULK_DOWNLOAD:
                changes[key] = text == "on"
            else:
                changes[key] = text
        return replace(self, **changes)

    def settable(self) -> dict[str, str | int]:
        """The settings the portal and the CLI may change, as JSON-ready values (a
        config's announcement file shows as ANNOUNCEMENT_FILE, never as its path)."""
        announcement = self.announcement if self.announcement_file is None else ANNOUNCEMENT_FILE
        return {
            SettingKey.FEATURE_CODE.value: self.feature_code.text,
            SettingKey.RETENTION_DAYS.value: self.retention_days,
            SettingKey.ANNOUNCEMENT.value: announcement,
            SettingKey.CHANNELS.value: self.channels,
            SettingKey.LANGUAGE.value: self.language,
            SettingKey.TIMEZONE.value: self.timezone,
            SettingKey.BULK_DOWNLOAD.value: "on" if self.bulk_download else "off",
        }
