"""What the recording manager asks of a call's media, which lives in a media worker.

The `RecordingManager` (SIP process) decides to record, files rows in the store and
repairs what a lost worker left; the recorder itself runs next to the relay in a media
worker (`callrec.workers`). They meet here:

- `RecordingSpec`: everything a worker needs to start one call's `CallRecording` (the
  file, the mode, the feature code, the announcement), plain values only, so that it
  can cross the control channel.
- `RecordingOutcome`: how a recording ended, what the store files (`outcome_of` turns
  a `media.recorder.RecordingResult` into one, in the worker).
- `RecordedMedia`: the Protocol a call's media implements for the manager.
- `Toggle` (from `callrec.recording.session`): the feature code switched the recording.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from callrec.recording.session import Toggle
from media.recorder import RecordingResult

__all__ = ["RecordedMedia", "RecordingOutcome", "RecordingSpec", "Toggle", "outcome_of"]


@dataclass(frozen=True)
class RecordingSpec:
    """One call's recording, as the worker builds its `CallRecording` from it."""

    relative: str  # the file, relative to the storage folder (as filed in the store)
    absolute: str  # the same file, absolute
    format: str  # "wav" | "flac"
    channels: str  # "mono" | "stereo"
    internal_leg: str  # "a" | "b": the recorded user's leg
    start_time: float  # wall clock of call time 0 (the answer)
    mode: str  # callrec.policy.RecordingMode
    feature_code: str
    feature_code_timeout: float
    paused: str  # "skip" | "silence"
    swallow_feature_code: bool
    announcement: str  # the [recording] announcement setting played when recording starts
    language: str  # the language of the shipped spoken notice ("default")
    label: str  # the call id, for log lines
    # The file's rate (session.negotiated_rate): 16000 when a wideband codec may be sent.
    sample_rate: int = 8000
    # [media] dtmf_interworking: keys for a far end without telephone-event.
    dtmf_interworking: str = "none"
    # The legs whose feature code toggles an on-demand recording: both phones of an
    # internal call between on-demand users; empty means `internal_leg` alone.
    feature_code_legs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordingOutcome:
    """How a recording ended. `started` is False for an on-demand call never recorded
    (there is no file). `lost` means the worker died: nothing below is known, and the
    manager repairs the file itself."""

    started: bool
    status: str = "error"  # complete | partial | error | unrecordable
    error: str | None = None
    duration_s: float | None = None
    segments: list[tuple[float, float]] = field(default_factory=list)
    sha256: str | None = None
    bytes: int | None = None
    media_seen: bool = False
    lost: bool = False


def outcome_of(result: RecordingResult, *, started: bool) -> RecordingOutcome:
    """The store's view of a closed recording: its status and why it is not `complete`."""
    summary = result.file
    if summary is None:
        status, error = "error", result.error or "the file could not be finished"
    elif summary.partial is not None:
        # Writing stopped early (disk full...): what was written is sealed and playable.
        status, error = "partial", summary.partial
    elif result.error:
        status, error = "error", result.error
    elif result.unrecordable_reason:
        status, error = "unrecordable", f"unrecordable codec: {result.unrecordable_reason}"
    else:
        status, error = "complete", None
    return RecordingOutcome(
        started=started,
        status=status,
        error=error,
        duration_s=summary.duration_s if summary else None,
        segments=[(float(start), float(end)) for start, end in result.segments],
        sha256=summary.sha256 if summary else None,
        bytes=summary.bytes if summary else None,
        media_seen=result.media_seen,
    )


@runtime_checkable
class RecordedMedia(Protocol):
    """A call's media that can record it (`callrec.workers.RemoteMedia`).

    Commands are sent in order and never block: `start_recording` starts the recorder
    (the legal notice is played from there), `learn_sdp` and `info` feed it, and
    `stop_recording` closes it; the awaitable it returns gives the outcome once the file
    is sealed, or a `lost` outcome if the worker died. `on_toggle` is called for each
    feature-code toggle, and `on_digit(leg, digit, duration_ms)` for each key to send
    to `leg` as SIP INFO (`[media] dtmf_interworking = "info"`). A media whose worker
    is gone ignores the commands.
    """

    def start_recording(
        self,
        spec: RecordingSpec,
        sdp: dict[str, bytes],
        on_toggle: Callable[[Toggle], None],
        on_digit: Callable[[str, str, int], None] | None = None,
    ) -> None: ...

    def learn_sdp(self, leg: str, body: bytes) -> None: ...

    def info(self, content_type: str, body: bytes, at: float) -> None: ...

    def stop_recording(self, at: float) -> Awaitable[RecordingOutcome]: ...
