"""`RecordingManager` on a fake clock: its ticks and repairs take time from what it is
given, so nothing here sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callrec.app import Spawn, background_tasks
from callrec.config import Config
from callrec.policy import RecordingMode, SettingKey
from callrec.recording.control import RecordingOutcome, RecordingSpec, Toggle
from callrec.recording.manager import SETTINGS_REFRESH_S, RecordingManager
from media.writer import RecordingWriter
from storage.database import Store
from testkit.waiting import wait_until_async
from tests.storage.orgs import ORG
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
        await store.set_org_setting(ORG, SettingKey.FEATURE_CODE, "*5")
        with caplog.at_level(logging.INFO, logger="callrec.recordings"):
            await recordings.tick()
        assert str(recordings.org_settings[ORG.id].feature_code) == "*5"
        assert "recording settings of organisation 1 now: feature code *5" in caplog.text

        await store.set_org_setting(ORG, SettingKey.FEATURE_CODE, "*7")
        clock.elapsed += SETTINGS_REFRESH_S - 0.25
        await recordings.tick()
        assert str(recordings.org_settings[ORG.id].feature_code) == "*5"  # not yet due
        clock.elapsed += 0.25
        await recordings.tick()
        assert str(recordings.org_settings[ORG.id].feature_code) == "*7"


async def test_each_call_gets_its_own_organisations_settings(config: Config, store: Store) -> None:
    """Two organisations, two feature codes and retentions: a call of each is recorded
    with its own organisation's, and its recording filed under its organisation."""
    other = (await store.add_organisation("beta", "Beta", "beta.example")).scope
    await store.set_org_settings(ORG, {"feature_code": "*5", "retention_days": "40"})
    await store.set_org_settings(other, {"feature_code": "*8", "retention_days": "200"})
    clock = FakeClock()
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, clock)
        await recordings.tick()
        mine = await new_call(store, RecordingMode.ALWAYS)
        cdr = await store.create_call(
            other.id, sip_call_id="beta@test", direction="outbound", started_at=T0
        )
        theirs = FakeCall(cdr_id=cdr, recording_mode=RecordingMode.ALWAYS, org_id=other.id)
        for call in (mine, theirs):
            recordings.call_answered(call)  # type: ignore[arg-type]
        assert mine.media.spec is not None and theirs.media.spec is not None
        assert (mine.media.spec.feature_code, theirs.media.spec.feature_code) == ("*5", "*8")
        for call in (mine, theirs):
            filed = recordings.active[call].filed  # type: ignore[index]
            assert filed is not None and await filed is not None
    (own,) = await store.list_recordings(ORG)
    (their,) = await store.list_recordings(other)
    assert (own.recording.retention_days, their.recording.retention_days) == (40, 200)
    assert own.call.sip_call_id == "call@test" and their.call.sip_call_id == "beta@test"


async def test_a_recording_left_unfinished_is_closed_at_the_clock_time(
    config: Config, store: Store
) -> None:
    clock = FakeClock()
    call_id = await store.create_call(
        ORG.id, sip_call_id="crashed@test", direction="outbound", started_at=T0 - 60
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
    row = await store.get_recording(ORG, recording_id)
    assert row is not None and row.status == "error" and row.ended_at == T0 + 5


# ---------------------------------------------------------------- a call's media
class FakeMedia:
    """A `RecordedMedia` whose worker reports what the test says."""

    def __init__(self) -> None:
        self.spec: RecordingSpec | None = None
        self.sdp: dict[str, bytes] = {}
        self.on_toggle: Callable[[Toggle], None] | None = None
        self.outcome: asyncio.Future[RecordingOutcome] | None = None
        self.stopped_at: float | None = None

    def start_recording(
        self,
        spec: RecordingSpec,
        sdp: dict[str, bytes],
        on_toggle: Callable[[Toggle], None],
        on_digit: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.spec, self.sdp, self.on_toggle = spec, sdp, on_toggle
        self.on_digit = on_digit
        self.outcome = asyncio.get_running_loop().create_future()

    def learn_sdp(self, leg: str, body: bytes) -> None:
        self.sdp[leg] = body

    def info(self, content_type: str, body: bytes, at: float) -> None:
        pass

    def stop_recording(self, at: float) -> asyncio.Future[RecordingOutcome]:
        assert self.outcome is not None
        self.stopped_at = at
        return self.outcome


@dataclass(eq=False)
class FakeCall:
    cdr_id: int
    recording_mode: str
    media: FakeMedia = field(default_factory=FakeMedia)
    call_id: str = "call@test"
    internal_leg: str = "a"
    watched_legs: tuple[str, ...] = ("a",)
    owner_ext: str = "201"
    org_id: int | None = 1
    sdp: dict[str, bytes] = field(default_factory=lambda: {"a": b"v=0\r\n"})
    answered_at: float | None = None  # None: the manager's clock says when


async def new_call(store: Store, mode: str) -> FakeCall:
    cdr = await store.create_call(
        ORG.id, sip_call_id="call@test", direction="outbound", started_at=T0
    )
    return FakeCall(cdr_id=cdr, recording_mode=mode)


async def test_a_recording_whose_worker_died_is_repaired_and_filed_partial(
    config: Config, store: Store
) -> None:
    clock = FakeClock()
    call = await new_call(store, RecordingMode.ALWAYS)
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, clock)
        recordings.call_answered(call)  # type: ignore[arg-type]
        spec = call.media.spec
        assert spec is not None and spec.mode == RecordingMode.ALWAYS
        assert call.media.sdp == call.sdp and spec.start_time == T0
        # What the worker wrote before it was killed: a WAV whose header was never patched.
        writer = RecordingWriter(Path(spec.absolute), 2, format="wav")
        writer.write(np.full((8000, 2), 1000, dtype=np.int16))
        writer.sync()
        assert call.media.outcome is not None
        call.media.outcome.set_result(RecordingOutcome(started=True, lost=True))
        clock.wall = T0 + 3
        recordings.finish(call)  # type: ignore[arg-type]
        await recordings.stop()
    [row] = await store.recordings_with_status("partial")
    assert row.path == spec.relative and row.ended_at == T0 + 3
    assert row.duration_s == pytest.approx(1.0)
    assert "media worker lost" in (row.error or "")
    audio, rate = sf.read(spec.absolute, dtype="int16", always_2d=True)
    assert (rate, audio.shape) == (8000, (8000, 2))
    assert hashlib.sha256(Path(spec.absolute).read_bytes()).hexdigest() == row.sha256


async def test_an_on_demand_recording_is_filed_at_its_first_toggle(
    config: Config, store: Store
) -> None:
    clock = FakeClock()
    call = await new_call(store, RecordingMode.ON_DEMAND)
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, clock)
        recordings.call_answered(call)  # type: ignore[arg-type]
        assert await store.recordings_with_status("recording") == []
        on_toggle = call.media.on_toggle
        assert on_toggle is not None
        on_toggle(Toggle("start", "rfc4733", T0 + 1, first_start=True))
        on_toggle(Toggle("stop", "rfc4733", T0 + 2, first_start=False))
        [row] = await wait_until_async(
            lambda: store.recordings_with_status("recording"), timeout=5, what="the row"
        )
        assert row.started_at == T0 + 1
        assert call.media.outcome is not None
        call.media.outcome.set_result(
            RecordingOutcome(started=True, status="complete", duration_s=1.0, media_seen=True)
        )
        recordings.finish(call)  # type: ignore[arg-type]
        await recordings.stop()
    assert await store.recording_toggles(row.id) == [
        (T0 + 1, "start", "rfc4733"),
        (T0 + 2, "stop", "rfc4733"),
    ]
    [done] = await store.recordings_with_status("complete")
    assert done.id == row.id and done.duration_s == 1.0


async def test_an_on_demand_call_never_recorded_files_nothing(config: Config, store: Store) -> None:
    call = await new_call(store, RecordingMode.ON_DEMAND)
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, FakeClock())
        recordings.call_answered(call)  # type: ignore[arg-type]
        assert call.media.outcome is not None
        call.media.outcome.set_result(RecordingOutcome(started=False))
        recordings.finish(call)  # type: ignore[arg-type]
        await recordings.stop()
    assert call.media.stopped_at == T0
    for status in ("recording", "complete", "error", "partial"):
        assert await store.recordings_with_status(status) == []
