"""Recording of one call: policy, file location, the recorder on the relay's tap.

A `CallRecording` is created when a call to or from a recorded user is answered. It is
the relay's tap for that call, feeds the sans-IO `media.recorder.Recorder`, and is ticked
by the server (`tick`) so audio reaches the file at least once a second. `close` ends it
and returns what the store keeps.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from b2bua.config import RecordingConfig
from b2bua.sdp import SdpError, parse_sdp
from media.recorder import AudioListener, Recorder, RecordingResult
from media.writer import RecordingWriter

log = logging.getLogger("callrec.recording")

MODES = ("never", "always", "on-demand")
TELEPHONE_EVENT = "telephone-event"


def recording_mode_for(modes: list[str]) -> str:
    """The mode of a call from the modes of the recorded users on it (always wins)."""
    if "always" in modes:
        return "always"
    if "on-demand" in modes:
        return "on-demand"
    return "never"


@dataclass
class RecordingFile:
    """Where a call's recording goes, relative to the storage directory and absolute."""

    relative: str
    absolute: Path

    @classmethod
    def new(cls, recordings_dir: Path, storage_dir: Path, fmt: str, at: float) -> RecordingFile:
        day = time.strftime("%Y/%m/%d", time.gmtime(at))
        absolute = recordings_dir / day / f"{uuid.uuid4()}.{fmt}"
        absolute.parent.mkdir(parents=True, exist_ok=True)
        try:
            relative = str(absolute.relative_to(storage_dir))
        except ValueError:
            relative = str(absolute)
        return cls(relative, absolute)


class CallRecording:
    """The recorder of one call: it taps the relay and writes one file."""

    def __init__(
        self,
        config: RecordingConfig,
        file: RecordingFile,
        *,
        internal_leg: str,
        start_time: float,
        start_paused: bool = False,
        paused_mode: str = "skip",
        audio_listener: AudioListener | None = None,
        label: str = "",
    ) -> None:
        self.file = file
        self.channels = 2 if config.channels == "stereo" else 1
        self.format = config.format
        self.start_time = start_time
        self.writer = RecordingWriter(
            file.absolute, self.channels, format="flac" if config.format == "flac" else "wav"
        )
        self.recorder = Recorder(
            self.writer,
            start_time=start_time,
            internal_leg=internal_leg,
            paused_mode="skip" if paused_mode == "skip" else "silence",
            start_paused=start_paused,
            audio_listener=audio_listener,
            label=label,
        )
        self.result: RecordingResult | None = None

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        if kind == "rtp":
            self.recorder.on_packet(leg, kind, data, arrival)

    def learn_sdp(self, leg: str, body: bytes) -> None:
        """Payload types of the RTP that `leg` sends, from the SDP that leg sent."""
        try:
            sdp = parse_sdp(body)
        except SdpError:
            return
        for media in sdp.media:
            if media.kind != "audio" or media.port == 0:
                continue
            codecs: dict[int, str] = {}
            events: list[int] = []
            for payload_type, (encoding, _rate) in media.rtpmap.items():
                if encoding.lower() == TELEPHONE_EVENT:
                    events.append(payload_type)
                else:
                    codecs[payload_type] = encoding.upper()
            self.recorder.set_codecs(leg, codecs, events)
            return

    def tick(self, now: float) -> None:
        self.recorder.tick(now)

    def pause(self, now: float) -> None:
        self.recorder.pause(now)

    def resume(self, now: float) -> None:
        self.recorder.resume(now)

    @property
    def paused(self) -> bool:
        return self.recorder.paused

    def close(self, now: float) -> RecordingResult:
        if self.result is None:
            self.result = self.recorder.close(now)
        return self.result
