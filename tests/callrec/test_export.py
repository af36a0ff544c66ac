"""Month export: ZIP content and names, manifest, refusal, bounded memory, signed links."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import soundfile

from callrec.config import Config, ConfigError
from callrec.services.export import (
    MANIFEST_COLUMNS,
    ExportService,
    build_export,
    entry_name,
    export_status,
    fail_interrupted_exports,
    parse_month,
    portal_secret,
    sign_download,
    verify_download,
)
from callrec.services.retention import set_retention_days
from storage.database import Store
from storage.errors import Conflict, InvalidValue, NotFound, StorageError
from storage.models import OrgScope, RecordingListing
from tests.storage.orgs import ORG
from tests.storage.recording_factory import DAY, file_recording, make_config, write_wav


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, "[portal]\npublic_url = 'https://rec.example.org/'\n")


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    opened = await Store.open(config.storage.db_path)
    yield opened
    await opened.close()


# -- months and names ------------------------------------------------------------------


def test_parse_month_gives_the_utc_month() -> None:
    assert parse_month("2024-05") == (utc(2024, 5, 1), utc(2024, 6, 1))
    assert parse_month("2023-12") == (utc(2023, 12, 1), utc(2024, 1, 1))


@pytest.mark.parametrize("month", ["2024-13", "2024-00", "2024-5", "24-05", "2024-05-01", "", "x"])
def test_parse_month_rejects_other_text(month: str) -> None:
    with pytest.raises(InvalidValue, match="expected YYYY-MM") as refused:
        parse_month(month)
    assert refused.value.field == "month"


async def test_entry_names_are_dated_and_sanitised(store: Store, config: Config) -> None:
    recording = await file_recording(
        store,
        config.storage.dir,
        started_at=utc(2024, 5, 7, 9, 5, 3),
        caller=("101", "Zoë O'Brien / Sales_EU"),
        callee=("0044207", None),
    )
    (listing,) = await store.list_recordings(ORG)
    name = entry_name(listing)
    assert name == (f"2024-05-07_090503_101-Zoe-O-Brien-Sales-EU_to_0044207_{recording.id}.wav")
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.wav", name)


# -- building --------------------------------------------------------------------------


async def test_export_holds_the_months_recordings_with_a_matching_manifest(
    store: Store, config: Config
) -> None:
    storage = config.storage.dir
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    may = [
        await file_recording(store, storage, started_at=utc(2024, 5, 1), seconds=0.2),
        await file_recording(
            store, storage, started_at=utc(2024, 5, 15, 12), status="recovered", seconds=0.3
        ),
        await file_recording(store, storage, started_at=utc(2024, 6, 1) - 1, seconds=0.1),
    ]
    # Not exported: other months, and recordings without usable audio.
    await file_recording(store, storage, started_at=utc(2024, 5, 1) - 1)
    await file_recording(store, storage, started_at=utc(2024, 6, 1))
    await file_recording(store, storage, started_at=utc(2024, 5, 20), status="error")
    await file_recording(store, storage, started_at=utc(2024, 5, 21), status="recording")

    job = await build_export(store, config, ORG, "2024-05", requested_by="admin:root")
    assert (job.status, job.files, job.error) == ("ready", 3, None)
    assert job.path == f"exports/{job.id}-2024-05.zip"
    zip_path = storage / job.path
    assert job.bytes == zip_path.stat().st_size
    assert not list(zip_path.parent.glob("*.part"))

    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        contents = {name: archive.read(name) for name in names if name != "manifest.csv"}
    assert names[-1] == "manifest.csv" and len(contents) == 3
    assert list(manifest[0]) == list(MANIFEST_COLUMNS)
    assert [int(row["id"]) for row in manifest] == [r.id for r in may]
    for row, recording in zip(manifest, may, strict=True):
        data = contents[row["file"]]
        assert row["file"].endswith(f"_101-Alice-Smith_to_102-Bob-Jones_{recording.id}.wav")
        assert hashlib.sha256(data).hexdigest() == row["sha256"] == recording.sha256
        assert int(row["bytes"]) == len(data) == recording.path.stat().st_size
        assert row["integrity"] == "ok"
        assert (row["caller_ext"], row["callee_name"], row["format"]) == ("101", "Bob Jones", "wav")
        audio, rate = soundfile.read(io.BytesIO(data))
        assert rate == 8000 and len(audio) == round(float(row["duration_s"]) * 8000)
    assert manifest[0]["call_started_at"] == "2024-05-01T00:00:00.000Z"
    assert manifest[0]["retention_days"] == "90"

    status = await export_status(store, ORG, job.id)
    assert status == job
    (entry,) = [a for a in await store.list_audit(ORG) if a.action == "export"]
    assert (entry.actor, entry.object) == ("admin:root", f"export {job.id}")


async def test_missing_and_altered_files_are_reported_not_hidden(
    store: Store, config: Config
) -> None:
    storage = config.storage.dir
    await set_retention_days(store, ORG, 365, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    gone = await file_recording(store, storage, started_at=utc(2024, 5, 2))
    altered = await file_recording(store, storage, started_at=utc(2024, 5, 3))
    gone.path.unlink()
    altered.path.chmod(0o644)
    write_wav(altered.path, 0.05, frequency=1000.0)
    job = await build_export(store, config, ORG, "2024-05", requested_by="admin:root")
    assert job.status == "ready" and job.files == 1
    assert job.error is not None and "missing" in job.error and "mismatch" in job.error
    assert job.path is not None
    with zipfile.ZipFile(storage / job.path) as archive:
        manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [(row["id"], row["integrity"]) for row in manifest] == [
        (str(gone.id), "missing"),
        (str(altered.id), "mismatch"),
    ]


@pytest.mark.parametrize("days", [None, 179])
async def test_refused_below_180_days(store: Store, config: Config, days: int | None) -> None:
    if days is not None:
        await set_retention_days(store, ORG, days, actor="admin:root")
    expected = f"bulk download needs retention of 180 days or more (now {days or 90})"
    with pytest.raises(Conflict) as refused:
        await build_export(store, config, ORG, "2024-05", requested_by="admin:root")
    assert str(refused.value) == expected and refused.value.field == "retention_days"
    async with asyncio.TaskGroup() as tasks:
        service = ExportService(store, config, spawn=tasks.create_task)
        with pytest.raises(Conflict, match=re.escape(expected)):
            await service.request(ORG, "2024-05", "admin:root", None)
    assert await store.list_exports(ORG) == []


async def test_cli_style_output_outside_the_storage_folder(
    store: Store, config: Config, tmp_path: Path
) -> None:
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    await file_recording(store, config.storage.dir, started_at=utc(2024, 2, 29))
    target = tmp_path / "out" / "feb.zip"
    job = await build_export(store, config, ORG, "2024-02", requested_by="cli", output=target)
    assert job.path == str(target.resolve()) and job.files == 1
    with zipfile.ZipFile(target) as archive:
        assert len(archive.namelist()) == 2


# Run in a fresh interpreter: in a long test session an interpreter-wide table (the
# interned strings) may grow while the export runs and count against it.
MEASURE_EXPORT_PEAK = """
import asyncio, sys, tracemalloc
from pathlib import Path
from storage.database import Store
from storage.models import OrgScope
ORG = OrgScope(1, "default")
from callrec.services.export import MonthExport, parse_month
from storage.files import RecordingFiles

async def listings(db):
    store = await Store.open(db)
    try:
        return await store.export_listings(ORG, *parse_month("2024-03"))
    finally:
        await store.close()

db, storage, target, built_at = sys.argv[1:]
found = asyncio.run(listings(db))
builder = MonthExport(RecordingFiles(Path(storage)), found, built_at=float(built_at))
tracemalloc.start()
summary = builder.write(Path(target))
_, peak = tracemalloc.get_traced_memory()
print(summary.files, summary.bytes, peak)
"""


async def test_memory_stays_bounded_whatever_the_month_size(store: Store, config: Config) -> None:
    """200 small files plus one 4 MB file: a builder holding a file (or the ZIP) in
    memory peaks above 4 MB; the streaming one stays far below."""
    storage = config.storage.dir
    for i in range(200):
        await file_recording(store, storage, started_at=utc(2024, 3, 1) + i * 60, seconds=1.0)
    await file_recording(store, storage, started_at=utc(2024, 3, 30), seconds=250.0)
    listings: list[RecordingListing] = await store.export_listings(ORG, *parse_month("2024-03"))
    total = sum((storage / item.recording.path).stat().st_size for item in listings)
    assert total > 7_000_000
    target = storage / "exports" / "memory.zip"
    measured = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE_EXPORT_PEAK,
            str(config.storage.db_path),
            str(storage),
            str(target),
            str(utc(2024, 4, 1)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    files, size, peak = (int(field) for field in measured.stdout.split())
    assert files == 201 and size > total
    assert peak < 1_000_000, f"peak {peak} bytes for {total} bytes of recordings"


# -- signed links ----------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


def test_signed_link_round_trip_and_expiry() -> None:
    token = sign_download(SECRET, ORG.id, 42, 1_000_000.0)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert verify_download(SECRET, token, 999_999.0, ORG.id) == 42
    with pytest.raises(InvalidValue, match="expired"):
        verify_download(SECRET, token, 1_000_000.0, ORG.id)


def test_tampered_links_are_rejected() -> None:
    token = sign_download(SECRET, ORG.id, 42, 1_000_000.0)
    export_id, expires, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (
        f"43.{expires}.{signature}",
        f"{export_id}.{int(expires) + 86400}.{signature}",
        f"{export_id}.{expires}.{flipped}",
        f"{export_id}.{expires}.",
        f"{export_id}.{expires}",
        "",
        "../../etc/passwd",
        f"{export_id}.{expires}.{signature}.x",
        f"{export_id}\u00b2.{expires}.{signature}",
        f"{'9' * 5000}.{expires}.{signature}",
    ):
        with pytest.raises(InvalidValue, match="invalid download link"):
            verify_download(SECRET, forged, 0.0, ORG.id)
    with pytest.raises(InvalidValue, match="invalid download link"):
        verify_download(b"another secret, same length!!!!!", token, 0.0, ORG.id)


async def test_secret_is_generated_once_and_kept(store: Store, config: Config) -> None:
    first = await portal_secret(store, config)
    assert len(first) == 64 and await portal_secret(store, config) == first
    with pytest.raises(ConfigError, match=r"\[portal\] secret: expected at least 16"):
        make_config(config.storage.dir.parent, "[portal]\nsecret = 'short'\n")
    configured = make_config(config.storage.dir.parent, "[portal]\nsecret = 'a-long-secret-text'\n")
    assert await portal_secret(store, configured) == b"a-long-secret-text"


async def test_service_resolves_only_valid_links_to_ready_zips(
    store: Store, config: Config
) -> None:
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    await file_recording(store, config.storage.dir, started_at=utc(2024, 5, 2))
    clock = [utc(2024, 6, 2)]
    service = ExportService(store, config, spawn=None, clock=lambda: clock[0])
    job = await build_export(store, config, ORG, "2024-05", requested_by="admin:root")
    link = await service.link(ORG, job.id, clock[0] + 7 * DAY)
    assert link.startswith("https://rec.example.org/exports/download?token=")
    token = link.partition("token=")[2]
    resolved, path = await service.resolve_download(ORG, token)
    assert resolved.id == job.id and zipfile.is_zipfile(path)
    assert await service.verify_link(ORG, token) == (resolved, path)
    # Another organisation's admin cannot use the link.
    assert await service.verify_link(OrgScope(ORG.id + 1, "other"), token) is None
    assert await service.verify_link(ORG, token[:-1]) is None
    assert await service.verify_link(ORG, "") is None
    clock[0] += 7 * DAY + 1
    assert await service.verify_link(ORG, token) is None
    # A token for an export that never became ready leads nowhere.
    queued = await store.create_export(ORG, "2024-04", "admin:root", clock[0])
    secret = await service.secret()
    with pytest.raises(NotFound, match="not available"):
        await service.resolve_download(ORG, sign_download(secret, ORG.id, queued, clock[0] + 60))
    # Without a way to run builds, this service only checks links.
    with pytest.raises(StorageError, match="not available"):
        await service.request(ORG, "2024-05", "admin:root")


async def test_reordering_a_month_in_progress_starts_no_second_build(
    store: Store, config: Config
) -> None:
    await set_retention_days(store, ORG, 180, actor="admin:root")
    await store.set_org_setting(ORG, "bulk_download", "on")
    now = utc(2024, 6, 2)
    building = await store.create_export(ORG, "2024-05", "admin:root", now - 60)
    await store.update_export(building, "building")
    stale = await store.create_export(ORG, "2024-04", "admin:root", now - 7 * 3600)
    await store.update_export(stale, "building")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        service = ExportService(store, config, spawn=tasks.create_task, clock=lambda: now)
        assert await service.request(ORG, "2024-05", "admin:root", None) == building
        fresh = await service.request(ORG, "2024-04", "admin:root", None)
        assert fresh not in (building, stale)
    # Leaving the task group waited for the build it started.

    # After a restart nothing can finish the ones left in progress.
    assert sorted(await fail_interrupted_exports(store, now + 1)) == [building, stale]
    for export_id in (building, stale):
        job = await store.get_export(ORG, export_id)
        assert job is not None and job.status == "failed" and job.error is not None
    job = await store.get_export(ORG, fresh)
    assert job is not None and job.status == "ready"
