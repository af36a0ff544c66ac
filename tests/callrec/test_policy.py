"""The product rules: feature code, retention, modes, choices and the settings in force."""

from __future__ import annotations

import contextlib
import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from callrec.policy import (
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    DEFAULT_FEATURE_CODE,
    DEFAULT_RECORDING_MODE,
    RECORDING_MODES,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    RETENTION_SLIDER_DAYS,
    SETTINGS_KEYS,
    FeatureCode,
    InvalidChoice,
    InvalidFeatureCode,
    InvalidRetention,
    PolicyError,
    RecordingMode,
    RecordingSettings,
    UnknownSetting,
    bulk_download_allowed,
    check_settings,
    parse_retention_days,
    parse_setting,
)

# What the README promises: "*" plus one digit.
README_CODE = re.compile(r"\*[0-9]")

# -- the feature code ------------------------------------------------------------------


@given(st.sampled_from(string.digits))
def test_every_star_digit_code_parses_and_prints_back(digit: str) -> None:
    code = FeatureCode.parse(f"*{digit}")
    assert (code.digit, code.text, str(code)) == (digit, f"*{digit}", f"*{digit}")
    assert FeatureCode.parse(code) is code
    assert FeatureCode.parse(f"  *{digit}\t") == code


@given(st.text(alphabet="*#0123456789ABCDabcd \u0663\u00b2", max_size=5))
@example("#5")
@example("*12")
@example("**")
@example("*\u0663")  # an Arabic-Indic three: a digit to Python, not a DTMF key
@example("*\u00b2")
def test_feature_code_accepts_exactly_star_and_one_ascii_digit(text: str) -> None:
    if README_CODE.fullmatch(text.strip()):
        assert FeatureCode.parse(text).text == text.strip()
        return
    with pytest.raises(InvalidFeatureCode) as refused:
        FeatureCode.parse(text)
    error = refused.value
    assert isinstance(error, ValueError) and error.field == "feature_code"
    message = str(error)
    assert message.startswith("the feature code must be * followed by one digit 0-9 (e.g. *1)")
    assert repr(text) in message and "\n" not in message


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text())))
def test_feature_code_refuses_non_text(value: object) -> None:
    with pytest.raises(InvalidFeatureCode):
        FeatureCode.parse(value)


def test_the_code_cannot_be_built_invalid_and_the_default_is_star_one() -> None:
    assert DEFAULT_FEATURE_CODE.text == "*1"
    for digit in ("#", "12", "", "a"):
        with pytest.raises(InvalidFeatureCode):
            FeatureCode(digit)


# -- retention -------------------------------------------------------------------------


@given(st.integers(min_value=-1000, max_value=5000))
def test_retention_accepts_whole_days_within_the_bounds(days: int) -> None:
    inside = RETENTION_MIN_DAYS <= days <= RETENTION_MAX_DAYS
    for value in (days, str(days), f" {days} "):
        if inside:
            assert parse_retention_days(value) == days
        else:
            with pytest.raises(InvalidRetention, match="expected whole days from 30 to 365"):
                parse_retention_days(value)


@given(
    st.one_of(
        st.booleans(),
        st.floats(),
        st.none(),
        st.text().filter(lambda t: not (t.strip().isascii() and t.strip().isdigit())),
    )
)
@example("90.0")
@example("1e2")
@example("\u0669\u0660")  # Arabic-Indic 90: str.isdigit() but not ASCII
@example(True)
def test_retention_refuses_anything_but_whole_days(value: object) -> None:
    with pytest.raises(InvalidRetention) as refused:
        parse_retention_days(value)
    assert refused.value.field == "retention_days"
    assert "\n" not in str(refused.value)


def test_retention_rules() -> None:
    assert (RETENTION_MIN_DAYS, RETENTION_MAX_DAYS) == (30, 365)
    # The portal slider: 30..120 by one day, then 180 and 365.
    assert (*range(30, 121), 180, 365) == RETENTION_SLIDER_DAYS
    assert all(parse_retention_days(days) == days for days in RETENTION_SLIDER_DAYS)
    assert BULK_DOWNLOAD_MIN_RETENTION_DAYS == 180
    assert not bulk_download_allowed(179) and bulk_download_allowed(180)
    assert bulk_download_allowed(365)


# -- modes, choices, settings ----------------------------------------------------------


def test_modes() -> None:
    assert RECORDING_MODES == ("never", "always", "on-demand")
    assert DEFAULT_RECORDING_MODE is RecordingMode.ON_DEMAND
    assert RecordingMode.parse("always") is RecordingMode.ALWAYS
    assert [mode.records for mode in RecordingMode] == [False, True, True]
    with pytest.raises(InvalidChoice, match="mode must be 'never' or 'always' or 'on-demand'"):
        RecordingMode.parse("sometimes")


def test_parse_setting_stores_canonical_text() -> None:
    assert SETTINGS_KEYS == (
        "feature_code",
        "retention_days",
        "announcement",
        "channels",
        "language",
        "timezone",
        "bulk_download",
    )
    assert parse_setting("feature_code", " *4 ") == "*4"
    assert parse_setting("bulk_download", "ON") == "on"
    assert parse_setting("bulk_download", False) == "off"
    assert parse_setting("retention_days", 180) == "180"
    assert parse_setting("retention_days", "07" + "0") == "70"
    assert parse_setting("announcement", "beep") == "beep"
    assert parse_setting("channels", "stereo") == "stereo"
    with pytest.raises(UnknownSetting) as unknown:
        parse_setting("format", "flac")
    assert unknown.value.field == "format"
    assert "expected one of feature_code, retention_days" in str(unknown.value)
    with pytest.raises(InvalidChoice, match="announcement must be"):
        parse_setting("announcement", "/tmp/notice.wav")  # files only from the config file


@given(
    st.dictionaries(
        st.sampled_from([*SETTINGS_KEYS, "portal_secret", "other"]),
        st.one_of(st.text(max_size=6), st.sampled_from(["*3", "200", "beep", "stereo", "#5"])),
    )
)
def test_stored_settings_override_only_with_valid_values(stored: dict[str, str]) -> None:
    defaults = RecordingSettings(format="flac", paused="silence", swallow_feature_code=True)
    rejected: list[PolicyError] = []
    settings = defaults.with_stored(stored, on_invalid=rejected.append)
    valid: dict[str, str] = {}
    for key in SETTINGS_KEYS:
        if key in stored:
            with contextlib.suppress(PolicyError):
                valid[key] = parse_setting(key, stored[key])
    assert sorted(error.field for error in rejected) == sorted(
        key for key in SETTINGS_KEYS if key in stored and key not in valid
    )
    shown = settings.settable()
    for key in SETTINGS_KEYS:
        expected = valid.get(key, str(defaults.settable()[key]))
        if key == "announcement" and expected == "file":
            expected = str(defaults.settable()[key])  # "file": the config's announcement
        assert str(shown[key]) == expected
    # What the portal cannot set stays as the config says.
    assert (settings.format, settings.paused, settings.swallow_feature_code) == (
        "flac",
        "silence",
        True,
    )
    assert isinstance(settings.feature_code, FeatureCode)
    assert isinstance(settings.retention_days, int)


def test_bulk_download_needs_the_retention_threshold() -> None:
    """The switch is a stored setting; the rule between it and the retention is
    `check_settings`, and only a switch that is on with enough retention applies."""
    with pytest.raises(InvalidChoice):
        parse_setting("bulk_download", "maybe")
    short = RecordingSettings().with_stored({"bulk_download": "on", "retention_days": "179"})
    assert short.bulk_download and not short.bulk_download_enabled
    with pytest.raises(PolicyError) as refused:
        check_settings(short)
    assert refused.value.field == "bulk_download" and "180 days" in refused.value.message
    long = short.with_stored({"retention_days": "180"})
    check_settings(long)
    assert long.bulk_download_enabled
    check_settings(RecordingSettings().with_stored({"retention_days": "30"}))  # off: any retention
