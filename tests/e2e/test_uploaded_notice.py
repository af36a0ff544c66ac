"""End-to-end: an admin uploads the organisation's own notice in the portal (a 16 kHz
stereo WAV), and that notice, converted to 8 kHz mono, is what the caller hears and
what the recording starts with; the shipped notice is not played."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from media.announce import load_announcement
from testkit.audio import peak_correlation
from testkit.harness import CallrecServer, make_server
from testkit.waiting import wait_until
from tests.e2e.notice_heard import call_and_hear
from tests.portal.conftest import login, new_session

pytestmark = pytest.mark.e2e

ADMIN = ("root", "admin-secret-1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path / "callrec")
    srv.add_user("202", "Bob Always", "pw-202", "--mode", "always")
    srv.cli("admin", "add", ADMIN[0], "--password", ADMIN[1])
    yield from srv.serving()


def sweep_16k_stereo(path: Path, seconds: float = 2.5) -> None:
    """A falling sweep at 16 kHz in two channels (the right one quieter): unlike the
    shipped notice, and needing the conversion to reach the phone."""
    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    low, high = 3200.0, 400.0
    left = 0.5 * np.sin(2 * np.pi * (low * t + (high - low) / (2 * seconds) * t**2))
    sf.write(path, np.stack([left, 0.5 * left], axis=1), rate, subtype="PCM_16")


async def upload(server: CallrecServer, notice: Path) -> int:
    async with new_session() as session:
        token = await login(session, server.portal_url, *ADMIN)
        form = aiohttp.FormData()
        form.add_field("csrf_token", token)
        form.add_field("notice", notice.read_bytes(), filename=notice.name,
                       content_type="audio/wav")  # fmt: skip
        async with session.post(f"{server.portal_url}/settings/notice", data=form) as response:
            assert "callers hear it from the next call on" in await response.text()
            return response.status


def test_the_uploaded_notice_is_what_callers_hear(server: CallrecServer, tmp_path: Path) -> None:
    source = tmp_path / "welkom.wav"
    sweep_16k_stereo(source)
    assert asyncio.run(upload(server, source)) == 200
    stored = list((server.data_dir / "notices" / "1").glob("*.wav"))
    assert len(stored) == 1
    info = sf.info(str(stored[0]))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    notice, _ = sf.read(stored[0], dtype="int16")
    # The recording manager picks the new notice up with its settings (every 2 s).
    wait_until(
        lambda: f"uploaded notice is now {stored[0].name}" in server.log(),
        timeout=10,
        what="the server to take the uploaded notice",
    )

    heard, recorded, _ = call_and_hear(server, tmp_path)

    shipped = load_announcement("default", "en")
    assert shipped is not None
    for side, audio in heard.items():
        # The uploaded notice, not the shipped one. What a pjsua2 phone heard passed its
        # jitter buffer, which may stretch or drop a frame under load: the whole sweep
        # then correlates 0.53-0.9 (0.53 seen once in a full run); the shipped notice
        # stays below 0.3, which is what tells the two apart.
        assert peak_correlation(notice, audio[: 8000 * 4]) > 0.5, side
        assert peak_correlation(shipped, audio[: 8000 * 4]) < 0.3, side
    assert peak_correlation(notice, recorded[: 8000 * 4]) > 0.5
    assert peak_correlation(shipped, recorded[: 8000 * 4]) < 0.3
