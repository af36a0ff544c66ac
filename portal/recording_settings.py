"""The organisation-wide recording settings, as the portal reads and changes them.

They live in the store's `settings` table. Which keys exist and what each accepts are
product rules (`callrec.policy.SettingKey`, `parse_setting`); a key never set falls
back to the config's value (`PortalServices.defaults`). The B2BUA reads the same keys
through the same rules, so a value the portal accepts is one a call can use.
"""

from __future__ import annotations

from collections.abc import Mapping

from callrec.policy import (
    RETENTION_SLIDER_DAYS,
    SETTINGS_KEYS,
    InvalidRetention,
    PolicyError,
    RecordingSettings,
    SettingKey,
    UnknownSetting,
    parse_setting,
)
from portal.services import PortalServices
from storage.database import Store

# A refused value: `field` names it for the 422 answer or the form, `message` says why.
FieldError = PolicyError


def retention_from_slider(position: object) -> int:
    """The days at a slider position (0 is 30 days, the last is 365)."""
    text = str(position).strip()
    if not text.isdigit() or int(text) >= len(RETENTION_SLIDER_DAYS):
        raise InvalidRetention(SettingKey.RETENTION_DAYS, "pick a retention on the slider")
    return RETENTION_SLIDER_DAYS[int(text)]


def slider_position(days: int) -> int:
    """The slider position showing `days` (the nearest one below for odd values)."""
    best = 0
    for index, choice in enumerate(RETENTION_SLIDER_DAYS):
        if choice <= days:
            best = index
    return best


def validate_settings_patch(data: Mapping[str, object]) -> dict[str, str]:
    """The settings keys and stored texts of a (partial) update; raises PolicyError."""
    unknown = sorted(set(data) - set(SETTINGS_KEYS))
    if unknown:
        raise UnknownSetting(unknown[0], f"unknown setting {unknown[0]!r}")
    # str(): a SettingKey member becomes the plain key text the store keeps.
    return {str(key): parse_setting(key, value) for key, value in data.items()}


async def load_settings(store: Store, services: PortalServices) -> RecordingSettings:
    """The settings in force: stored values over the config's defaults (a stored value
    that breaks a rule is ignored, as the B2BUA ignores it)."""
    return services.defaults.with_stored(await store.all_settings())


async def save_settings(store: Store, changes: Mapping[str, str]) -> None:
    for key, value in changes.items():
        await store.set_setting(key, value)
