"""The recorders' tick in a worker is split into slices of `TICK_SLICE_S`, so that a pass
over every recorder never holds the event loop (packets, the `open` a call's setup waits
for) for the whole pass. Driven by a fake work clock: no timing in the test."""

from __future__ import annotations

import asyncio
import itertools
from typing import cast

from callrec.recording.session import CallRecording
from callrec.workers.worker import TICK_SLICE_S, MediaWorker, _WorkerCall
from media.relay import MediaSession

RECORDERS = 12


class FakeRecording:
    """Counts its ticks into a shared log; never has a file to sync."""

    def __init__(self, name: int, log: list[int]) -> None:
        self.label = str(name)
        self.name = name
        self.log = log

    def tick(self, now: float) -> None:
        self.log.append(self.name)

    def claim_sync(self) -> bool:
        return False


def worker_with_recordings(step: float) -> tuple[MediaWorker, list[int]]:
    """A worker with RECORDERS recorded calls whose work clock moves `step` a reading."""
    readings = itertools.count()
    worker = MediaWorker(
        "127.0.0.1", 40000, 40099, lambda message: None, work_clock=lambda: next(readings) * step
    )
    ticked: list[int] = []
    for sid in range(RECORDERS):
        call = _WorkerCall(sid, cast(MediaSession, None))
        call.recording = cast(CallRecording, FakeRecording(sid, ticked))
        worker.calls[sid] = call
    return worker, ticked


async def test_a_pass_lets_the_loop_run_between_slices_and_ticks_each_recorder_once() -> None:
    # Each reading of the work clock is 60 % of a slice: the slice is used up after
    # every second recorder.
    worker, ticked = worker_with_recordings(TICK_SLICE_S * 0.6)
    seen_by_the_loop: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: seen_by_the_loop.append(len(ticked)))
    await worker.tick_in_slices()
    assert seen_by_the_loop == [2]  # the loop ran after the first slice, not at the end
    assert ticked == list(range(RECORDERS))


async def test_a_pass_within_its_slice_does_not_yield() -> None:
    worker, ticked = worker_with_recordings(0.0)
    seen_by_the_loop: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: seen_by_the_loop.append(len(ticked)))
    await worker.tick_in_slices()
    assert seen_by_the_loop == []  # nothing was due: one go, as before
    assert ticked == list(range(RECORDERS))


async def test_a_recorder_taken_off_while_the_pass_yields_is_not_ticked() -> None:
    worker, ticked = worker_with_recordings(TICK_SLICE_S * 0.6)

    def close_call_5() -> None:
        # What `_close` does: the recorder is taken off before a thread closes it.
        call = worker.calls.pop(5)
        call.recording = None

    asyncio.get_running_loop().call_soon(close_call_5)
    await worker.tick_in_slices()
    assert ticked == [sid for sid in range(RECORDERS) if sid != 5]
