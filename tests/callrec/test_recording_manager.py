"""`RecordingManager` on a fake clock: its ticks and repairs take time from what it is
given, so nothing here sleeps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.app import Spawn, background_tasks
from callrec.config import Config
from callrec.policy import SettingKey
from callrec.recording.manager import SETTINGS_REFRESH_S, RecordingManager
from storage.database import Store
from tests.storage.recording_factory import make_config

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.wall = T0
        self.elapsed = 0.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.elapsed


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    opened = await Store.open(config.storage.db_path)
    yield opened
    await opened.close()


def manager(config: Config, store: Store, spawn: Spawn, clock: FakeClock) -> RecordingManager:
    return RecordingManager(config, store, spawn=spawn, now=clock.now, monotonic=clock.monotonic)


async def test_stored_settings_are_re_read_every_refresh_interval_of_its_clock(
    config: Config, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, clock)
        await store.set_setting(SettingKey.FEATURE_CODE, "*5")
        with caplog.at_level(logging.INFO, logger="callrec.recordings"):
            await recordings.tick()
        assert str(recordings.settings.feature_code) == "*5"
        assert "recording settings now: feature code *5" in caplog.text

        await store.set_setting(SettingKey.FEATURE_CODE, "*7")
        clock.elapsed += SETTINGS_REFRESH_S - 0.25
        await recordings.tick()
        assert str(recordings.settings.feature_code) == "*5"  # not yet due
        clock.elapsed += 0.25
        await recordings.tick()
        assert str(recordings.settings.feature_code) == "*7"


async def test_a_recording_left_unfinished_is_closed_at_the_clock_time(
    config: Config, store: Store
) -> None:
    clock = FakeClock()
    call_id = await store.create_call(
        sip_call_id="crashed@test", direction="outbound", started_at=T0 - 60
    )
    recording_id = await store.create_recording(
        call_id=call_id,
        path="recordings/2023/11/14/gone.wav",
        format="wav",
        channels=1,
        sample_rate=8000,
        started_at=T0 - 59,
        retention_days=90,
    )
    clock.wall = T0 + 5
    async with background_tasks() as spawn:
        assert await manager(config, store, spawn, clock).recover() == 1
    row = await store.get_recording(recording_id)
    assert row is not None and row.status == "error" and row.ended_at == T0 + 5
