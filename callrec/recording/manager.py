"""The recordings of all calls in progress: start on answer, tick, file on hang-up.

`RecordingManager` is the asyncio side of recording. It decides from a call's recording
mode whether to record, attaches a `CallRecording` as the relay's tap, ticks every
recorder so audio reaches disk at least once a second, plays the legal notice and the
toggle beeps, and files the result in the store when the call ends. At start-up it
repairs files left unfinished by a crash.

Its background work (the ticker, filing, fsyncs, closing files) runs in tasks started by
the `spawn` its owner hands in (`callrec serve`'s task group); `stop()` waits only for
the work that files a finished recording. Time comes from the injected `now` (wall
clock, for what is stored) and `monotonic` (intervals), so tests can drive a fake clock
through `tick()` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from callrec.config import Config
from callrec.policy import PolicyError, RecordingMode, RecordingSettings
from callrec.recording.session import CallRecording, MediaFormat, RecordingFile, Toggle
from media.announce import load_announcement
from media.recorder import RecordingResult
from media.relay import MediaSession
from media.rtp import MediaError
from media.writer import repair
from storage.database import Store
from storage.errors import InvalidValue, StorageError
from storage.files import RecordingFiles

if TYPE_CHECKING:
    from b2bua.call import Call
    from b2bua.message import SipRequest

log = logging.getLogger("callrec.recordings")

TICK_INTERVAL_S = 0.25
SETTINGS_REFRESH_S = 2.0


@dataclass(eq=False)
class ActiveRecording:
    """A recording in progress, the media format of each leg, and its row in the store."""

    call: Call
    recording: CallRecording
    media: dict[str, MediaFormat] = field(default_factory=dict)
    filed: asyncio.Task[int | None] | None = None
    toggles: list[Toggle] = field(default_factory=list)


class RecordingManager:
    """Every recording in progress in this process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.files = RecordingFiles(config.storage.dir)
        self.active: dict[Call, ActiveRecording] = {}
        self.settings: RecordingSettings = config.recording_settings
        # Stored settings already reported as invalid: read every 2 s, logged once.
        self._invalid_settings: set[str] = set()
        self._prompts: dict[str, npt.NDArray[np.int16] | None] = {}
        self.spawn = spawn
        self.now = now
        self.monotonic = monotonic
        # What stop() waits for: the tasks that close and file finished recordings.
        self._finishing: set[asyncio.Task[Any]] = set()
        self._syncing: asyncio.Task[Any] | None = None
        self._refreshed_at: float | None = None

    @property
    def storage_dir(self) -> Path:
        return self.config.storage.dir

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start ticking (the task runs until its owner cancels it)."""
        self.spawn(self._tick_forever())

    async def stop(self) -> None:
        """Finish every recording in progress and wait until each is filed (bounded: a
        store that hangs must not hold the shutdown for ever)."""
        for call in list(self.active):
            self.finish(call)
        pending = [*self._finishing, *([self._syncing] if self._syncing is not None else [])]
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def refresh_settings(self) -> None:
        """Pick up what the portal stored in `settings` (feature code, channels...)."""
        stored = await self.store.all_settings()
        settings = self.config.recording_settings.with_stored(
            stored, on_invalid=self._invalid_setting
        )
        if settings != self.settings:
            log.info(
                "recording settings now: feature code %s, retention %d days, %s %s,"
                " announcement %s",
                settings.feature_code,
                settings.retention_days,
                settings.channels,
                settings.format,
                settings.announcement,
            )
        self.settings = settings

    def _invalid_setting(self, error: PolicyError) -> None:
        if error.message not in self._invalid_settings:
            self._invalid_settings.add(error.message)
            log.warning("stored setting ignored, the config's value applies: %s", error)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            await self.tick()

    async def tick(self) -> None:
        """Write what every recorder has buffered, start the fsyncs that are due and,
        every SETTINGS_REFRESH_S, re-read the stored settings."""
        now = self.now()
        for active in list(self.active.values()):
            try:
                active.recording.tick(now)
            except Exception:
                # A broken recorder must not stop the others (or the calls).
                log.exception("call %s: recorder tick failed", active.call.call_id)
        self._sync_files()
        since = self.monotonic()
        if self._refreshed_at is None or since - self._refreshed_at >= SETTINGS_REFRESH_S:
            self._refreshed_at = since
            try:
                await self.refresh_settings()
            except StorageError as exc:
                log.error("cannot read settings: %s", exc)

    def _sync_files(self) -> None:
        """fsync, in a worker thread, each file that got a second of audio since its last
        sync: a slow disk must not stall the event loop (signalling and the relay)."""
        if self._syncing is not None and not self._syncing.done():
            return  # the disk is behind; the files are claimed again once it is done
        due = [active.recording for active in self.active.values() if active.recording.claim_sync()]
        if due:
            self._syncing = self.spawn(asyncio.to_thread(_sync_each, due))

    def prompt(self, setting: str) -> npt.NDArray[np.int16] | None:
        if setting not in self._prompts:
            try:
                self._prompts[setting] = load_announcement(setting)
            except MediaError as exc:
                log.error("announcement %r unusable, playing none: %s", setting, exc)
                self._prompts[setting] = None
        return self._prompts[setting]

    # ------------------------------------------------------------------ calls
    def call_answered(self, call: Call) -> None:
        relay = _relay(call)
        if (
            call.recording_mode not in (RecordingMode.ALWAYS, RecordingMode.ON_DEMAND)
            or relay is None
        ):
            return
        if call in self.active:
            return
        now = self.now()
        settings = self.settings
        new = self.files.new_recording(settings.format, now)
        file = RecordingFile(new.relative, new.absolute)
        try:
            recording = CallRecording(
                self.config.recording,
                file,
                internal_leg=call.internal_leg,
                start_time=now,
                mode=call.recording_mode,
                feature_code=settings.feature_code,
                channels=settings.channels,
                label=call.call_id,
                now=self.now,
            )
        except (MediaError, OSError, ValueError) as exc:
            log.error("call %s: cannot start recording: %s", call.call_id, exc)
            return
        active = ActiveRecording(call, recording)
        recording.on_toggle = functools.partial(self._on_toggle, active)
        for leg, body in call.sdp.items():
            media = recording.learn_sdp(leg, body)
            if media is not None:
                active.media[leg] = media
        relay.tap = recording
        if recording.swallower is not None:
            relay.rtp_filter = recording.rtp_filter
            recording.release = functools.partial(relay.forward, call.internal_leg)
        self.active[call] = active
        if recording.started:
            self._recording_started(active, now)
        log.info(
            "call %s: %s recording ready (%s)", call.call_id, call.recording_mode, file.relative
        )

    def _on_toggle(self, active: ActiveRecording, toggle: Toggle) -> None:
        active.toggles.append(toggle)
        if toggle.first_start:
            self._recording_started(active, toggle.at)
        else:
            self._play(active, self.prompt("beep"), [active.call.internal_leg])
        self.spawn(self._log_toggle(active, toggle))

    def _recording_started(self, active: ActiveRecording, at: float) -> None:
        """Recording begins: file the row, and tell both parties (the legal notice)."""
        active.filed = self.spawn(self._file(active, at))
        prompt = self.prompt(self.settings.announcement)
        if self._play(active, prompt, ["a", "b"]) and prompt is not None:
            active.recording.add_prompt(prompt, self.now())

    def _play(
        self, active: ActiveRecording, pcm: npt.NDArray[np.int16] | None, legs: list[str]
    ) -> bool:
        media = _relay(active.call)
        if pcm is None or media is None:
            return False
        played = False
        for leg in legs:
            fmt = active.media.get(leg)
            if fmt is None or fmt.g711 is None:
                log.warning(
                    "call %s: no G.711 on leg %s to play a prompt in", active.call.call_id, leg
                )
                continue
            try:
                media.play(leg, pcm, fmt.g711[0], fmt.g711[1])
                played = True
            except MediaError as exc:
                log.warning("call %s: prompt on leg %s: %s", active.call.call_id, leg, exc)
        return played

    async def _file(self, active: ActiveRecording, at: float) -> int | None:
        call, recording = active.call, active.recording
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
                started_at=at,
                retention_days=self.settings.retention_days,
                owner_ext=call.owner_ext,
            )
        except StorageError as exc:
            log.error("call %s: recording not filed: %s", call.call_id, exc)
            return None

    async def _log_toggle(self, active: ActiveRecording, toggle: Toggle) -> None:
        if active.filed is None:
            return
        recording_id = await active.filed
        if recording_id is None:
            return
        try:
            await self.store.add_recording_toggle(
                recording_id, toggle.at, toggle.action, toggle.method
            )
        except StorageError as exc:
            log.error("call %s: toggle not logged: %s", active.call.call_id, exc)

    def media_changed(self, call: Call, leg: str, sdp: bytes) -> None:
        active = self.active.get(call)
        if active is not None:
            media = active.recording.learn_sdp(leg, sdp)
            if media is not None:
                active.media[leg] = media

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None:
        """A SIP INFO from the call: the feature code may come that way."""
        active = self.active.get(call)
        if active is None or leg != call.internal_leg:
            return
        content_type = request.headers.get("Content-Type") or ""
        active.recording.on_info(content_type, request.body, self.now())

    def finish(self, call: Call) -> None:
        """The call ended: close its file (in a thread) and record the outcome."""
        active = self.active.pop(call, None)
        if active is None:
            return
        relay = _relay(call)
        if relay is not None:
            relay.tap = None
            relay.rtp_filter = None
        task = self.spawn(self._finish(active, self.now()))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, active: ActiveRecording, now: float) -> None:
        call, recording = active.call, active.recording
        result = await asyncio.to_thread(recording.close, now)
        if not recording.started:
            return  # on-demand and never started: no file, nothing to file
        recording_id = await active.filed if active.filed is not None else None
        status, error = outcome(result)
        if not result.media_seen:
            log.warning("call %s: no RTP at all; the recording is silence", call.call_id)
        if status != "complete":
            log.warning("call %s: recording %s: %s", call.call_id, status, error)
        else:
            log.info(
                "call %s: recorded %.1f s to %s",
                call.call_id,
                result.file.duration_s if result.file else 0.0,
                recording.file.relative,
            )
        if recording_id is None:
            return
        summary = result.file
        try:
            await self.store.finish_recording(
                recording_id,
                status=status,
                ended_at=now,
                duration_s=summary.duration_s if summary else None,
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
            try:
                path = self.files.resolve(row.path)
            except InvalidValue as exc:
                await self.store.finish_recording(
                    row.id, status="error", ended_at=self.now(), error=exc.message
                )
                log.error("recording %d not repaired: %s", row.id, exc)
                continue
            result = await asyncio.to_thread(repair, path)
            summary = result.summary
            status = "recovered" if summary is not None else "error"
            await self.store.finish_recording(
                row.id,
                status=status,
                ended_at=self.now(),
                duration_s=summary.duration_s if summary else None,
                segments=[(0.0, summary.duration_s)] if summary else (),
                sha256=summary.sha256 if summary else None,
                size=summary.bytes if summary else None,
                error=result.error or f"unfinished at start-up ({result.action})",
            )
            log.warning("recording %s %s after a crash: %s", row.path, status, result.action)
        return len(unfinished)


def _relay(call: Call) -> MediaSession | None:
    """The call's relay session (the app's media factory makes `MediaSession`s)."""
    return call.media if isinstance(call.media, MediaSession) else None


def _sync_each(recordings: list[CallRecording]) -> None:
    for recording in recordings:
        recording.sync()


def outcome(result: RecordingResult) -> tuple[str, str | None]:
    """The store status of a closed recording and why it is not `complete`."""
    if result.file is None:
        return "error", result.error or "the file could not be finished"
    if result.file.partial is not None:
        # Writing stopped early (disk full...): what was written is sealed and playable.
        return "partial", result.file.partial
    if result.error:
        return "error", result.error
    if result.unrecordable_reason:
        return "unrecordable", f"unrecordable codec: {result.unrecordable_reason}"
    return "complete", None
