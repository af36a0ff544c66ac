"""Issue 12: "A Dutch WAV set in the config plays at first. The portal still shows
'Spoken announcement', and the first time an admin saves any setting, callers hear the
English prompt again."

What is configured is what the portal shows and what callers hear; saving the settings
form never silently replaces it. "What callers hear" is read the way the recording side reads it:
a `RecordingManager` on the same config and store refreshes the settings in force, and
the announcement and language it hands each recording (`RecordingSpec`) are loaded by
`media.announce.load_announcement`, the audio played into both legs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from argon2 import PasswordHasher

from callrec.config import Config, load_config
from callrec.recording.manager import RecordingManager
from media.announce import load_announcement, make_beep, read_prompt, shipped_notice
from portal.app import PortalHandle, start_portal_at
from portal.services import PortalServices
from storage.database import Store
from tests.portal.conftest import ADMIN, Client, login, new_session
from tests.storage.orgs import ORG

NOTICE_NAME = "notice-nl.wav"


@dataclass
class Server:
    config: Config
    store: Store
    portal: PortalHandle
    notice: Path | None


async def _server(tmp_path: Path, *, with_file: bool) -> AsyncIterator[Server]:
    notice = None
    lines = ['[storage]\ndir = "data"\n']
    if with_file:
        notice = tmp_path / "prompts" / NOTICE_NAME
        notice.parent.mkdir()
        shutil.copy(shipped_notice("nl"), notice)
        lines.append(f'[recording]\nannouncement = "prompts/{NOTICE_NAME}"\n')
    (tmp_path / "callrec.toml").write_text("".join(lines))
    config = load_config(tmp_path / "callrec.toml")
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    store = await Store.open(config.storage.db_path, hasher=hasher)
    await store.add_admin(ORG, *ADMIN)
    portal = await start_portal_at(store, PortalServices.from_config(config, store), "127.0.0.1", 0)
    try:
        yield Server(config, store, portal, notice)
    finally:
        await portal.stop()
        await store.close()


@pytest.fixture
async def with_file(tmp_path: Path) -> AsyncIterator[Server]:
    async for server in _server(tmp_path, with_file=True):
        yield server


@pytest.fixture
async def without_file(tmp_path: Path) -> AsyncIterator[Server]:
    async for server in _server(tmp_path, with_file=False):
        yield server


async def _admin(server: Server) -> AsyncIterator[Client]:
    async with new_session() as session:
        yield Client(session, await login(session, server.portal.url, *ADMIN))


async def what_callers_hear(server: Server) -> np.ndarray:
    """The notice the recording side plays after it has read the stored settings."""
    manager = RecordingManager(
        server.config, server.store, spawn=asyncio.get_running_loop().create_task
    )
    await manager.refresh_settings()
    settings = manager.org_settings[ORG.id]  # what a call of the organisation gets
    prompt = load_announcement(settings.announcement, settings.language)
    assert prompt is not None
    return prompt


_RADIO = re.compile(r'<input type="radio" name="(\w+)" value="([^"]*)" (checked)?')
_VALUE = re.compile(r'name="(feature_code|retention_current|timezone)"[^>]*value="([^"]*)"')
_SELECTED = re.compile(r'<option value="(\w+)" lang="\w+" selected>')


def form_as_shown(page: str) -> dict[str, str]:
    """The settings form's fields as a browser would send them unchanged."""
    fields = {name: value for name, value, checked in _RADIO.findall(page) if checked}
    fields.update(dict(_VALUE.findall(page)))
    language = _SELECTED.search(page)
    assert language is not None
    fields["language"] = language.group(1)
    fields["retention_position"] = "60"  # 90 days, the slider not moved
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    fields["csrf_token"] = token.group(1)
    return fields


async def settings_page(admin: Client, server: Server) -> str:
    async with admin.session.get(f"{server.portal.url}/settings") as response:
        assert response.status == 200
        return await response.text()


async def test_the_configured_wav_is_shown_and_survives_saving_the_form(
    with_file: Server,
) -> None:
    server = with_file
    assert server.notice is not None
    configured = read_prompt(server.notice)
    assert np.array_equal(await what_callers_hear(server), configured)
    async for admin in _admin(server):
        page = await settings_page(admin, server)
        # The portal shows the configured file, checked, by name and never by path.
        assert f"The notice set in the server&#39;s config: {NOTICE_NAME}" in page
        assert 'value="file" checked' in page
        assert 'value="default" checked' not in page
        assert str(server.notice.parent) not in page
        async with admin.session.get(f"{server.portal.url}/api/v1/settings") as response:
            shown = await response.json()
        assert (shown["announcement"], shown["announcement_file"]) == ("file", NOTICE_NAME)
        assert str(server.notice.parent) not in str(shown)

        # Save an unrelated setting with the form as it was shown.
        fields = form_as_shown(page)
        assert fields["announcement"] == "file"
        fields["feature_code"] = "*5"
        async with admin.session.post(
            f"{server.portal.url}/settings", data=fields, allow_redirects=True
        ) as response:
            assert response.status == 200
            assert "Settings saved." in await response.text()
        stored = await server.store.org_settings(ORG)
        assert stored == {"feature_code": "*5"}  # only what was changed
        assert np.array_equal(await what_callers_hear(server), configured)
        assert 'value="file" checked' in await settings_page(admin, server)

        # An admin who picks the beep gets the beep; picking the file again restores it.
        fields = form_as_shown(await settings_page(admin, server))
        fields["announcement"] = "beep"
        async with admin.session.post(f"{server.portal.url}/settings", data=fields) as response:
            assert response.status == 200
        assert np.array_equal(await what_callers_hear(server), make_beep())
        fields = form_as_shown(await settings_page(admin, server))
        assert fields["announcement"] == "beep"
        fields["announcement"] = "file"
        async with admin.session.post(f"{server.portal.url}/settings", data=fields) as response:
            assert response.status == 200
        assert np.array_equal(await what_callers_hear(server), configured)
        assert 'value="file" checked' in await settings_page(admin, server)

        # Changing the language leaves the configured file playing (it has no language).
        fields = form_as_shown(await settings_page(admin, server))
        fields["language"] = "nl"
        async with admin.session.post(f"{server.portal.url}/settings", data=fields) as response:
            assert "Instellingen opgeslagen." in await response.text()
        assert np.array_equal(await what_callers_hear(server), configured)


async def test_the_spoken_notice_follows_the_language_and_file_needs_a_configured_file(
    without_file: Server,
) -> None:
    server = without_file
    english = read_prompt(shipped_notice("en"))
    dutch = read_prompt(shipped_notice("nl"))
    assert np.array_equal(await what_callers_hear(server), english)
    async for admin in _admin(server):
        page = await settings_page(admin, server)
        assert 'value="file"' not in page  # nothing to go back to
        async with admin.session.patch(
            f"{server.portal.url}/api/v1/settings",
            json={"announcement": "file"},
            headers=admin.headers,
        ) as response:
            assert response.status == 422
            assert (await response.json())["field"] == "announcement"
        fields = form_as_shown(page)
        fields["announcement"] = "file"  # a forged form
        async with admin.session.post(f"{server.portal.url}/settings", data=fields) as response:
            assert response.status == 422
            assert "choose one of the announcements" in await response.text()
        assert await server.store.org_settings(ORG) == {}

        fields["announcement"] = "default"
        fields["language"] = "nl"
        async with admin.session.post(f"{server.portal.url}/settings", data=fields) as response:
            assert response.status == 200
        assert await server.store.org_settings(ORG) == {"language": "nl"}
        assert np.array_equal(await what_callers_hear(server), dutch)
