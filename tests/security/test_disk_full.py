"""A recording that fills the disk, on a real `callrec serve`: its recordings folder is a
tmpfs of 160 KiB (about 10 s of mono WAV), the call lasts 16 s. What was written stays a
`partial` recording, playable through the API, and the log says "disk full"."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import environment_ok
from testkit.waiting import WaitTimeout, wait_until
from tests.portal.conftest import login, new_session

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PASSWORD = "pw-201"
ADMIN = ("root", "admin-secret-1")
DISK = "160k"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path / "callrec",
        '[recording]\nchannels = "mono"\nformat = "wav"\nannouncement = "none"\n',
        sipp=True,
    )
    srv.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    srv.cli("admin", "add", ADMIN[0], "--password", ADMIN[1])
    recordings = srv.data_dir / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(recordings)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield from srv.serving()
    finally:
        subprocess.run(["umount", "-l", str(recordings)], check=False)


def finished_recording(server: CallrecServer, timeout: float = 15.0) -> dict[str, Any]:
    def finished() -> list[dict[str, Any]]:
        return [row for row in server.recordings() if row["status"] != "recording"]

    try:
        return wait_until(finished, timeout=timeout, what="a finished recording", interval=0.2)[0]
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{server.log()[-3000:]}") from None


async def test_a_recording_that_fills_the_disk_is_kept_as_partial(
    server: CallrecServer, tmp_path: Path
) -> None:
    trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=40)
    with trunk:
        phone = server.run_sipp_phone(
            tmp_path / "uac", caller="201", password=PASSWORD, call_length_ms=16000, timeout_s=40
        )
        assert phone.ok, phone.summary()
        assert trunk.wait().ok
    row = finished_recording(server)
    assert row["status"] == "partial", f"{row}\n{server.log()[-3000:]}"
    assert "disk full (ENOSPC)" in (row["error"] or ""), row
    path = server.data_dir / row["path"]
    audio, rate = sf.read(path, dtype="int16")
    # About 10 s fit on the disk, not the whole 16 s call.
    assert 5.0 <= len(audio) / rate <= 12.0, len(audio) / rate
    assert row["duration_s"] == pytest.approx(len(audio) / rate, abs=0.01)
    data = path.read_bytes()
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    log = server.log()
    assert "disk full (ENOSPC)" in log, log[-3000:]
    async with new_session() as session:
        await login(session, server.portal_url, *ADMIN)
        async with session.get(f"{server.portal_url}/api/v1/recordings/{row['id']}") as response:
            assert response.status == 200
            shown = await response.json()
        recording = shown.get("recording", shown)
        assert recording["status"] == "partial"
        assert recording["audio_url"], recording
        async with session.get(f"{server.portal_url}{recording['audio_url']}") as response:
            assert response.status == 200
            assert await response.read() == data
