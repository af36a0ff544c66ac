"""Recording of one call: the recorder on the relay's tap, and the on-demand feature code.

A `CallRecording` is created when a call of a recorded user is answered. It is the relay's
tap for that call and feeds the sans-IO `media.recorder.Recorder`, which is ticked by the
server so audio reaches the file at least once a second. For an `on-demand` user it also
watches the user's leg for the feature code (RFC 4733, in-band, SIP INFO) and toggles the
recording (an internal call between two on-demand users has both legs watched, each by
its own watcher; `feature_code_legs`); the file is only created when recording first
starts, so an on-demand call that is never recorded leaves nothing behind. Every time
it uses comes from its caller (packet arrivals, `tick(now)`, `close(now)`) or from the
injected `now` clock, so tests run it on a fake clock.

The file's sample rate is fixed when the recording starts (`negotiated_rate`): 16 kHz
when both legs' SDPs share a wideband codec (G.722, Opus), so either side may send it,
else 8 kHz. A codec that a re-INVITE brings later is resampled to that rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from b2bua.sdp import SdpError, parse_sdp
from callrec.config import RecordingConfig
from callrec.policy import DEFAULT_FEATURE_CODE, FeatureCode, RecordingMode
from dtmf.events import DigitEvent, DtmfError
from dtmf.interworking import DigitRelay
from dtmf.swallow import FeatureCodeSwallower
from dtmf.watcher import FeatureCodeWatcher
from media.codecs import NARROWBAND_RATE, recording_rate
from media.recorder import Recorder, RecordingResult
from media.rtp import MediaError
from media.writer import RecordingSummary, RecordingWriter

log = logging.getLogger("callrec.recording")

TELEPHONE_EVENT = "telephone-event"
G711 = ("PCMU", "PCMA")


@dataclass
class RecordingFile:
    """Where a call's recording goes, relative to the storage directory and absolute
    (named by `storage.files.RecordingFiles.new_recording`)."""

    relative: str
    absolute: Path


class LazyWriter:
    """An audio sink that creates its file at the first frames it is given."""

    def __init__(
        self, file: RecordingFile, channels: int, fmt: str, sample_rate: int = NARROWBAND_RATE
    ) -> None:
        self.file = file
        self._channels = channels
        self._format = fmt
        self._sample_rate = sample_rate
        self.writer: RecordingWriter | None = None

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def opened(self) -> bool:
        return self.writer is not None

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        if self.writer is None:
            if frames.shape[0] == 0:
                return
            self.file.absolute.parent.mkdir(parents=True, exist_ok=True)
            self.writer = RecordingWriter(
                self.file.absolute,
                self._channels,
                format="flac" if self._format == "flac" else "wav",
                samplerate=self._sample_rate,
            )
        self.writer.write(frames)

    def close(self) -> RecordingSummary:
        if self.writer is None:
            raise MediaError("nothing was recorded")
        return self.writer.close()

    def claim_sync(self) -> bool:
        return self.writer is not None and self.writer.claim_sync()

    def sync(self) -> None:
        if self.writer is not None:
            self.writer.sync()


@dataclass(frozen=True)
class Toggle:
    """The feature code started or stopped an on-demand recording."""

    action: str  # "start" | "stop"
    method: str  # "rfc4733" | "inband" | "info" | "policy"
    at: float
    first_start: bool


@dataclass(frozen=True)
class MediaFormat:
    """What one leg's SDP negotiated for audio: G.711 to play prompts in, RFC 4733 PTs."""

    codecs: dict[int, str]
    telephone_events: list[int]
    g711: tuple[int, str] | None

    @classmethod
    def from_sdp(cls, body: bytes) -> MediaFormat | None:
        try:
            sdp = parse_sdp(body)
        except SdpError:
            return None
        for media in sdp.media:
            if media.kind != "audio" or media.port == 0:
                continue
            rtpmap = media.rtpmap
            codecs: dict[int, str] = {}
            events: list[int] = []
            g711: tuple[int, str] | None = None
            for text in media.formats:
                if not text.isdigit() or int(text) not in rtpmap:
                    continue
                payload_type = int(text)
                encoding = rtpmap[payload_type][0].upper()
                if encoding == TELEPHONE_EVENT.upper():
                    events.append(payload_type)
                    continue
                codecs[payload_type] = encoding
                if g711 is None and encoding in G711:
                    g711 = (payload_type, encoding)
            return cls(codecs, events, g711)
        return None


def negotiated_rate(sdps: Mapping[str, bytes] | Iterable[bytes]) -> int:
    """The sample rate to record a call at, from its legs' SDP bodies: 16 kHz when a
    wideband codec is in every leg's SDP (an answer lists it, so it may be sent), else
    8 kHz. Used by the manager (which files the rate) and the worker alike."""
    bodies = sdps.values() if isinstance(sdps, Mapping) else sdps
    shared: set[str] | None = None
    for body in bodies:
        media = MediaFormat.from_sdp(body)
        if media is None:
            continue
        names = set(media.codecs.values())
        shared = names if shared is None else shared & names
    return recording_rate(shared or ())


class CallRecording:
    """The recorder of one call: it taps the relay and writes at most one file."""

    def __init__(
        self,
        config: RecordingConfig,
        file: RecordingFile,
        *,
        internal_leg: str,
        start_time: float,
        mode: str,
        feature_code: FeatureCode | str = DEFAULT_FEATURE_CODE,
        channels: str = "mono",
        sample_rate: int = NARROWBAND_RATE,
        dtmf_interworking: str = "none",
        on_toggle: Callable[[Toggle], None] | None = None,
        label: str = "",
        now: Callable[[], float] = time.time,
        feature_code_legs: Iterable[str] = (),
    ) -> None:
        self.file = file
        self.now = now
        self.mode = mode
        self.label = label
        self.internal_leg = internal_leg
        # The legs whose feature code toggles the recording (on-demand only).
        self.watched_legs = tuple(feature_code_legs) or (internal_leg,)
        self.channels = 2 if channels == "stereo" else 1
        self.format = config.format
        self.start_time = start_time
        self.on_toggle = on_toggle
        self.started = mode == RecordingMode.ALWAYS
        self.sample_rate = sample_rate
        self.sink = LazyWriter(file, self.channels, config.format, sample_rate)
        # One watcher (and swallower) per watched leg; `watcher` and `swallower` are the
        # internal leg's, which also drives DTMF interworking.
        self.watchers: dict[str, FeatureCodeWatcher] = {}
        self.swallowers: dict[str, FeatureCodeSwallower] = {}
        self.watcher: FeatureCodeWatcher | None = None
        self.swallower: FeatureCodeSwallower | None = None
        # Sends a held packet from a leg on towards the other one (set by whoever owns
        # the relay): release(from_leg, packet).
        self.release: Callable[[str, bytes], None] | None = None
        # Telephone-event interworking: set when the far end's SDP has no
        # telephone-event while the user's phone sends events (b2bua kept them in its
        # answer). Those packets are then never forwarded, and with `[media]
        # dtmf_interworking` "inband" or "info" `relay_digit` gets every other key.
        self.dtmf_interworking = dtmf_interworking
        self.events_terminated = False
        self.relay_digit: Callable[[str], None] | None = None
        self._digit_relay: DigitRelay | None = None
        self._internal_event_pts: frozenset[int] = frozenset()
        if mode == RecordingMode.ON_DEMAND:
            for leg in self.watched_legs:
                self.watchers[leg] = FeatureCodeWatcher(
                    leg,
                    feature_code,
                    timeout=config.feature_code_timeout,
                    sample_rate=sample_rate,
                )
                if config.swallow_feature_code:
                    self.swallowers[leg] = FeatureCodeSwallower(
                        feature_code, timeout=config.feature_code_timeout
                    )
            self.watcher = self.watchers.get(internal_leg) or self.watchers[self.watched_legs[0]]
            self.swallower = self.swallowers.get(internal_leg)
            if dtmf_interworking != "none":
                self._digit_relay = DigitRelay(feature_code, config.feature_code_timeout)
                self.watcher.on_digit = self._on_digit
        self.recorder = Recorder(
            self.sink,
            start_time=start_time,
            internal_leg=internal_leg,
            paused_mode="silence" if config.paused == "silence" else "skip",
            start_paused=mode != RecordingMode.ALWAYS,
            audio_listener=self._on_audio if self.watcher is not None else None,
            label=label,
        )
        self.result: RecordingResult | None = None
        self.formats: dict[str, MediaFormat] = {}

    # ------------------------------------------------------------------ tap
    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        if kind != "rtp":
            return
        self.recorder.on_packet(leg, kind, data, arrival)
        watcher = self.watchers.get(leg)
        if watcher is not None:
            for event in watcher.on_rtp(data, arrival):
                self._toggle(event)

    def rtp_filter(self, leg: str, data: bytes, arrival: float) -> bool:
        """The relay's filter: False keeps a packet from the far end (a feature-code
        packet, or any telephone-event one the far end did not negotiate)."""
        if leg not in self.watched_legs:
            return True
        if (
            leg == self.internal_leg
            and self.events_terminated
            and len(data) >= 12
            and (data[1] & 0x7F) in self._internal_event_pts
        ):
            return False
        swallower = self.swallowers.get(leg)
        if swallower is None:
            return True
        forward, release = swallower.filter(data, arrival)
        self._release(leg, release)
        return forward

    def _release(self, leg: str, packets: list[bytes]) -> None:
        if packets and self.release is not None:
            for packet in packets:
                self.release(leg, packet)

    def _on_digit(self, event: DigitEvent) -> None:
        """Every key of the user's leg: those the far end could not get as events go on
        (`relay_digit`), except the feature code."""
        if (
            self._digit_relay is None
            or not self.events_terminated
            or event.method != "rfc4733"
            or self.relay_digit is None
        ):
            return
        for digit in self._digit_relay.feed(event):
            self.relay_digit(digit)

    def _on_audio(self, leg: str, start_sample: int, pcm: npt.NDArray[np.int16]) -> None:
        watcher = self.watchers.get(leg)
        if watcher is not None:
            # The recorder's start: it moves back to the first packet's audio.
            start = self.recorder.start_time + start_sample / self.recorder.clock_rate
            for event in watcher.on_audio(pcm, start):
                self._toggle(event)

    def on_info(self, content_type: str, body: bytes, at: float) -> bool:
        """A SIP INFO from a watched leg; True if it carried a DTMF digit. (INFO does
        not say its leg here: a call with two watched legs matches their INFO digits
        with the internal leg's watcher.)"""
        if self.watcher is None:
            return False
        try:
            matches = self.watcher.on_info(content_type, body, at)
        except DtmfError as exc:
            log.warning("call %s: bad DTMF INFO body: %s", self.label, exc)
            return False
        for event in matches:
            self._toggle(event)
        return True

    def _toggle(self, event: DigitEvent) -> None:
        # The recording switches at the digit that completed the code; the recorder
        # clamps to what it has already written.
        at = min(self.now(), event.at)
        if self.recorder.paused:
            first = not self.started
            self.started = True
            self.recorder.resume(at)
            toggle = Toggle("start", event.method, at, first)
        else:
            self.recorder.pause(at)
            toggle = Toggle("stop", event.method, at, False)
        log.info(
            "call %s: feature code by %s: recording %s", self.label, event.method, toggle.action
        )
        if self.on_toggle is not None:
            self.on_toggle(toggle)

    # ------------------------------------------------------------------ media
    def learn_sdp(self, leg: str, body: bytes) -> MediaFormat | None:
        """Learn the payload types `leg`'s SDP declares.

        RTP from a phone uses the numbers of the SDP it received (RFC 3264): a phone
        that offered telephone-event as 120 sends 101 if the answer said 101. So the RTP
        from each leg is decoded with both SDPs, the receiving side's taking precedence.
        """
        media = MediaFormat.from_sdp(body)
        if media is None:
            return None
        self.formats[leg] = media
        for sender in ("a", "b"):
            receiver = "b" if sender == "a" else "a"
            codecs: dict[int, str] = {}
            events: set[int] = set()
            for fmt in (self.formats.get(sender), self.formats.get(receiver)):
                if fmt is not None:
                    codecs.update(fmt.codecs)
                    events.update(fmt.telephone_events)
            for payload_type in events:
                codecs.pop(payload_type, None)
            self.recorder.set_codecs(sender, codecs, events)
            if sender in self.watchers:
                self.watchers[sender].set_telephone_event_pts(events)
            if sender in self.swallowers:
                self.swallowers[sender].payload_types = set(events)
        internal = self.formats.get(self.internal_leg)
        far = self.formats.get("b" if self.internal_leg == "a" else "a")
        self._internal_event_pts = frozenset(internal.telephone_events if internal else ())
        self.events_terminated = bool(
            internal and internal.telephone_events and far is not None and not far.telephone_events
        )
        return media

    def add_prompt(self, pcm: npt.NDArray[np.int16], at: float) -> None:
        self.recorder.add_prompt(pcm, at)

    def tick(self, now: float) -> None:
        self.recorder.tick(now)
        for leg, swallower in self.swallowers.items():
            self._release(leg, swallower.due(now))
        if self._digit_relay is not None and self.relay_digit is not None:
            for digit in self._digit_relay.due(now):
                self.relay_digit(digit)

    def claim_sync(self) -> bool:
        """True once a second of audio written since the last claim awaits `sync()`."""
        return self.sink.claim_sync()

    def sync(self) -> None:
        """fsync the file (blocking: run it in a worker thread)."""
        self.sink.sync()

    @property
    def paused(self) -> bool:
        return self.recorder.paused

    def close(self, now: float) -> RecordingResult:
        if self.result is None:
            if self.started:
                self.result = self.recorder.close(now)
            else:
                # On-demand and never started: there is no file to seal.
                self.result = RecordingResult(
                    file=None,
                    segments=[],
                    duration_s=0.0,
                    media_seen=False,
                    unrecordable_reason=None,
                    error=None,
                    legs={},
                )
        return self.result
