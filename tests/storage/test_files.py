"""RecordingFiles: the layout, the one safe-path check, deletion, export ZIPs."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import numpy as np
import pytest

from media.writer import RecordingWriter
from storage.errors import InvalidValue
from storage.files import RecordingFiles
from storage.models import ExportJob

# 2024-05-01T23:59:59Z
LATE_ON_MAY_FIRST = 1714607999.0


@pytest.fixture
def files(tmp_path: Path) -> RecordingFiles:
    return RecordingFiles(tmp_path / "data")


def test_layout_is_recordings_year_month_day_uuid(files: RecordingFiles) -> None:
    first = files.new_recording("wav", LATE_ON_MAY_FIRST)
    second = files.new_recording("flac", LATE_ON_MAY_FIRST)
    pattern = r"recordings/2024/05/01/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(pattern + r"\.wav", first.relative)
    assert re.fullmatch(pattern + r"\.flac", second.relative)
    assert first.absolute == files.storage_dir / first.relative
    assert first.relative != second.relative[:-5] + ".wav"
    with pytest.raises(InvalidValue) as refused:
        files.new_recording("mp3", LATE_ON_MAY_FIRST)
    assert refused.value.field == "format"


def test_a_stored_path_resolves_inside_the_recordings_folder(files: RecordingFiles) -> None:
    new = files.new_recording("wav", LATE_ON_MAY_FIRST)
    assert files.resolve(new.relative) == new.absolute.resolve()
    assert files.existing(new.relative) is None  # not written yet
    new.absolute.parent.mkdir(parents=True)
    new.absolute.write_bytes(b"RIFF")
    assert files.existing(new.relative) == new.absolute.resolve()


@pytest.mark.parametrize(
    "stored",
    [
        "../callrec.db",
        "recordings/../callrec.db",
        "recordings/2024/../../callrec.db",
        "recordings/../../etc/passwd",
        "/etc/passwd",
        "/recordings/2024/05/01/x.wav",
        "exports/1-2024-05.zip",
        "callrec.db",
        "recordings",
        "recordings/",
        "",
        "recordings/x\x00.wav",
    ],
)
def test_anything_outside_the_recordings_folder_is_refused(
    files: RecordingFiles, stored: str
) -> None:
    database = files.storage_dir / "callrec.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"SQLite format 3\x00")
    with pytest.raises(InvalidValue) as refused:
        files.resolve(stored)
    assert refused.value.field == "path"
    assert files.existing(stored) is None
    with pytest.raises(InvalidValue):
        files.delete(stored)
    assert database.exists()


def test_a_symlink_out_of_the_folder_is_refused(files: RecordingFiles, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"keep")
    files.recordings_dir.mkdir(parents=True)
    (files.recordings_dir / "2024").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidValue):
        files.resolve("recordings/2024/secret.wav")
    with pytest.raises(InvalidValue):
        files.delete("recordings/2024/secret.wav")
    assert (outside / "secret.wav").read_bytes() == b"keep"


def test_delete_removes_a_sealed_file_once(files: RecordingFiles) -> None:
    new = files.new_recording("flac", LATE_ON_MAY_FIRST)
    # Written and sealed as a call's recording is: by the media writer, at the new path.
    writer = RecordingWriter(new.absolute, 1, "flac")
    writer.write(np.zeros(8000, np.int16))
    writer.close()
    assert stat.S_IMODE(new.absolute.stat().st_mode) == 0o444
    assert files.delete(new.relative) is True
    assert not new.absolute.exists()
    assert files.delete(new.relative) is False


def _job(path: str | None, status: str = "ready") -> ExportJob:
    return ExportJob(1, "2024-05", "admin:root", 0.0, status, path, 2, 0, None, 1.0)


def test_export_zips_live_in_the_exports_folder(files: RecordingFiles, tmp_path: Path) -> None:
    target = files.export_zip(1, "2024-05")
    assert target == files.storage_dir / "exports" / "1-2024-05.zip"
    assert files.stored_export_path(target) == "exports/1-2024-05.zip"
    elsewhere = tmp_path / "out" / "may.zip"
    assert files.stored_export_path(elsewhere) == str(elsewhere.resolve())
    assert files.export_file(_job("exports/1-2024-05.zip")) is None  # not built yet
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PK")
    assert files.export_file(_job("exports/1-2024-05.zip")) == target
    assert files.export_file(_job("exports/1-2024-05.zip", "building")) is None
    assert files.export_file(_job(None)) is None
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"PK")
    for stored in (str(elsewhere), "exports/../callrec.db", "recordings/1-2024-05.zip"):
        assert files.export_file(_job(stored)) is None
        assert files.delete_export(_job(stored)) is False
    assert elsewhere.exists()
    assert files.delete_export(_job("exports/1-2024-05.zip")) is True
    assert not target.exists()
    assert files.delete_export(_job("exports/1-2024-05.zip")) is False
