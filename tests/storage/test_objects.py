"""Recording files in a real S3-compatible store (SeaweedFS, testkit/s3.py): upload with
the sealed SHA-256 and its verification, ranged reads, deletion, the month's ZIP and the
retention purge from the object store, and the upload queue across an outage with its
alarm. No mock: every call reaches a `weed server` on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callrec.services.export import MonthExport
from callrec.services.retention import purge_expired
from storage.database import Store
from storage.errors import InvalidValue, NotFound
from storage.files import RecordingFiles
from storage.objects import (
    ChecksumMismatch,
    ObjectStoreUnavailable,
    RangeNotSatisfiable,
    S3Objects,
    S3Settings,
)
from storage.uploads import UploadQueue
from testkit.s3 import SeaweedS3, running_s3, weed_missing
from testkit.sipp_runner import free_port
from tests.storage.orgs import ORG
from tests.storage.recording_factory import DAY, file_recording

pytestmark = [
    pytest.mark.skipif(weed_missing() is not None, reason=str(weed_missing())),
    pytest.mark.timeout(180),
]

T0 = 1_714_564_800.0  # 2024-05-01 12:00 UTC


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    with running_s3() as server:
        yield server


def settings_of(server: SeaweedS3, prefix: str) -> S3Settings:
    return S3Settings.parse(
        f"s3://{server.bucket}/{prefix}",
        endpoint=server.endpoint,
        region="us-east-1",
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


@pytest.fixture
async def files(s3: SeaweedS3, tmp_path: Path) -> AsyncIterator[RecordingFiles]:
    """Recording files under tmp_path/data with a prefix of their own in the bucket."""
    owner = RecordingFiles(tmp_path / "data", S3Objects(settings_of(s3, uuid.uuid4().hex)))
    yield owner
    await owner.close()


def key_of(files: RecordingFiles, relative: str) -> str:
    assert files.objects is not None
    return files.objects.settings.key(relative)


def write_file(files: RecordingFiles, data: bytes) -> tuple[str, Path]:
    new = files.new_recording("wav", T0)
    new.absolute.parent.mkdir(parents=True, exist_ok=True)
    new.absolute.write_bytes(data)
    return new.relative, new.absolute


async def test_upload_is_verified_and_reads_stream_ranges(
    s3: SeaweedS3, files: RecordingFiles
) -> None:
    data = bytes(range(256)) * 4000  # ~1 MB: several chunks
    relative, _ = write_file(files, data)
    sha256 = hashlib.sha256(data).hexdigest()
    info = await files.upload(relative, sha256)
    assert (info.size, info.sha256) == (len(data), sha256)
    # What the server holds, read with a client of its own.
    assert s3.read(key_of(files, relative)) == data
    head = s3.client().head_object(
        Bucket=s3.bucket, Key=key_of(files, relative), ChecksumMode="ENABLED"
    )
    assert head["Metadata"]["sha256"] == sha256
    # The local copy is still served first; once deleted, the object is.
    assert isinstance(await files.open_audio(relative, "bytes=10-19"), Path)
    assert await files.delete_local(relative)
    for byte_range, expected, status in (
        ("bytes=100-199", data[100:200], 206),
        ("bytes=-50", data[-50:], 206),
        ("bytes=999990-", data[999990:], 206),
        (None, data, 200),
    ):
        stream = await files.open_audio(relative, byte_range)
        assert not isinstance(stream, Path)
        try:
            body = b"".join([chunk async for chunk in stream.chunks(4096)])
        finally:
            stream.close()
        assert (stream.status, body, stream.length) == (status, expected, len(expected))
        assert stream.size == len(data)
    with pytest.raises(RangeNotSatisfiable):
        await files.open_audio(relative, f"bytes={len(data) + 10}-")


async def test_bytes_that_differ_from_the_sealed_sha256_are_refused(
    s3: SeaweedS3, files: RecordingFiles
) -> None:
    relative, _ = write_file(files, b"RIFF recorded bytes")
    sealed = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(ChecksumMismatch):
        await files.upload(relative, sealed)
    assert await files.remote_info(relative) is None  # the store kept nothing


async def test_paths_outside_the_recordings_folder_never_reach_the_store(
    files: RecordingFiles,
) -> None:
    for bad in ("../callrec.db", "/etc/passwd", "recordings/../x", "exports/1.zip", ""):
        with pytest.raises(InvalidValue):
            await files.open_audio(bad, None)
        with pytest.raises(InvalidValue):
            await files.delete_recording(bad)


async def test_a_missing_object_is_not_found(files: RecordingFiles) -> None:
    with pytest.raises(NotFound):
        await files.open_audio("recordings/2024/05/01/none.wav", None)
    assert await files.delete_recording("recordings/2024/05/01/none.wav") is False


async def test_month_zip_and_purge_work_from_the_object_store(
    s3: SeaweedS3, files: RecordingFiles, store: Store, tmp_path: Path
) -> None:
    filed = [
        await file_recording(store, files.storage_dir, started_at=T0 + i * 60, seconds=0.5)
        for i in range(3)
    ]
    queue = UploadQueue(store, files, alarm_at=100)
    assert await queue.queue_local_files() == 3
    while await queue.run_once():
        pass
    assert queue.uploaded == 3 and queue.depth == 0
    for item in filed:
        assert not item.path.exists(), "the local copy goes once the upload is verified"
        assert await store.storage_state(item.id) == "remote"
        assert hashlib.sha256(s3.read(key_of(files, item.relative))).hexdigest() == item.sha256

    # The month's ZIP, streamed from the store by the export's worker thread.
    await files.ready()
    listings = await store.export_listings(ORG, T0 - DAY, T0 + DAY)
    target = tmp_path / "month.zip"
    summary = await asyncio.to_thread(MonthExport(files, listings, built_at=T0).write, target)
    assert summary.files == 3 and not summary.missing and not summary.mismatched
    with zipfile.ZipFile(target) as archive:
        digests = {
            hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if name != "manifest.csv"
        }
    assert digests == {item.sha256 for item in filed}

    # Retention: the expired recordings' objects are deleted.
    report = await purge_expired(store, files, filed[-1].expires_at + 1)
    assert sorted(item.id for item in report.purged) == sorted(item.id for item in filed)
    assert all(item.file_found for item in report.purged) and not report.failed
    for item in filed:
        assert await files.remote_info(item.relative) is None
    assert s3.keys(key_of(files, "recordings/")) == []


async def test_the_queue_waits_out_an_outage_alarms_and_then_uploads_everything(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server of its own: this test stops it."""
    server = SeaweedS3()
    server.start()
    files = RecordingFiles(
        tmp_path / "data",
        S3Objects(settings_of(server, "outage"), connect_timeout_s=1, read_timeout_s=3),
    )
    clock = [0.0]
    queue = UploadQueue(
        store,
        files,
        alarm_at=2,
        alarm_interval_s=60,
        first_backoff_s=1,
        max_backoff_s=4,
        monotonic=lambda: clock[0],
    )
    try:
        server.stop()
        filed = [
            await file_recording(store, files.storage_dir, started_at=T0 + i, seconds=0.2)
            for i in range(3)
        ]
        for item in filed:
            assert await store.queue_upload(item.id, queue.node)
        caplog.set_level(logging.INFO, logger="callrec.uploads")
        assert await queue.run_once() is False  # the store is down: wait
        assert queue.depth == 3 and queue.backoff_s == 1 and queue.failures == 1
        alarms = [r for r in caplog.records if "ALARM" in r.getMessage()]
        assert len(alarms) == 1 and alarms[0].levelno == logging.ERROR
        assert "3 recording(s)" in alarms[0].getMessage()
        # Again within the interval: backoff doubles (bounded), no second alarm line.
        clock[0] = 30.0
        assert await queue.run_once() is False
        assert await queue.run_once() is False
        assert await queue.run_once() is False
        assert queue.backoff_s == 4
        assert len([r for r in caplog.records if "ALARM" in r.getMessage()]) == 1
        clock[0] = 61.0
        assert await queue.run_once() is False
        assert len([r for r in caplog.records if "ALARM" in r.getMessage()]) == 2
        for item in filed:  # nothing lost meanwhile
            assert item.path.exists() and await store.storage_state(item.id) == "uploading"

        server.start()
        while await queue.run_once():
            pass
        assert queue.depth == 0 and queue.backoff_s == 0
        for item in filed:
            assert await store.storage_state(item.id) == "remote"
            assert not item.path.exists()
            data = server.read(files.objects.settings.key(item.relative))  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == item.sha256
        assert any("back to 0" in r.getMessage() for r in caplog.records)
    finally:
        await files.close()
        server.close()


async def test_an_unreachable_store_is_a_typed_unavailable_error(tmp_path: Path) -> None:
    settings = S3Settings.parse(
        "s3://nowhere/x",
        endpoint=f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        access_key="a",
        secret_key="b",
    )
    objects = S3Objects(settings, connect_timeout_s=1, read_timeout_s=1)
    try:
        with pytest.raises(ObjectStoreUnavailable) as caught:
            await objects.head("recordings/2024/05/01/x.wav")
        # The type of failure, never the endpoint, bucket or key (a client may see it).
        assert caught.value.message == (
            "object store unreachable (look up): EndpointConnectionError"
        )
    finally:
        await objects.close()
