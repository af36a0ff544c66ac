"""Issue 14: a recording's call time 0 is the answer, also when the manager is asked for
it later (it waits until the call's record exists), so the first packets after the
answer (held by the worker) fall inside the file."""

from __future__ import annotations

from pathlib import Path

from callrec.app import background_tasks
from callrec.config import Config
from callrec.policy import RecordingMode
from callrec.recording.control import RecordingOutcome
from storage.database import Store
from testkit.waiting import wait_until_async
from tests.callrec.test_recording_manager import T0, FakeClock, manager, new_call
from tests.callrec.test_recording_manager import config as config
from tests.callrec.test_recording_manager import store as store


async def test_call_time_zero_and_started_at_are_the_answer(
    config: Config, store: Store, tmp_path: Path
) -> None:
    clock = FakeClock()
    clock.wall = T0 + 0.35  # the call's record took 350 ms to write after the answer
    call = await new_call(store, RecordingMode.ALWAYS)
    call.answered_at = T0
    async with background_tasks() as spawn:
        recordings = manager(config, store, spawn, clock)
        recordings.call_answered(call)  # type: ignore[arg-type]
        spec = call.media.spec
        assert spec is not None and spec.start_time == T0
        [row] = await wait_until_async(
            lambda: store.recordings_with_status("recording"), timeout=5, what="the row"
        )
        assert row.started_at == T0
        assert call.media.outcome is not None
        call.media.outcome.set_result(RecordingOutcome(started=True, status="complete"))
        recordings.finish(call)  # type: ignore[arg-type]
        await recordings.stop()
