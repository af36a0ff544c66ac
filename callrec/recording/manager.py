"""The recordings of all calls in progress: start on answer, file on hang-up.

`RecordingManager` is the SIP process's side of recording. It decides from a call's
recording mode whether to record (an internal call's mode is the rule over both users'
modes, `callrec.policy.internal_call_recording`, which the SIP side applied; the
recording is filed under the user whose mode decided, and the feature code is watched
on each on-demand user's phone), asks the call's media (a `RecordedMedia`: the relay
and the recorder live together in a media worker, `callrec.workers`) to start the
recorder with a `RecordingSpec`, feeds it SDP changes and SIP INFO, and files the
result in the store, which only this process owns: a row when recording starts, each
feature-code toggle, and the outcome when the call ends. A worker that dies leaves an
unfinished file; its recordings come back as `lost`, and the manager repairs the file
(`media.writer.repair`) and files it as `partial`. At start-up it repairs files a crash
left unfinished.

Its background work (filing, the settings refresh) runs in tasks started by the `spawn`
its owner hands in (`callrec serve`'s task group); `stop()` waits only for the work that
files a finished recording. Time comes from the injected `now` (wall clock, for what is
stored) and `monotonic` (intervals), so tests can drive a fake clock through `tick()`
instead of sleeping.

Where a finished file goes is `storage.files.RecordingFiles`' (handed in by the owner,
or built from `[storage]`): with an object store, each finished recording is queued
for upload as it is filed, and an `storage.uploads.UploadQueue` (started with the
ticker) uploads it, verifies it and only then deletes the local copy.
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

from callrec.config import Config
from callrec.policy import ANNOUNCEMENT_UPLOADED, PolicyError, RecordingMode, RecordingSettings
from callrec.recording.control import RecordedMedia, RecordingOutcome, RecordingSpec, Toggle
from callrec.recording.session import negotiated_rate
from media.writer import repair
from storage.database import Store
from storage.errors import InvalidValue, StorageError
from storage.files import RecordingFiles
from storage.notices import NOTICE_SETTING, NoticeFiles, UploadedNotice
from storage.uploads import UploadQueue

if TYPE_CHECKING:
    from b2bua.call import Call
    from b2bua.message import SipRequest

log = logging.getLogger("callrec.recordings")

TICK_INTERVAL_S = 0.25
SETTINGS_REFRESH_S = 2.0
WORKER_LOST = "media worker lost"


@dataclass(eq=False)
class ActiveRecording:
    """A recording in progress, the media that records it, and its row in the store."""

    call: Call
    media: RecordedMedia
    spec: RecordingSpec
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
        files: RecordingFiles | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.files = files if files is not None else RecordingFiles.from_config(config.storage)
        # With an object store: the queue of finished recordings on their way there.
        self.uploads: UploadQueue | None = None
        if self.files.remote:
            self.uploads = UploadQueue(
                store,
                self.files,
                alarm_at=config.storage.upload_queue_alarm,
                max_backoff_s=config.storage.upload_retry_max,
            )
        self.active: dict[Call, ActiveRecording] = {}
        # The config's settings, and each organisation's in force (its stored ones over
        # the config's), refreshed every SETTINGS_REFRESH_S; a call uses its organisation's.
        self.settings: RecordingSettings = config.recording_settings
        self.org_settings: dict[int, RecordingSettings] = {}
        # Each organisation's uploaded notice file (announcement "uploaded"), refreshed
        # with the settings.
        self.notices = NoticeFiles(config.storage.dir)
        self.org_notices: dict[int, Path] = {}
        # Stored settings already reported as invalid: read every 2 s, logged once.
        self._invalid_settings: set[str] = set()
        self.spawn = spawn
        self.now = now
        self.monotonic = monotonic
        # What stop() waits for: the tasks that close and file finished recordings.
        self._finishing: set[asyncio.Task[Any]] = set()
        self._refreshed_at: float | None = None

    @property
    def storage_dir(self) -> Path:
        return self.config.storage.dir

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start ticking, and uploading with an object store (the tasks run until their
        owner cancels them)."""
        self.spawn(self._tick_forever())
        if self.uploads is not None:
            self.spawn(self.uploads.run_forever())

    async def stop(self) -> None:
        """Finish every recording in progress and wait until each is filed (bounded: a
        store or a worker that hangs must not hold the shutdown for ever)."""
        for call in list(self.active):
            self.finish(call)
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=10)

    async def refresh_settings(self) -> None:
        """Pick up what each organisation stored (feature code, channels...)."""
        refreshed: dict[int, RecordingSettings] = {}
        notices: dict[int, Path] = {}
        for org_id, stored in (await self.store.all_org_settings()).items():
            notice = UploadedNotice.from_setting(stored.get(NOTICE_SETTING))
            if notice is not None:
                notices[org_id] = self.notices.path(org_id, notice.file)
            settings = self.config.recording_settings.with_stored(
                stored, on_invalid=self._invalid_setting
            )
            if settings != self.org_settings.get(org_id):
                log.info(
                    "recording settings of organisation %d now: feature code %s, retention"
                    " %d days, %s %s, announcement %s",
                    org_id,
                    settings.feature_code,
                    settings.retention_days,
                    settings.channels,
                    settings.format,
                    settings.announcement,
                )
            refreshed[org_id] = settings
        self.org_settings = refreshed
        for org_id, path in notices.items():
            if self.org_notices.get(org_id) != path:
                log.info("organisation %d: its uploaded notice is now %s", org_id, path.name)
        self.org_notices = notices

    def settings_for(self, call: Call) -> RecordingSettings:
        """The settings in force for `call`: its organisation's (the config's until
        they are first read)."""
        if call.org_id is None:
            return self.settings
        return self.org_settings.get(call.org_id, self.settings)

    def announcement_for(self, call: Call, settings: RecordingSettings) -> str:
        """What the media worker plays: the announcement setting, or for "uploaded" the
        file of the call's organisation's own notice (the shipped notice if it has none,
        so that callers are never left unwarned)."""
        if settings.announcement != ANNOUNCEMENT_UPLOADED:
            return settings.announcement
        path = self.org_notices.get(call.org_id) if call.org_id is not None else None
        if path is None:
            log.warning("call %s: no uploaded notice; playing the shipped one", call.call_id)
            return "default"
        return str(path)

    def _invalid_setting(self, error: PolicyError) -> None:
        if error.message not in self._invalid_settings:
            self._invalid_settings.add(error.message)
            log.warning("stored setting ignored, the config's value applies: %s", error)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            await self.tick()

    async def tick(self) -> None:
        """Every SETTINGS_REFRESH_S, re-read the stored settings. (The recorders are
        ticked, and their files synced, by the media workers that run them.)"""
        since = self.monotonic()
        if self._refreshed_at is None or since - self._refreshed_at >= SETTINGS_REFRESH_S:
            self._refreshed_at = since
            try:
                await self.refresh_settings()
            except StorageError as exc:
                log.error("cannot read settings: %s", exc)

    # ------------------------------------------------------------------ calls
    def call_answered(self, call: Call) -> None:
        media = call.media
        if call.recording_mode not in (
            RecordingMode.ALWAYS,
            RecordingMode.ON_DEMAND,
        ) or not isinstance(media, RecordedMedia):
            return
        if call in self.active:
            return
        # Call time 0 is the answer, also when this runs later (it waits for the call's
        # record to exist): the worker holds the RTP that came since (issue 14).
        now = call.answered_at if call.answered_at is not None else self.now()
        settings = self.settings_for(call)
        new = self.files.new_recording(settings.format, now)
        recording = self.config.recording
        spec = RecordingSpec(
            relative=new.relative,
            absolute=str(new.absolute),
            format=recording.format,
            channels=settings.channels,
            internal_leg=call.internal_leg,
            start_time=now,
            mode=call.recording_mode,
            feature_code=settings.feature_code.text,
            feature_code_timeout=recording.feature_code_timeout,
            paused=recording.paused,
            swallow_feature_code=recording.swallow_feature_code,
            announcement=self.announcement_for(call, settings),
            language=settings.language,
            label=call.call_id,
            sample_rate=negotiated_rate(call.sdp),
            dtmf_interworking=self.config.media.dtmf_interworking,
            feature_code_legs=call.watched_legs,
        )
        active = ActiveRecording(call, media, spec)
        media.start_recording(
            spec,
            dict(call.sdp),
            functools.partial(self._on_toggle, active),
            functools.partial(self._on_digit, active),
        )
        self.active[call] = active
        if call.recording_mode == RecordingMode.ALWAYS:
            active.filed = self.spawn(self._file(active, now))
        log.info(
            "call %s: %s recording ready (%s)", call.call_id, call.recording_mode, spec.relative
        )

    def _on_toggle(self, active: ActiveRecording, toggle: Toggle) -> None:
        """The worker reports a feature-code toggle (it has played the notice or beep)."""
        active.toggles.append(toggle)
        if toggle.first_start and active.filed is None:
            active.filed = self.spawn(self._file(active, toggle.at))
        self.spawn(self._log_toggle(active, toggle))

    def _on_digit(self, active: ActiveRecording, leg: str, digit: str, duration: int) -> None:
        """The worker relays a key of the user's phone to a far end that negotiated no
        telephone-event: the call sends it as SIP INFO."""
        active.call.send_dtmf_info(leg, digit, duration)  # no-op once the call ended

    async def _file(self, active: ActiveRecording, at: float) -> int | None:
        call, spec = active.call, active.spec
        if call.cdr_id is None:
            log.error("call %s: recording has no call record to attach to", call.call_id)
            return None
        try:
            return await self.store.create_recording(
                call_id=call.cdr_id,
                path=spec.relative,
                format=spec.format,
                channels=2 if spec.channels == "stereo" else 1,
                sample_rate=spec.sample_rate,
                started_at=at,
                retention_days=self.settings_for(call).retention_days,
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
            active.media.learn_sdp(leg, sdp)

    def info_received(self, call: Call, leg: str, request: SipRequest) -> None:
        """A SIP INFO from the call: the feature code may come that way."""
        active = self.active.get(call)
        if active is None or leg not in call.watched_legs:
            return
        content_type = request.headers.get("Content-Type") or ""
        active.media.info(content_type, request.body, self.now())

    def finish(self, call: Call) -> None:
        """The call ended: have its recorder close the file and record the outcome."""
        active = self.active.pop(call, None)
        if active is None:
            return
        task = self.spawn(self._finish(active, self.now()))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, active: ActiveRecording, now: float) -> None:
        call = active.call
        outcome = await active.media.stop_recording(now)
        recording_id = await active.filed if active.filed is not None else None
        if active.filed is None:
            return  # on-demand and never started: no file, nothing to file
        if outcome.lost:
            outcome = await self._repair_lost(active)
        elif not outcome.media_seen and outcome.started:
            log.warning("call %s: no RTP at all; the recording is silence", call.call_id)
        if outcome.status != "complete":
            log.warning("call %s: recording %s: %s", call.call_id, outcome.status, outcome.error)
        else:
            log.info(
                "call %s: recorded %.1f s to %s",
                call.call_id,
                outcome.duration_s or 0.0,
                active.spec.relative,
            )
        if recording_id is None:
            return
        try:
            await self.store.finish_recording(
                recording_id,
                status=outcome.status,
                ended_at=now,
                duration_s=outcome.duration_s,
                segments=outcome.segments,
                sha256=outcome.sha256,
                size=outcome.bytes,
                error=outcome.error,
            )
        except StorageError as exc:
            log.error("call %s: recording outcome not stored: %s", call.call_id, exc)
            return
        await self._queue_upload(call.call_id, recording_id)

    async def _queue_upload(self, call_id: str, recording_id: int) -> None:
        """Hand a filed recording to the upload queue (with an object store)."""
        if self.uploads is None:
            return
        try:
            if await self.store.queue_upload(recording_id, self.uploads.node):
                self.uploads.wake()
        except StorageError as exc:
            # Still local and `local`: the queue takes it at the next start.
            log.error("call %s: recording not queued for upload: %s", call_id, exc)

    async def _repair_lost(self, active: ActiveRecording) -> RecordingOutcome:
        """The worker recording this call died: make its file playable and say so."""
        result = await asyncio.to_thread(repair, active.spec.absolute)
        summary = result.summary
        if summary is None:
            return RecordingOutcome(
                started=True,
                status="error",
                error=f"{WORKER_LOST}; the file is unusable: {result.error or result.action}",
            )
        return RecordingOutcome(
            started=True,
            status="partial",
            error=f"{WORKER_LOST}; what was written is kept ({result.action})",
            duration_s=summary.duration_s,
            segments=[(0.0, summary.duration_s)],
            sha256=summary.sha256,
            bytes=summary.bytes,
            media_seen=summary.frames > 0,
        )

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
