"""An admin uploads the organisation's own notice on the settings page: a valid WAV is
stored converted (8 kHz mono) in the organisation's notices folder, becomes the
announcement, and the page plays that very file; a refused file is named with the
reason; the recording manager hands that file to the media worker."""

from __future__ import annotations

import io
import re
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

from callrec.config import load_config
from callrec.policy import ANNOUNCEMENT_UPLOADED, RecordingSettings
from callrec.recording.manager import RecordingManager
from storage.notices import NOTICE_SETTING, UploadedNotice
from tests.portal.conftest import Client, Fixture, login, new_session
from tests.storage.orgs import ORG

API = "/api/v1"


def stereo_16k(seconds: float = 1.5) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    left = 0.4 * np.sin(2 * np.pi * 700 * t)
    out = io.BytesIO()
    sf.write(out, np.stack([left, 0.2 * left], axis=1), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def post_notice(
    client: Client, portal: Fixture, data: bytes, name: str = "Welkom bij Acme.wav",
    csrf: str | None = None,
) -> tuple[int, str]:  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("csrf_token", client.csrf if csrf is None else csrf)
    form.add_field("notice", data, filename=name, content_type="audio/wav")
    async with client.session.post(f"{portal.url}/settings/notice", data=form) as response:
        return response.status, await response.text()


async def test_upload_converts_stores_and_plays_the_same_file(
    portal: Fixture, admin: Client
) -> None:
    status, page = await post_notice(admin, portal, stereo_16k(), "C:\\fakepath\\Welkom <Acme>.wav")
    assert status == 200, page
    assert "callers hear it from the next call on" in page
    stored = list((portal.storage_dir / "notices" / str(ORG.id)).glob("*.wav"))
    assert len(stored) == 1
    info = sf.info(str(stored[0]))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.frames == 12000
    settings = await portal.store.org_settings(ORG)
    assert settings["announcement"] == ANNOUNCEMENT_UPLOADED
    notice = UploadedNotice.from_setting(settings[NOTICE_SETTING])
    assert notice is not None and notice.file == stored[0].name
    assert notice.name == "Welkom _Acme_.wav" and notice.uploaded_by == "admin:root"
    # The page shows it as the chosen announcement, with a player of that very file.
    assert re.search(r'value="uploaded"\s+checked', page)
    assert "Your own notice: Welkom _Acme_.wav (1.5 s)" in page
    assert 'src="/settings/notice/audio"' in page
    async with admin.session.get(f"{portal.url}/settings/notice/audio") as response:
        assert response.status == 200 and response.content_type == "audio/wav"
        assert await response.read() == stored[0].read_bytes()
    async with admin.session.get(f"{portal.url}{API}/settings") as response:
        body = await response.json()
    assert body["announcement"] == "uploaded"
    assert body["uploaded_notice"]["name"] == "Welkom _Acme_.wav"
    assert body["uploaded_notice"]["seconds"] == 1.5
    audit = await portal.store.list_audit(ORG, 5)
    assert any(e.action == "notice.upload" and "16000 Hz x2" in (e.detail or "") for e in audit)
    # Saving the settings form as it is keeps the uploaded notice (nothing replaces it).
    async with admin.session.get(f"{portal.url}/settings") as response:
        assert re.search(r'value="uploaded"\s+checked', await response.text())


async def test_refused_files_are_named_with_the_reason(portal: Fixture, admin: Client) -> None:
    cases = {
        b"not audio at all": "The file is not a WAV file.",
        stereo_16k(31.0): "The notice lasts 31.0 seconds; at most 30 seconds is allowed.",
        b"RIFF" + bytes(5 * 1024 * 1024 + 1): "The file is larger than 5 MB.",
    }
    out = io.BytesIO()
    sf.write(out, np.zeros(8000), 8000, format="WAV", subtype="PCM_16")
    cases[out.getvalue()] = "The notice is silent."
    out = io.BytesIO()
    sf.write(out, np.full(8000, 0.1), 8000, format="WAV", subtype="FLOAT")
    cases[out.getvalue()] = "The WAV file holds floating-point audio."
    for data, reason in cases.items():
        status, page = await post_notice(admin, portal, data)
        assert status == 422, reason
        assert reason in page, reason
        assert 'id="notice-error"' in page
    assert not (portal.storage_dir / "notices").exists() or not list(
        (portal.storage_dir / "notices").rglob("*.wav")
    )
    assert NOTICE_SETTING not in await portal.store.org_settings(ORG)


async def test_upload_needs_the_form_token_and_an_admin(
    portal: Fixture, admin: Client, alice: Client
) -> None:
    status, _ = await post_notice(admin, portal, stereo_16k(), csrf="forged")
    assert status == 403
    status, _ = await post_notice(alice, portal, stereo_16k())
    assert status == 403
    assert NOTICE_SETTING not in await portal.store.org_settings(ORG)
    # "uploaded" cannot be chosen while there is none.
    async with admin.session.patch(
        f"{portal.url}{API}/settings", json={"announcement": "uploaded"}, headers=admin.headers
    ) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "announcement"
    async with admin.session.get(f"{portal.url}/settings/notice/audio") as response:
        assert response.status == 404


async def test_another_organisation_never_gets_the_notice(portal: Fixture, admin: Client) -> None:
    assert (await post_notice(admin, portal, stereo_16k()))[0] == 200
    beta = (await portal.store.add_organisation("beta", "Beta", "beta.example")).scope
    await portal.store.add_admin(beta, "bea", "bea-password-1")
    async with new_session() as session:
        await login(session, portal.url, "bea", "bea-password-1")
        async with session.get(f"{portal.url}/settings/notice/audio") as response:
            assert response.status == 404
        async with session.get(f"{portal.url}/settings") as response:
            assert "Your own notice:" not in await response.text()


async def test_the_manager_hands_the_uploaded_file_to_the_worker(
    portal: Fixture, admin: Client, tmp_path: Path
) -> None:
    """What reaches the media worker's `load_announcement` is the stored file's path."""
    assert (await post_notice(admin, portal, stereo_16k()))[0] == 200
    config_path = tmp_path / "callrec.toml"
    config_path.write_text(f'[storage]\ndir = "{portal.storage_dir}"\n')
    config = load_config(config_path)

    def spawn(work: object) -> None:
        raise AssertionError("nothing is spawned here")

    manager = RecordingManager(config, portal.store, spawn=spawn)  # type: ignore[arg-type]
    await manager.refresh_settings()
    settings = manager.org_settings[ORG.id]
    assert settings.announcement == ANNOUNCEMENT_UPLOADED

    class OrgCall:
        org_id = ORG.id
        call_id = "c1"

    chosen = manager.announcement_for(OrgCall(), settings)  # type: ignore[arg-type]
    stored = next((portal.storage_dir / "notices" / str(ORG.id)).glob("*.wav"))
    assert chosen == str(stored)
    from media.announce import load_announcement

    played = load_announcement(chosen)
    expected, _ = sf.read(stored, dtype="int16")
    assert played is not None and np.array_equal(played, expected)
    # Without a notice on record, "uploaded" plays the shipped notice, never nothing.
    manager.org_notices.clear()
    assert manager.announcement_for(OrgCall(), settings) == "default"  # type: ignore[arg-type]
    assert manager.announcement_for(OrgCall(), RecordingSettings(announcement="beep")) == "beep"  # type: ignore[arg-type]
