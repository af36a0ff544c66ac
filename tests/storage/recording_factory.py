"""Real recordings for storage tests: small WAV files (soundfile) filed in a real store."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from callrec.config import Config, load_config
from media.writer import READ_ONLY
from storage.database import Store
from storage.files import RecordingFiles
from tests.storage.orgs import ORG

DAY = 86400.0
SAMPLE_RATE = 8000


@dataclass(frozen=True)
class FiledRecording:
    """A recording row and its file."""

    id: int
    call_id: int
    path: Path
    relative: str
    sha256: str
    started_at: float
    expires_at: float


def write_wav(path: Path, seconds: float, *, frequency: float = 440.0) -> None:
    """A mono 16-bit tone, made read-only like the recorder's closed files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * frequency * times) * 32767).astype(np.int16)
    soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    os.chmod(path, READ_ONLY)


async def file_recording(
    store: Store,
    storage_dir: Path,
    *,
    started_at: float,
    retention_days: int = 90,
    status: str = "complete",
    seconds: float = 0.05,
    caller: tuple[str, str | None] = ("101", "Alice Smith"),
    callee: tuple[str, str | None] = ("102", "Bob Jones"),
) -> FiledRecording:
    """File a call and its recording as callrec does: create, write the file, finish."""
    # A party who is one of the organisation's users is filed as that user, as the B2BUA
    # files them (storage.calls.own_call_condition).
    caller_user = await store.get_user(ORG, caller[0]) if caller[0] else None
    callee_user = await store.get_user(ORG, callee[0]) if callee[0] else None
    call_id = await store.create_call(
        ORG.id,
        caller_user_id=caller_user.id if caller_user is not None else None,
        callee_user_id=callee_user.id if callee_user is not None else None,
        sip_call_id=f"{uuid.uuid4()}@test",
        direction="outbound",
        caller_ext=caller[0],
        caller_name=caller[1],
        callee_ext=callee[0],
        callee_name=callee[1],
        started_at=started_at,
        answered_at=started_at + 1.0,
        ended_at=started_at + 1.0 + seconds,
        disposition="answered",
    )
    new = RecordingFiles(storage_dir).new_recording("wav", started_at)
    relative, path = new.relative, new.absolute
    write_wav(path, seconds)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    recording_id = await store.create_recording(
        call_id=call_id,
        path=relative,
        format="wav",
        channels=1,
        sample_rate=SAMPLE_RATE,
        started_at=started_at,
        retention_days=retention_days,
        owner_ext=caller[0],
    )
    if status != "recording":
        await store.finish_recording(
            recording_id,
            status=status,
            ended_at=started_at + seconds,
            duration_s=seconds,
            segments=[(0.0, seconds)],
            sha256=digest,
            size=len(data),
        )
    return FiledRecording(
        recording_id,
        call_id,
        path,
        relative,
        digest,
        started_at,
        started_at + retention_days * DAY,
    )


def make_config(tmp_path: Path, extra: str = "") -> Config:
    """A config file with its storage under tmp_path, plus `extra` TOML."""
    source = tmp_path / "callrec.toml"
    source.write_text(f"[storage]\ndir = '{tmp_path / 'data'}'\n{extra}", encoding="utf-8")
    return load_config(source)
