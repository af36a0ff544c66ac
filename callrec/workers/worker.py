"""A media worker's core: the relay sessions and recorders of the calls it was given.

One `MediaWorker` runs in each worker process (`callrec.workers.process`) and owns one
slice of the RTP port range (its own `media.ports.PortAllocator`). The SIP process
drives it over the control channel (`callrec.workers.protocol`): each command is handed
to `handle` in the order it arrived, and what the worker has to say goes out through
the `send` it was given. Per call it composes a `media.relay.MediaSession` and, once
the call is recorded, a `callrec.recording.session.CallRecording` on the relay's tap;
it ticks the recorders, fsyncs their files in a thread, plays the legal notice and the
toggle beeps, and reports toggles and each recording's outcome. It never touches the
store: the SIP process files what it reports.

Commands (SIP process -> worker; `id` marks the one answered):
    open      {id, sid, silence_timeout, idle_timeout, nat, latch_window}
              -> {id, ok, ports: [a, b], free} or {id, ok: false, error, free}
    remote    {sid, leg, host, port, relatch, signalled_from}
    srtp      {sid, leg, receive, send}   each {suite, key: base64} or null (plain RTP);
              the keys of one leg (the channel is a local socket pair; never logged)
    started   {sid}                       the call is answered (RTP is held from then
                                          until `record`: _EarlyTap)
    close     {sid, at}                   ports back to the pool; the recording closes
    record    {sid, spec, sdp: {leg: body}}   spec: a RecordingSpec's fields
    sdp       {sid, leg, body}
    info      {sid, content_type, body, at}
    stop_recording {sid, at}
Events (worker -> SIP process):
    ready     {pid, pairs, free}          sent once, first
    closed    {sid, free}
    silence   {sid, leg}      idle {sid}
    toggle    {sid, action, method, at, first_start}
    dtmf      {sid, leg, digit[, duration]}  a key to send to `leg` as SIP INFO
                                          (interworking; duration in ms, default 160)
    recorded  {sid, outcome}              a RecordingOutcome's fields
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from callrec.config import RecordingConfig
from callrec.policy import FeatureCode
from callrec.recording.control import RecordingOutcome, RecordingSpec, Toggle, outcome_of
from callrec.recording.session import CallRecording, MediaFormat, RecordingFile
from callrec.workers.protocol import Message, unpack_bytes, unpack_srtp_key
from dtmf.interworking import tone as dtmf_tone
from media.announce import load_announcement, prompt_codec
from media.ports import PortAllocator
from media.relay import MediaSession
from media.rtp import MediaError

__all__ = ["TICK_INTERVAL_S", "TICK_SLICE_S", "MediaWorker"]

log = logging.getLogger("callrec.worker")

TICK_INTERVAL_S = 0.25
# The longest the recorders' tick holds the event loop before it lets packets and
# commands through (see `tick_in_slices`).
TICK_SLICE_S = 0.005
CLOSE_TIMEOUT_S = 10.0
BEEP = "beep"
# RTP held from the answer until the recorder is set up (see _EarlyTap).
EARLY_TAP_S = 2.0


class _EarlyTap:
    """The relay's tap from the answer (`started`) until the recording starts.

    The SIP process relays the 200 to the caller and then asks for the recording; the
    caller may send its first packets before that `record` command reaches this worker
    (issue 14: the file missed the first packet after the answer). So RTP that arrives
    from the answer on is held, for at most `EARLY_TAP_S`, and handed to the recorder
    when it starts; a call that is not recorded drops it then, and the tap detaches
    itself so that its other packets cost nothing.
    """

    __slots__ = ("packets", "session", "until")

    def __init__(self, session: MediaSession, until: float) -> None:
        self.session = session
        self.until = until
        self.packets: list[tuple[str, str, bytes, float]] = []

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        if arrival > self.until:
            self.packets.clear()
            if self.session.tap is self:
                self.session.tap = None
        elif kind == "rtp":
            self.packets.append((leg, kind, data, arrival))


class _WorkerCall:
    """One call in this worker: its relay, its recorder (once recorded), its formats."""

    __slots__ = ("announcement", "formats", "language", "recording", "session", "sid")

    def __init__(self, sid: int, session: MediaSession) -> None:
        self.sid = sid
        self.session = session
        self.recording: CallRecording | None = None
        self.formats: dict[str, MediaFormat] = {}
        self.announcement = "none"
        self.language = "en"


class MediaWorker:
    """The calls of one worker; `handle` obeys a command, `send` carries the answers."""

    def __init__(
        self,
        address: str,
        first_port: int,
        last_port: int,
        send: Callable[[Message], None],
        *,
        now: Callable[[], float] = time.time,
        work_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.address = address
        self.ports = PortAllocator(first_port, last_port)
        self.send = send
        self.now = now
        # Measures how long a tick slice has held the loop (`tick_in_slices`).
        self.work_clock = work_clock
        self.calls: dict[int, _WorkerCall] = {}
        self._prompts: dict[tuple[str, str], npt.NDArray[np.int16] | None] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._syncing: asyncio.Task[None] | None = None
        self._commands: dict[str, Callable[[Message], None]] = {
            "remote": self._remote,
            "srtp": self._srtp,
            "started": self._started,
            "close": self._close,
            "record": self._record,
            "sdp": self._sdp,
            "info": self._info,
            "stop_recording": self._stop_recording,
        }

    def ready(self) -> Message:
        return {
            "ev": "ready",
            "pid": os.getpid(),
            "pairs": self.ports.size,
            "free": self.ports.free,
        }

    async def handle(self, message: Message) -> None:
        """Obey one command. A command that fails is logged (and answered, if it asked
        for an answer); the worker and its other calls go on."""
        op = message.get("op")
        try:
            if op == "open":
                await self._open(message)
                return
            command = self._commands.get(str(op))
            if command is None:
                raise MediaError(f"unknown command {op!r}")
            command(message)
        except Exception as exc:
            log.exception("command %s for session %s failed", op, message.get("sid"))
            if "id" in message:
                self.send({"id": message["id"], "ok": False, "error": str(exc)})

    # ------------------------------------------------------------------ relay
    async def _open(self, message: Message) -> None:
        sid = int(message["sid"])
        try:
            session = await MediaSession.create(
                self.ports,
                self.address,
                silence_timeout=message.get("silence_timeout"),
                on_silence=functools.partial(self._silence, sid),
                idle_timeout=message.get("idle_timeout"),
                on_idle=functools.partial(self._idle, sid),
                nat=bool(message.get("nat", True)),
                latch_window=float(message.get("latch_window", 3.0)),
            )
        except (MediaError, OSError) as exc:
            self.send(
                {"id": message["id"], "ok": False, "error": str(exc), "free": self.ports.free}
            )
            return
        self.calls[sid] = _WorkerCall(sid, session)
        ports = [session.local_port("a"), session.local_port("b")]
        self.send({"id": message["id"], "ok": True, "ports": ports, "free": self.ports.free})

    def _silence(self, sid: int, leg: str) -> None:
        self.send({"ev": "silence", "sid": sid, "leg": leg})

    def _idle(self, sid: int) -> None:
        self.send({"ev": "idle", "sid": sid})

    def _remote(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None:
            call.session.set_remote(
                message["leg"],
                message["host"],
                int(message["port"]),
                relatch=bool(message.get("relatch")),
                signalled_from=message.get("signalled_from"),
            )

    def _srtp(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None:
            call.session.set_srtp(
                str(message["leg"]),
                unpack_srtp_key(message.get("receive")),
                unpack_srtp_key(message.get("send")),
            )

    def _started(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None:
            call.session.mark_media_started()
            if call.session.tap is None and call.recording is None:
                call.session.tap = _EarlyTap(call.session, self.now() + EARLY_TAP_S)

    def _close(self, message: Message) -> None:
        sid = int(message["sid"])
        call = self.calls.pop(sid, None)
        if call is None:
            return
        call.session.close()  # relays what still waits in its sockets first
        # The session's packet counters, summed into the pool's /metrics totals.
        legs = [call.session.stats(leg) for leg in ("a", "b")]
        relayed = sum(stats.rtp_out + stats.rtcp_out for stats in legs)
        dropped = sum(stats.dropped + stats.srtp_failed for stats in legs)
        self.send(
            {
                "ev": "closed",
                "sid": sid,
                "free": self.ports.free,
                "relayed": relayed,
                "dropped": dropped,
            }
        )
        self._finish_recording(call, float(message.get("at") or self.now()))

    # ------------------------------------------------------------------ recording
    def _record(self, message: Message) -> None:
        sid = int(message["sid"])
        call = self.calls.get(sid)
        if call is not None and call.recording is not None:
            return  # started already
        try:
            if call is None:
                raise MediaError("the call's media is closed already")
            spec = RecordingSpec(**message["spec"])
            config = RecordingConfig(
                channels=spec.channels,
                format=spec.format,
                feature_code=FeatureCode.parse(spec.feature_code),
                announcement=spec.announcement,
                feature_code_timeout=spec.feature_code_timeout,
                paused=spec.paused,
                swallow_feature_code=spec.swallow_feature_code,
            )
            recording = CallRecording(
                config,
                RecordingFile(spec.relative, Path(spec.absolute)),
                internal_leg=spec.internal_leg,
                feature_code_legs=spec.feature_code_legs,
                start_time=spec.start_time,
                mode=spec.mode,
                feature_code=config.feature_code,
                channels=spec.channels,
                sample_rate=spec.sample_rate,
                dtmf_interworking=spec.dtmf_interworking,
                label=spec.label,
                now=self.now,
            )
        except Exception as exc:
            # Whatever went wrong, the SIP process waits for an outcome: give it one.
            log.error("session %d: cannot start recording: %s", sid, exc)
            self._report(sid, RecordingOutcome(started=False, error=str(exc)))
            return
        call.recording = recording
        call.announcement = spec.announcement
        call.language = spec.language
        recording.on_toggle = functools.partial(self._on_toggle, call)
        for leg, body in message.get("sdp", {}).items():
            self._learn(call, leg, unpack_bytes(body))
        session = call.session
        early = session.tap
        if isinstance(early, _EarlyTap):
            for packet in early.packets:  # what arrived since the answer, in order
                recording.on_packet(*packet)
        session.tap = recording
        if recording.watcher is not None:
            # On-demand: the feature code's packets, and telephone-events a far end did
            # not negotiate, are kept from the far end.
            session.rtp_filter = recording.rtp_filter
            recording.release = session.forward
            recording.relay_digit = functools.partial(self._relay_digit, call)
        if recording.started:
            self._announce(call)

    def _learn(self, call: _WorkerCall, leg: str, body: bytes) -> None:
        if call.recording is not None:
            media = call.recording.learn_sdp(leg, body)
            if media is not None:
                call.formats[leg] = media

    def _sdp(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None:
            self._learn(call, message["leg"], unpack_bytes(message["body"]))

    def _info(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None and call.recording is not None:
            call.recording.on_info(
                str(message.get("content_type") or ""),
                unpack_bytes(message["body"]),
                float(message["at"]),
            )

    def _stop_recording(self, message: Message) -> None:
        call = self.calls.get(int(message["sid"]))
        if call is not None:
            self._finish_recording(call, float(message["at"]))

    def _relay_digit(self, call: _WorkerCall, digit: str) -> None:
        """A key of the user's phone for a far end without telephone-event: played to it
        as in-band tones, or handed to the SIP process to send as INFO."""
        recording = call.recording
        if recording is None:
            return
        far_leg = "b" if recording.internal_leg == "a" else "a"
        if recording.dtmf_interworking == "inband":
            self._play(call, dtmf_tone(digit), [far_leg])
        elif recording.dtmf_interworking == "info":
            self.send({"ev": "dtmf", "sid": call.sid, "leg": far_leg, "digit": digit})

    def _on_toggle(self, call: _WorkerCall, toggle: Toggle) -> None:
        if toggle.first_start:
            self._announce(call)
        elif call.recording is not None:
            # The beep goes to each phone whose feature code toggles (both of an
            # internal call between on-demand users).
            self._play(call, self._prompt(BEEP, call.language), list(call.recording.watched_legs))
        self.send({"ev": "toggle", "sid": call.sid, **dataclasses.asdict(toggle)})

    def _announce(self, call: _WorkerCall) -> None:
        """Recording begins: tell both parties (the legal notice), and record it too."""
        prompt = self._prompt(call.announcement, call.language)
        if self._play(call, prompt, ["a", "b"]) and prompt is not None and call.recording:
            call.recording.add_prompt(prompt, self.now())

    def _prompt(self, setting: str, language: str) -> npt.NDArray[np.int16] | None:
        key = (setting, language)
        if key not in self._prompts:
            try:
                self._prompts[key] = load_announcement(setting, language)
            except MediaError as exc:
                log.error("announcement %r unusable, playing none: %s", setting, exc)
                self._prompts[key] = None
        return self._prompts[key]

    def _play(self, call: _WorkerCall, pcm: npt.NDArray[np.int16] | None, legs: list[str]) -> bool:
        if pcm is None:
            return False
        label = call.recording.label if call.recording is not None else str(call.sid)
        played = False
        for leg in legs:
            fmt = call.formats.get(leg)
            other = call.formats.get("b" if leg == "a" else "a")
            # The leg's own SDP says what it receives; prefer the codec both legs share.
            shared = other.codecs if other is not None else None
            choice = None if fmt is None else prompt_codec(fmt.codecs, shared)
            if choice is None:
                log.warning("call %s: no codec on leg %s to play a prompt in", label, leg)
                continue
            try:
                call.session.play(leg, pcm, *choice)
                played = True
            except MediaError as exc:
                log.warning("call %s: prompt on leg %s: %s", label, leg, exc)
        return played

    def _finish_recording(self, call: _WorkerCall, at: float) -> None:
        """Take the recorder off the relay and close its file in a thread; the outcome
        is reported once the file is sealed."""
        recording = call.recording
        if recording is None:
            return
        call.recording = None
        session = call.session
        session.tap = None
        session.rtp_filter = None
        task = asyncio.get_running_loop().create_task(
            self._close_recording(call.sid, recording, at)
        )
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _close_recording(self, sid: int, recording: CallRecording, at: float) -> None:
        try:
            result = await asyncio.to_thread(recording.close, at)
        except Exception as exc:
            log.exception("call %s: closing the recording failed", recording.label)
            outcome = RecordingOutcome(started=recording.started, error=str(exc))
        else:
            outcome = outcome_of(result, started=recording.started)
        self._report(sid, outcome)

    def _report(self, sid: int, outcome: RecordingOutcome) -> None:
        self.send({"ev": "recorded", "sid": sid, "outcome": dataclasses.asdict(outcome)})

    # ------------------------------------------------------------------ ticks
    async def tick_forever(self) -> None:
        """Tick every recorder once per `TICK_INTERVAL_S`, on a fixed grid of the loop
        clock (a pass that overran starts the next one at once, not a burst)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += TICK_INTERVAL_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                due = loop.time()
            await self.tick_in_slices()

    async def tick_in_slices(self) -> None:
        """One pass of `tick`, split so that it never holds the event loop for much more
        than `TICK_SLICE_S`.

        Ticking every recorder at once took 65 ms per pass with 150 recorded calls in a
        worker (py-spy, bench/RESULTS.md "Profile"): an `open` arriving meanwhile waited
        for all of it, which was the setup p99. So after each recorder whose slice is
        used up, the pass yields to the loop (packets and commands go through) and goes
        on with the next recorder. A call closed meanwhile is skipped: its recorder was
        taken off (`_finish_recording`) before it was handed to a closing thread.
        """
        calls = list(self.calls.values())
        work_clock = self.work_clock
        slice_end = work_clock() + TICK_SLICE_S
        now = self.now()
        for call in calls:
            recording = call.recording
            if recording is None:
                continue
            _tick_recording(recording, now)
            if work_clock() >= slice_end:
                await asyncio.sleep(0)
                slice_end = work_clock() + TICK_SLICE_S
                now = self.now()
        self._sync_files()

    def tick(self) -> None:
        """Write what every recorder has buffered and start the fsyncs that are due, in
        one go (`tick_in_slices` is what the worker runs)."""
        now = self.now()
        for call in self.calls.values():
            if call.recording is not None:
                _tick_recording(call.recording, now)
        self._sync_files()

    def _sync_files(self) -> None:
        """fsync, in a thread, each file that got a second of audio since its last sync:
        a slow disk must not stall the relay."""
        if self._syncing is not None and not self._syncing.done():
            return  # the disk is behind; the files are claimed again once it is done
        due = [
            call.recording
            for call in self.calls.values()
            if call.recording is not None and call.recording.claim_sync()
        ]
        if due:
            self._syncing = asyncio.get_running_loop().create_task(
                asyncio.to_thread(_sync_each, due)
            )

    async def close_all(self) -> None:
        """Close every call and seal every recording (the channel is gone): bounded."""
        at = self.now()
        for sid in list(self.calls):
            self._close({"sid": sid, "at": at})
        pending: list[asyncio.Task[Any]] = list(self._finishing)
        if self._syncing is not None:
            pending.append(self._syncing)
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)


def _tick_recording(recording: CallRecording, now: float) -> None:
    try:
        recording.tick(now)
    except Exception:
        # A broken recorder must not stop the others (or the calls).
        log.exception("call %s: recorder tick failed", recording.label)


def _sync_each(recordings: list[CallRecording]) -> None:
    for recording in recordings:
        recording.sync()
