"""An organisation's recording settings, as the portal reads and changes them.

They live in the store's per-organisation settings (`Store.org_settings`); every read
and write names the organisation. Which keys exist and what each accepts are
product rules (`callrec.policy.SettingKey`, `parse_setting`); a key never set falls
back to the config's value (`PortalServices.defaults`). The B2BUA reads the same keys
through the same rules, so a value the portal accepts is one a call can use.

The config may name a WAV file as the announcement. The portal shows it as the choice
`ANNOUNCEMENT_FILE` ("file", by its file name, never its path), stores only what an admin
changed (`changed_settings`), and storing "file" goes back to the config's file: what is
configured is what callers hear until an admin picks something else.
"""

from __future__ import annotations

from collections.abc import Mapping

from callrec.policy import (
    ANNOUNCEMENT_FILE,
    RETENTION_SLIDER_DAYS,
    SETTINGS_KEYS,
    InvalidChoice,
    InvalidRetention,
    PolicyError,
    RecordingSettings,
    SettingKey,
    UnknownSetting,
    parse_setting,
)
from callrec.services.presentation import Presentation, Presentations
from portal.services import PortalServices
from storage.database import Store
from storage.models import OrgScope

# A refused value: `field` names it for the 422 answer or the form, `message` says why.
FieldError = PolicyError


def retention_from_slider(position: object) -> int:
    """The days at a slider position (0 is 30 days, the last is 365)."""
    text = str(position).strip()
    if not text.isdigit() or int(text) >= len(RETENTION_SLIDER_DAYS):
        raise InvalidRetention(SettingKey.RETENTION_DAYS, "pick a retention on the slider")
    return RETENTION_SLIDER_DAYS[int(text)]


def slider_description(presentation: Presentation | None = None) -> str:
    """The slider's steps in words, e.g. "30 to 120 days, or 180 or 365" (in the
    presentation's language; English without one)."""
    p = presentation or Presentations().get("en", "UTC")
    days = RETENTION_SLIDER_DAYS
    run_end = 0  # the steps start with a run of consecutive days
    while run_end + 1 < len(days) and days[run_end + 1] == days[run_end] + 1:
        run_end += 1
    text = p.gettext("{first} to {last} days").format(first=days[0], last=days[run_end])
    rest = [str(day) for day in days[run_end + 1 :]]
    if not rest:
        return text
    return p.gettext("{steps}, or {others}").format(steps=text, others=p.gettext(" or ").join(rest))


def slider_position(days: int) -> int:
    """The slider position showing `days` (the nearest one below for odd values)."""
    best = 0
    for index, choice in enumerate(RETENTION_SLIDER_DAYS):
        if choice <= days:
            best = index
    return best


def validate_settings_patch(
    data: Mapping[str, object], defaults: RecordingSettings | None = None
) -> dict[str, str]:
    """The settings keys and stored texts of a (partial) update; raises PolicyError
    (also for the announcement "file" when the config, `defaults`, names no file)."""
    unknown = sorted(set(data) - set(SETTINGS_KEYS))
    if unknown:
        raise UnknownSetting(unknown[0], f"unknown setting {unknown[0]!r}")
    # str(): a SettingKey member becomes the plain key text the store keeps.
    changes = {str(key): parse_setting(key, value) for key, value in data.items()}
    if (
        changes.get(SettingKey.ANNOUNCEMENT) == ANNOUNCEMENT_FILE
        and defaults is not None
        and defaults.announcement_file is None
    ):
        raise InvalidChoice(
            SettingKey.ANNOUNCEMENT, "the config names no announcement file to go back to"
        )
    return changes


def changed_settings(before: RecordingSettings, changes: Mapping[str, str]) -> dict[str, str]:
    """The `changes` that differ from the settings in force `before` (a form sends every
    field; storing the unchanged ones would pin today's values over the config's)."""
    shown = before.settable()
    return {key: value for key, value in changes.items() if str(shown.get(key)) != value}


def settings_json(settings: RecordingSettings) -> dict[str, object]:
    """The settings in force as the API shows them, with the config's announcement
    file's name (None if it names none)."""
    return {**settings.settable(), "announcement_file": settings.announcement_file}


async def load_settings(store: Store, services: PortalServices, org: OrgScope) -> RecordingSettings:
    """`org`'s settings in force: its stored values over the config's defaults (a
    stored value that breaks a rule is ignored, as the B2BUA ignores it)."""
    return services.defaults.with_stored(await store.org_settings(org))


async def save_settings(store: Store, org: OrgScope, changes: Mapping[str, str]) -> None:
    """Store `org`'s changed settings at once (the rules between settings were checked
    with `callrec.policy.check_settings` by the caller)."""
    await store.set_org_settings(org, dict(changes))
