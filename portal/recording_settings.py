"""The organisation-wide recording settings kept in the store's `settings` table.

Keys (text values): `feature_code` ("*" plus one digit), `retention_days` (30..365),
`announcement` (default | beep | none) and `channels` (mono | stereo). A key never set
falls back to the config's value. The B2BUA reads the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from portal.services import PortalServices
from storage.database import Store

FEATURE_CODE_KEY = "feature_code"
RETENTION_KEY = "retention_days"
ANNOUNCEMENT_KEY = "announcement"
CHANNELS_KEY = "channels"

ANNOUNCEMENTS = ("default", "beep", "none")
CHANNEL_CHOICES = ("mono", "stereo")
RETENTION_MIN_DAYS = 30
RETENTION_MAX_DAYS = 365
# The portal slider: 30..120 one day at a time, then the two long retentions.
RETENTION_SLIDER_DAYS: tuple[int, ...] = (*range(30, 121), 180, 365)
BULK_DOWNLOAD_MIN_RETENTION_DAYS = 180

_FEATURE_CODE = re.compile(r"\*[0-9]")


class FieldError(ValueError):
    """A submitted value is invalid; `field` names it for the 422 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RecordingSettings:
    """The settings in force."""

    feature_code: str
    retention_days: int
    announcement: str
    channels: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def validate_feature_code(value: object) -> str:
    if not isinstance(value, str) or not _FEATURE_CODE.fullmatch(value.strip()):
        raise FieldError("feature_code", "the feature code must be * followed by one digit")
    return value.strip()


def validate_retention_days(value: object, services: PortalServices) -> int:
    if isinstance(value, bool):
        raise FieldError("retention_days", "retention must be a whole number of days")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise FieldError("retention_days", "retention must be a whole number of days")
    if not RETENTION_MIN_DAYS <= value <= RETENTION_MAX_DAYS:
        raise FieldError(
            "retention_days",
            f"retention must be {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS} days",
        )
    if services.validate_retention_days is not None:
        try:
            services.validate_retention_days(value)
        except ValueError as exc:
            raise FieldError("retention_days", str(exc)) from exc
    return value


def retention_from_slider(position: object) -> int:
    """The days at a slider position (0 is 30 days, the last is 365)."""
    text = str(position).strip()
    if not text.isdigit() or int(text) >= len(RETENTION_SLIDER_DAYS):
        raise FieldError("retention_days", "pick a retention on the slider")
    return RETENTION_SLIDER_DAYS[int(text)]


def slider_position(days: int) -> int:
    """The slider position showing `days` (the nearest one below for odd values)."""
    best = 0
    for index, choice in enumerate(RETENTION_SLIDER_DAYS):
        if choice <= days:
            best = index
    return best


def _choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise FieldError(field, f"{field} must be one of {', '.join(choices)}")
    return value


def validate_settings_patch(data: Mapping[str, object], services: PortalServices) -> dict[str, str]:
    """The settings keys and stored texts of a (partial) update; raises FieldError."""
    known = {FEATURE_CODE_KEY, RETENTION_KEY, ANNOUNCEMENT_KEY, CHANNELS_KEY}
    unknown = sorted(set(data) - known)
    if unknown:
        raise FieldError(unknown[0], f"unknown setting {unknown[0]!r}")
    changes: dict[str, str] = {}
    if FEATURE_CODE_KEY in data:
        changes[FEATURE_CODE_KEY] = validate_feature_code(data[FEATURE_CODE_KEY])
    if RETENTION_KEY in data:
        changes[RETENTION_KEY] = str(validate_retention_days(data[RETENTION_KEY], services))
    if ANNOUNCEMENT_KEY in data:
        changes[ANNOUNCEMENT_KEY] = _choice(ANNOUNCEMENT_KEY, data[ANNOUNCEMENT_KEY], ANNOUNCEMENTS)
    if CHANNELS_KEY in data:
        changes[CHANNELS_KEY] = _choice(CHANNELS_KEY, data[CHANNELS_KEY], CHANNEL_CHOICES)
    return changes


async def load_settings(store: Store, services: PortalServices) -> RecordingSettings:
    """The settings in force: stored values over the config's defaults."""
    stored = await store.all_settings()
    retention_text = stored.get(RETENTION_KEY, "")
    retention = int(retention_text) if retention_text.isdigit() else None
    return RecordingSettings(
        feature_code=stored.get(FEATURE_CODE_KEY, services.default_feature_code),
        retention_days=retention if retention is not None else services.default_retention_days,
        announcement=stored.get(ANNOUNCEMENT_KEY, services.default_announcement),
        channels=stored.get(CHANNELS_KEY, services.default_channels),
    )


async def save_settings(store: Store, changes: Mapping[str, str]) -> None:
    for key, value in changes.items():
        await store.set_setting(key, value)
