"""The recordings of all calls in progress: start on answer, tick, file on hang-up.

`RecordingManager` is the asyncio side of recording. It decides from a call's recording
mode whether to record, attaches a `CallRecording` as the relay's tap, ticks every
recorder so audio reaches disk at least once a second, and files the result in the store
when the call ends. At start-up it repairs files left unfinished by a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from b2bua.config import Config
from b2bua.recording import CallRecording, RecordingFile
from media.recorder import RecordingResult
from media.rtp import MediaError
from media.writer import repair
from storage.database import StorageError, Store

if TYPE_CHECKING:
    from b2bua.call import Call

log = logging.getLogger("callrec.recordings")

TICK_INTERVAL_S = 0.25


@dataclass(eq=False)
class ActiveRecording:
    """A recording in progress and its row in the store (once filed)."""

    call: Call
    recording: CallRecording
    filed: asyncio.Task[int | None]


class RecordingManager:
    """Every recording in progress in this process."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.active: dict[Call, ActiveRecording] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()

    @property
    def storage_dir(self) -> Path:
        return self.config.storage.dir

    async def retention_days(self) -> int:
        stored = await self.store.get_setting("retention_days")
        if stored is not None and stored.isdigit():
            return int(stored)
        return self.config.retention.default_days

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self) -> None:
        for call in list(self.active):
            self.finish(call)
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=10)
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            now = time.time()
            for active in list(self.active.values()):
                try:
                    active.recording.tick(now)
                except Exception:
                    # A broken recorder must not stop the others (or the calls).
                    log.exception("call %s: recorder tick failed", active.call.call_id)

    # ------------------------------------------------------------------ calls
    def call_answered(self, call: Call) -> None:
        if call.recording_mode != "always" or call.media is None or call in self.active:
            return
        self.begin(call, start_paused=False)

    def begin(self, call: Call, *, start_paused: bool) -> CallRecording | None:
        """Start recording `call` (paused for on-demand until the feature code)."""
        now = time.time()
        settings = self.config.recording
        try:
            file = RecordingFile.new(
                self.config.storage.recordings_dir, self.storage_dir, settings.format, now
            )
            recording = CallRecording(
                settings,
                file,
                internal_leg=call.internal_leg,
                start_time=now,
                start_paused=start_paused,
                label=call.call_id,
            )
        except (MediaError, OSError) as exc:
            log.error("call %s: cannot start recording: %s", call.call_id, exc)
            return None
        for leg, body in call.sdp.items():
            recording.learn_sdp(leg, body)
        assert call.media is not None
        call.media.tap = recording
        filed = asyncio.get_running_loop().create_task(self._file(call, recording, now))
        self.active[call] = ActiveRecording(call, recording, filed)
        log.info("call %s: recording to %s", call.call_id, file.relative)
        return recording

    async def _file(self, call: Call, recording: CallRecording, now: float) -> int | None:
        if call.cdr_id is None:
            log.error("call %s: recording has no call record to attach to", call.call_id)
            return None
        try:
            return await self.store.create_recording(
                call_id=call.cdr_id,
                path=recording.file.relative,
                format=recording.format,
                channels=recording.channels,
                sample_rate=8000,
                started_at=now,
                retention_days=await self.retention_days(),
                owner_ext=call.owner_ext,
            )
        except StorageError as exc:
            log.error("call %s: recording not filed: %s", call.call_id, exc)
            return None

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None:
        active = self.active.get(call)
        if active is not None:
            active.recording.learn_sdp(leg, sdp)

    def finish(self, call: Call) -> None:
        """The call ended: close its file (in a thread) and record the outcome."""
        active = self.active.pop(call, None)
        if active is None:
            return
        if call.media is not None:
            call.media.tap = None
        task = asyncio.get_running_loop().create_task(self._finish(active, time.time()))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, active: ActiveRecording, now: float) -> None:
        call = active.call
        result = await asyncio.to_thread(active.recording.close, now)
        recording_id = await active.filed
        status, error = outcome(result)
        if not result.media_seen:
            log.warning("call %s: no RTP at all; the recording is silence", call.call_id)
        if status != "complete":
            log.warning("call %s: recording %s: %s", call.call_id, status, error)
        else:
            log.info(
                "call %s: recorded %.1f s to %s",
                call.call_id,
                result.duration_s,
                active.recording.file.relative,
            )
        if recording_id is None:
            return
        summary = result.file
        try:
            await self.store.finish_recording(
                recording_id,
                status=status,
                ended_at=now,
                duration_s=summary.duration_s if summary else result.duration_s,
                segments=result.segments,
                sha256=summary.sha256 if summary else None,
                size=summary.bytes if summary else None,
                error=error,
            )
        except StorageError as exc:
            log.error("call %s: recording outcome not stored: %s", call.call_id, exc)

    # ------------------------------------------------------------------ crash recovery
    async def recover(self) -> int:
        """Repair recordings a crash left unfinished; returns how many were found."""
        unfinished = await self.store.recordings_with_status("recording")
        for row in unfinished:
            path = self.storage_dir / row.path
            result = await asyncio.to_thread(repair, path)
            summary = result.summary
            status = "recovered" if summary is not None else "error"
            await self.store.finish_recording(
                row.id,
                status=status,
                ended_at=time.time(),
                duration_s=summary.duration_s if summary else None,
                segments=[(0.0, summary.duration_s)] if summary else (),
                sha256=summary.sha256 if summary else None,
                size=summary.bytes if summary else None,
                error=result.error or f"unfinished at start-up ({result.action})",
            )
            log.warning("recording %s %s after a crash: %s", row.path, status, result.action)
        return len(unfinished)


def outcome(result: RecordingResult) -> tuple[str, str | None]:
    """The store status of a closed recording and why it is not `complete`."""
    if result.file is None:
        return "error", result.error or "the file could not be finished"
    if result.error:
        return "error", result.error
    if result.unrecordable_reason:
        return "unrecordable", f"unrecordable codec: {result.unrecordable_reason}"
    return "complete", None
