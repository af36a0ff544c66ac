"""A month's ZIP in local time: the month's bounds, the entry names and their ZIP times
follow the zone in force (Europe/Amsterdam here, across the 2026 changes); the manifest
keeps ISO-8601 UTC and storage stays UTC."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callrec.config import Config
from callrec.services.export import build_export, parse_month
from callrec.services.presentation import Presentations
from callrec.services.retention import set_retention_days
from storage.database import Store
from tests.storage.orgs import ORG
from tests.storage.recording_factory import file_recording, make_config


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, "[portal]\ntimezone = 'Europe/Amsterdam'\nlanguage = 'nl'\n")


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    opened = await Store.open(config.storage.db_path)
    await set_retention_days(opened, ORG, 365, actor="admin:root")
    await opened.set_org_setting(ORG, "bulk_download", "on")
    yield opened
    await opened.close()


async def _zip(store: Store, config: Config, month: str) -> Path:
    job = await build_export(store, config, ORG, month, requested_by="admin:root")
    assert job.status == "ready" and job.path is not None
    return config.storage.dir / job.path


async def _entries(store: Store, config: Config, month: str) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(await _zip(store, config, month)) as archive:
        return sorted(archive.infolist(), key=lambda info: info.filename)


async def test_the_export_month_is_the_local_month(store: Store, config: Config) -> None:
    # 23:30 on 30 September in Amsterdam (21:30 UTC): September.
    await file_recording(store, config.storage.dir, started_at=utc(2026, 9, 30, 21, 30))
    # 00:30 on 1 October in Amsterdam (22:30 UTC on 30 September): October.
    await file_recording(store, config.storage.dir, started_at=utc(2026, 9, 30, 22, 30))
    # 23:30 on 31 October, winter time again (22:30 UTC): October.
    await file_recording(store, config.storage.dir, started_at=utc(2026, 10, 31, 22, 30))
    # 00:30 on 1 November (23:30 UTC on 31 October): November.
    await file_recording(store, config.storage.dir, started_at=utc(2026, 10, 31, 23, 30))

    october = await _entries(store, config, "2026-10")
    names = [info.filename for info in october]
    assert [name[:17] for name in names if name != "manifest.csv"] == [
        "2026-10-01_003000",
        "2026-10-31_233000",
    ]
    times = {info.filename[:17]: info.date_time for info in october}
    assert times["2026-10-01_003000"] == (2026, 10, 1, 0, 30, 0)
    assert times["2026-10-31_233000"] == (2026, 10, 31, 23, 30, 0)
    with zipfile.ZipFile(await _zip(store, config, "2026-10")) as archive:
        manifest = io.TextIOWrapper(archive.open("manifest.csv"), encoding="utf-8")
        rows = list(csv.DictReader(manifest))
    assert [row["call_started_at"] for row in rows] == [
        "2026-09-30T22:30:00.000Z",
        "2026-10-31T22:30:00.000Z",
    ]
    november = await _entries(store, config, "2026-11")
    assert [info.filename[:17] for info in november if info.filename != "manifest.csv"] == [
        "2026-11-01_003000"
    ]
    september = await _entries(store, config, "2026-09")
    assert [info.filename[:17] for info in september if info.filename != "manifest.csv"] == [
        "2026-09-30_233000"
    ]


async def test_a_stored_zone_overrides_the_configs(store: Store, config: Config) -> None:
    await file_recording(store, config.storage.dir, started_at=utc(2026, 9, 30, 22, 30))
    await file_recording(store, config.storage.dir, started_at=utc(2026, 10, 31, 23, 30))
    await store.set_org_setting(ORG, "timezone", "UTC")
    october = await _entries(store, config, "2026-10")
    assert [info.filename[:17] for info in october if info.filename != "manifest.csv"] == [
        "2026-10-31_233000"
    ]


def test_parse_month_in_a_zone_and_without_one() -> None:
    amsterdam = Presentations().get("en", "Europe/Amsterdam")
    assert parse_month("2026-03", amsterdam) == (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    assert parse_month("2026-03") == (utc(2026, 3, 1), utc(2026, 4, 1))
