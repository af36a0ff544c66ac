"""Retention on a fake clock: nothing goes before expiry, everything expired goes."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.config import Config
from callrec.policy import RETENTION_SLIDER_DAYS as RETENTION_CHOICES
from callrec.services.retention import (
    RetentionTask,
    current_retention_days,
    expire_exports,
    purge_expired,
    set_retention_days,
    validate_retention_days,
)
from storage.database import Store
from storage.errors import InvalidValue, StorageError
from storage.files import RecordingFiles
from testkit.waiting import wait_until_async
from tests.storage.orgs import ORG
from tests.storage.recording_factory import DAY, file_recording, make_config

T0 = 1_700_000_000.0  # 2023-11-14, the fake clock's epoch


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, "[retention]\ndefault_days = 90\n")


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    opened = await Store.open(config.storage.db_path)
    yield opened
    await opened.close()


# -- the setting -----------------------------------------------------------------------


def test_retention_choices_match_the_slider() -> None:
    assert RETENTION_CHOICES[:3] == (30, 31, 32)
    assert RETENTION_CHOICES[-3:] == (120, 180, 365)
    assert len(RETENTION_CHOICES) == 91 + 2


@pytest.mark.parametrize(("value", "days"), [(30, 30), (365, 365), (150, 150), ("120", 120)])
def test_validate_accepts_whole_days_30_to_365(value: object, days: int) -> None:
    assert validate_retention_days(value) == days


@pytest.mark.parametrize("value", [29, 366, 0, -30, True, 90.0, "ninety", "", None, "1e2"])
def test_validate_rejects_everything_else(value: object) -> None:
    with pytest.raises(InvalidValue, match="expected whole days from 30 to 365") as refused:
        validate_retention_days(value)
    assert refused.value.field == "retention_days"
    # The portal maps it by type (422 naming the field); the CLI catches StorageError.
    assert issubclass(InvalidValue, StorageError)


async def test_current_retention_defaults_to_config_then_follows_the_setting(
    store: Store, config: Config
) -> None:
    assert await current_retention_days(store, config, ORG) == 90
    assert await set_retention_days(store, ORG, "200", actor="admin:root") == 200
    assert await current_retention_days(store, config, ORG) == 200
    audit = await store.list_audit(ORG)
    assert [(a.actor, a.action) for a in audit] == [("admin:root", "settings.retention")]
    with pytest.raises(InvalidValue):
        await set_retention_days(store, ORG, 20, actor="admin:root")
    assert await current_retention_days(store, config, ORG) == 200
    await store.set_org_setting(ORG, "retention_days", "garbage")
    assert await current_retention_days(store, config, ORG) == 90


async def test_changing_the_setting_affects_only_new_recordings(
    store: Store, config: Config
) -> None:
    storage = config.storage.dir
    old = await file_recording(
        store,
        storage,
        started_at=T0,
        retention_days=await current_retention_days(store, config, ORG),
    )
    await set_retention_days(store, ORG, 30, actor="admin:root")
    new = await file_recording(
        store,
        storage,
        started_at=T0,
        retention_days=await current_retention_days(store, config, ORG),
    )
    old_row, new_row = (
        await store.get_recording(ORG, old.id),
        await store.get_recording(ORG, new.id),
    )
    assert old_row is not None and new_row is not None
    assert (old_row.retention_days, old_row.expires_at) == (90, T0 + 90 * DAY)
    assert (new_row.retention_days, new_row.expires_at) == (30, T0 + 30 * DAY)

    report = await purge_expired(store, RecordingFiles(storage), T0 + 31 * DAY)
    assert [item.id for item in report.purged] == [new.id]
    assert old.path.exists() and not new.path.exists()


# -- the purge -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_purge_deletes_exactly_the_expired_recordings(
    store: Store, config: Config, seed: int
) -> None:
    """Property on a fake clock: random recordings, random instants; after each purge a
    recording is gone iff it expired by then (and was not still being recorded)."""
    rng = random.Random(seed)
    storage = config.storage.dir
    statuses = ("complete", "complete", "recovered", "error", "unrecordable", "recording")
    filed = []
    for _ in range(20):
        days = rng.choice(RETENTION_CHOICES)
        status = rng.choice(statuses)
        started = T0 + rng.uniform(0, 400 * DAY)
        recording = await file_recording(
            store, storage, started_at=started, retention_days=days, status=status, seconds=0.01
        )
        filed.append((recording, status))
    # Exactly on an expiry instant is one of the instants checked.
    instants = sorted([rng.uniform(0, 800 * DAY) + T0 for _ in range(3)] + [filed[0][0].expires_at])
    for now in instants:
        await purge_expired(store, RecordingFiles(storage), now)
        for recording, status in filed:
            row = await store.get_recording(ORG, recording.id)
            assert row is not None
            should_be_gone = recording.expires_at <= now and status != "recording"
            assert (row.status == "purged") is should_be_gone, (recording, status, now)
            assert recording.path.exists() is not should_be_gone
            if should_be_gone:
                assert row.purged_at is not None and row.purged_at <= now
                assert row.sha256 == recording.sha256  # metadata kept


async def test_nothing_goes_a_millisecond_before_expiry(store: Store, config: Config) -> None:
    recording = await file_recording(store, config.storage.dir, started_at=T0, retention_days=30)
    report = await purge_expired(
        store, RecordingFiles(config.storage.dir), recording.expires_at - 0.001
    )
    assert report.purged == [] and recording.path.exists()
    # The store refuses to mark an unexpired row, whoever asks.
    assert not await store.mark_recording_purged(
        recording.id, at=recording.expires_at - 1, actor="x"
    )
    report = await purge_expired(store, RecordingFiles(config.storage.dir), recording.expires_at)
    assert [item.id for item in report.purged] == [recording.id]


async def test_purge_marks_rows_keeps_metadata_and_audits_each(
    store: Store, config: Config
) -> None:
    storage = config.storage.dir
    expired = [
        await file_recording(store, storage, started_at=T0 + i, retention_days=30) for i in range(3)
    ]
    kept = await file_recording(store, storage, started_at=T0, retention_days=60)
    now = T0 + 45 * DAY
    report = await purge_expired(store, RecordingFiles(storage), now)
    assert sorted(item.id for item in report.purged) == [r.id for r in expired]
    assert all(item.file_found for item in report.purged)
    for recording in expired:
        row = await store.get_recording(ORG, recording.id)
        assert row is not None
        assert (row.status, row.purged_at, row.sha256) == ("purged", now, recording.sha256)
        assert row.path == recording.relative and row.duration_s is not None
        assert not recording.path.exists()
    kept_row = await store.get_recording(ORG, kept.id)
    assert kept_row is not None and kept_row.status == "complete" and kept.path.exists()

    audit = await store.list_audit(ORG)
    assert sorted(entry.object or "" for entry in audit) == sorted(
        f"recording {r.id}" for r in expired
    )
    assert {(entry.actor, entry.action, entry.at) for entry in audit} == {
        ("retention", "purge", now)
    }
    # A second pass has nothing left to do and writes no more audit entries.
    again = await purge_expired(store, RecordingFiles(storage), now + DAY)
    assert again.purged == [] and len(await store.list_audit(ORG)) == 3
    listed = await store.list_recordings(ORG)
    assert len(listed) == 4  # purged recordings stay listed with their call


async def test_read_only_files_are_deleted(store: Store, config: Config) -> None:
    recording = await file_recording(store, config.storage.dir, started_at=T0, retention_days=30)
    assert recording.path.stat().st_mode & 0o777 == 0o444
    report = await purge_expired(store, RecordingFiles(config.storage.dir), T0 + 31 * DAY)
    assert [item.id for item in report.purged] == [recording.id]
    assert not recording.path.exists()


async def test_missing_file_is_still_marked_purged(store: Store, config: Config) -> None:
    recording = await file_recording(store, config.storage.dir, started_at=T0, retention_days=30)
    recording.path.unlink()
    report = await purge_expired(store, RecordingFiles(config.storage.dir), T0 + 31 * DAY)
    assert [(item.id, item.file_found) for item in report.purged] == [(recording.id, False)]
    assert [item.id for item in report.missing] == [recording.id]
    row = await store.get_recording(ORG, recording.id)
    assert row is not None and row.status == "purged"
    (entry,) = await store.list_audit(ORG)
    assert entry.detail is not None and "already missing" in entry.detail


async def test_undeletable_file_stays_unpurged(store: Store, config: Config) -> None:
    storage = config.storage.dir
    recording = await file_recording(store, storage, started_at=T0, retention_days=30)
    # A folder where the file should be cannot be unlinked.
    os.chmod(recording.path, 0o644)
    recording.path.unlink()
    recording.path.mkdir()
    report = await purge_expired(store, RecordingFiles(storage), T0 + 31 * DAY)
    assert report.purged == [] and [f.id for f in report.failed] == [recording.id]
    row = await store.get_recording(ORG, recording.id)
    assert row is not None and row.status == "complete"
    assert await store.list_audit(ORG) == []


async def _expired_row_pointing_at(store: Store, stored_path: str) -> int:
    """A complete recording, expired at T0 + 31 days, whose row names `stored_path`."""
    call_id = await store.create_call(
        ORG.id, sip_call_id=f"{stored_path}@test", direction="inbound", started_at=T0
    )
    recording_id = await store.create_recording(
        call_id=call_id,
        path=stored_path,
        format="wav",
        channels=1,
        sample_rate=8000,
        started_at=T0,
        retention_days=30,
    )
    await store.finish_recording(recording_id, status="complete", ended_at=T0 + 1)
    return recording_id


async def test_a_path_outside_the_storage_folder_is_never_deleted(
    store: Store, config: Config, tmp_path: Path
) -> None:
    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"keep me")
    recording_id = await _expired_row_pointing_at(store, "../precious.wav")
    report = await purge_expired(store, RecordingFiles(config.storage.dir), T0 + 31 * DAY)
    assert [f.id for f in report.failed] == [recording_id]
    assert "outside the recordings folder" in report.failed[0].error
    assert outside.read_bytes() == b"keep me"


async def test_a_symlink_out_of_the_recordings_folder_is_never_followed(
    store: Store, config: Config, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious.wav").write_bytes(b"keep me")
    link = config.storage.dir / "recordings" / "2023"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    recording_id = await _expired_row_pointing_at(store, "recordings/2023/precious.wav")
    report = await purge_expired(store, RecordingFiles(config.storage.dir), T0 + 31 * DAY)
    assert [f.id for f in report.failed] == [recording_id]
    assert (outside / "precious.wav").read_bytes() == b"keep me"


# -- the task --------------------------------------------------------------------------


async def test_task_purges_in_bounded_batches_and_stops(store: Store, config: Config) -> None:
    storage = config.storage.dir
    recordings = [
        await file_recording(store, storage, started_at=T0 + i, retention_days=30) for i in range(5)
    ]
    fake_now = [T0 + 40 * DAY]
    task = RetentionTask(
        store, RecordingFiles(storage), interval_s=0.02, batch=2, clock=lambda: fake_now[0]
    )
    first = await task.run_once()
    assert len(first.purged) == 2  # bounded: one pass, one batch
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(task.run_forever())
        # Five expired at two per pass: the run_once above and two more passes.
        await wait_until_async(lambda: task.passes >= 3, timeout=10, what="three retention passes")
        runner.cancel()
    assert runner.cancelled()  # cancelled means stopped: it runs no further pass
    assert not any(r.path.exists() for r in recordings)
    for recording in recordings:
        row = await store.get_recording(ORG, recording.id)
        assert row is not None and row.status == "purged"


async def test_task_leaves_unexpired_recordings_alone(store: Store, config: Config) -> None:
    storage = config.storage.dir
    recording = await file_recording(store, storage, started_at=T0, retention_days=365)
    task = RetentionTask(
        store, RecordingFiles(storage), interval_s=0.01, clock=lambda: T0 + 364 * DAY
    )
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(task.run_forever())
        await wait_until_async(lambda: task.passes >= 5, timeout=10, what="five passes")
        runner.cancel()
    row = await store.get_recording(ORG, recording.id)
    assert row is not None and row.status == "complete" and recording.path.exists()


async def test_old_export_zips_expire_after_seven_days(store: Store, config: Config) -> None:
    storage = config.storage.dir
    zip_path = storage / "exports" / "1-2024-05.zip"
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(b"PK")
    export_id = await store.create_export(ORG, "2024-05", "admin:root", T0)
    await store.update_export(
        export_id, "ready", path="exports/1-2024-05.zip", finished_at=T0 + 60, bytes=2, files=0
    )
    assert await expire_exports(store, RecordingFiles(storage), T0 + 60 + 7 * DAY - 1) == []
    assert zip_path.exists()
    expired = await expire_exports(store, RecordingFiles(storage), T0 + 60 + 7 * DAY + 1)
    assert [e.id for e in expired] == [export_id] and not zip_path.exists()
    job = await store.get_export(ORG, export_id)
    assert job is not None and job.status == "expired"
