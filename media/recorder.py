"""The call recorder: the relay's media tap, turning both legs' RTP into one file (sans-IO).

`on_packet` (the `MediaTap` contract) only queues the raw packet; the asyncio side calls
`tick(now)` every 200-500 ms, which reads the queued packets' header fields in place (an
`RtpPacket` only for the rare header with CSRCs, an extension or padding), decodes each
leg's payloads per codec in one call (G.711: one table lookup over the joined payloads),
places them on the leg's `LegTimeline` in one `push_batch`, drains both timelines up to
`now - reorder_window`, mixes and writes. Nothing is allocated per packet beyond its
payload slice and header ints: that path is the worker's hot loop (bench/RESULTS.md,
"Per-packet cost"). `close(now)` drains the rest
and seals the file. All times are wall-clock seconds (`time.time()`), the clock of the
tap's `arrival`.

Codecs: G.711, G.722 and Opus are decoded (`media.codecs`), per leg and in batches, and
resampled to the sink's rate (8 kHz, or 16 kHz for a call a wideband codec may carry);
any other payload type makes the recording `unrecordable`.

Call time starts at `start_time`, the answer, and a leg that sends nothing is silence,
so the file always spans the recorded call time. A packet is placed so that its last
sample is at its arrival, so the first packet after the answer began shortly *before*
it: before its first write the recorder moves call time 0 back to the earliest audio it
holds (at most `reorder_window_s`), and `start_time` with it, so that packet is kept
whole rather than cut at the answer.

An announcement played into the call (`media.announce`) reaches the recorder through
`add_prompt`, not the tap: both phones heard it, so it is added on top of both legs.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from media.announce import resample
from media.codecs import DECODABLE, RTP_CLOCK_RATES, CodecError, LegDecoder
from media.mixer import LEGS, Mixer
from media.rtp import RTP_HEADER_SIZE as _RTP_HEADER_SIZE
from media.rtp import MediaError, RtpPacket
from media.timeline import LegTimeline, TimelineStats
from media.writer import RecordingSummary

__all__ = [
    "COMFORT_NOISE_PT",
    "STATIC_CODECS",
    "AudioSink",
    "LegStats",
    "PausedMode",
    "Recorder",
    "RecordingResult",
]

logger = logging.getLogger("callrec.media.recorder")

Int16Array = npt.NDArray[np.int16]
PausedMode = Literal["skip", "silence"]
AudioListener = Callable[[str, int, Int16Array], None]

COMFORT_NOISE_PT = 13
# The first octet of an RTP header without padding, extension or CSRCs (version 2): the
# fast path reads such a header's fields in place.
_PLAIN_HEADER = 0x80
_SEQUENCE_TIMESTAMP_SSRC = struct.Struct("!HII")  # from octet 2 of the header
# RFC 3551 static payload types, which an SDP may use without an rtpmap line.
STATIC_CODECS: dict[int, str] = {0: "PCMU", 8: "PCMA", 9: "G722"}


class AudioSink(Protocol):
    """Where frames go: `media.writer.RecordingWriter` or anything shaped like it."""

    @property
    def channels(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    def write(self, frames: Int16Array) -> None: ...

    def close(self) -> RecordingSummary: ...


@dataclass
class LegStats:
    """Per-leg packet counters; `timeline` holds the placement counters."""

    rtp_packets: int = 0
    malformed: int = 0
    comfort_noise: int = 0
    telephone_events: int = 0
    undecodable: int = 0
    timeline: TimelineStats = field(default_factory=TimelineStats)


@dataclass(frozen=True)
class RecordingResult:
    """What `Recorder.close` reports for the store.

    `file` is None if the file could not be finished. `segments` are the recorded spans
    in call-time seconds (paused spans excluded); with `paused_mode="skip"` the file holds
    just these spans back to back.
    """

    file: RecordingSummary | None
    segments: list[tuple[float, float]]
    duration_s: float
    media_seen: bool
    unrecordable_reason: str | None
    error: str | None
    legs: dict[str, LegStats]


class _Batch:
    """One codec's packets of a tick, in arrival order, as columns."""

    __slots__ = ("arrivals", "payload_type", "payloads", "sequences", "ssrcs", "timestamps")

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type  # the first one's, to name the codec in an error
        self.payloads: list[bytes] = []
        self.sequences: list[int] = []
        self.timestamps: list[int] = []
        self.ssrcs: list[int] = []
        self.arrivals: list[float] = []


class Recorder:
    """Records one call's two legs ("a" caller side, "b" callee side) into an `AudioSink`.

    `codecs[leg]` maps the payload types of RTP coming from that leg to SDP encoding
    names (the rtpmap); static PT 0/8/9 are known without it. `telephone_event_pts[leg]`
    are the RFC 4733 payload types, which are never decoded as audio. A payload type
    that is neither a codec of `media.codecs.DECODABLE`, comfort noise nor
    telephone-event makes the recording `unrecordable` (logged once); its packets become
    silence. The file's rate is the sink's `sample_rate`.
    """

    def __init__(
        self,
        sink: AudioSink,
        *,
        start_time: float,
        internal_leg: str = "a",
        codecs: Mapping[str, Mapping[int, str]] | None = None,
        telephone_event_pts: Mapping[str, Iterable[int]] | None = None,
        paused_mode: PausedMode = "silence",
        start_paused: bool = False,
        reorder_window_s: float = 0.2,
        audio_listener: AudioListener | None = None,
        label: str = "",
    ) -> None:
        if paused_mode not in ("skip", "silence"):
            raise ValueError(f"paused_mode must be 'skip' or 'silence', not {paused_mode!r}")
        self.sink = sink
        self.start_time = start_time
        self.paused_mode: PausedMode = paused_mode
        self.reorder_window_s = reorder_window_s
        self.label = label
        self.clock_rate = sink.sample_rate
        self._mixer = Mixer(sink.channels, internal_leg)
        self._audio_listener = audio_listener
        self._timelines = {
            leg: LegTimeline(
                start_time, clock_rate=self.clock_rate, reorder_window_s=reorder_window_s
            )
            for leg in LEGS
        }
        self._stats = {leg: LegStats(timeline=self._timelines[leg].stats) for leg in LEGS}
        self._decoders = {leg: LegDecoder(self.clock_rate) for leg in LEGS}
        # Call time 0 is moved back to the earliest audio once, before the first write.
        self._origin_fixed = False
        self._queues: dict[str, list[tuple[bytes, float]]] = {leg: [] for leg in LEGS}
        self._codecs: dict[str, dict[int, str]] = {leg: dict(STATIC_CODECS) for leg in LEGS}
        self._event_pts: dict[str, frozenset[int]] = {leg: frozenset() for leg in LEGS}
        for leg in LEGS:
            self.set_codecs(
                leg,
                (codecs or {}).get(leg, {}),
                (telephone_event_pts or {}).get(leg, ()),
            )
        # Paused spans in call samples; the last one may still be open (end None).
        self._paused: list[tuple[int, int | None]] = []
        if start_paused:
            self._paused.append((0, None))
        self._written_until = 0
        # Announcements still to be mixed in: (first call sample, PCM at clock_rate).
        self._prompts: list[tuple[int, Int16Array]] = []
        self._media_seen = False
        self._unrecordable_reason: str | None = None
        self._error: str | None = None
        self._result: RecordingResult | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def unrecordable(self) -> bool:
        return self._unrecordable_reason is not None

    @property
    def unrecordable_reason(self) -> str | None:
        return self._unrecordable_reason

    @property
    def error(self) -> str | None:
        """Why writing stopped (disk full, I/O error), or None while all is well."""
        return self._error

    @property
    def paused(self) -> bool:
        return bool(self._paused) and self._paused[-1][1] is None

    @property
    def closed(self) -> bool:
        return self._result is not None

    def leg_stats(self, leg: str) -> LegStats:
        return self._stats[leg]

    def call_sample(self, now: float) -> int:
        return max(0, round((now - self.start_time) * self.clock_rate))

    def segments(self, now: float) -> list[tuple[float, float]]:
        """Recorded (unpaused) spans of call time [0, now], in seconds."""
        end = self.call_sample(now)
        spans: list[tuple[float, float]] = []
        cursor = 0
        for pause_start, pause_end in self._paused:
            if pause_start > cursor:
                spans.append((cursor, min(pause_start, end)))
            cursor = end if pause_end is None else max(cursor, pause_end)
        if cursor < end:
            spans.append((cursor, end))
        rate = self.clock_rate
        return [(start / rate, stop / rate) for start, stop in spans if stop > start]

    # -- inputs ------------------------------------------------------------------------

    def set_codecs(
        self, leg: str, codecs: Mapping[int, str], telephone_event_pts: Iterable[int] = ()
    ) -> None:
        """Set a leg's payload-type map, e.g. after a re-INVITE changed the SDP."""
        table = dict(STATIC_CODECS)
        table.update({pt: name.upper() for pt, name in codecs.items()})
        self._codecs[leg] = table
        self._event_pts[leg] = frozenset(telephone_event_pts)

    def on_packet(self, leg: str, kind: str, data: bytes, arrival: float) -> None:
        """`MediaTap`: queue an RTP packet from `leg`; RTCP and unknown legs are ignored."""
        if kind == "rtp" and self._result is None:
            queue = self._queues.get(leg)
            if queue is not None:
                queue.append((data, arrival))

    def add_prompt(self, pcm: npt.ArrayLike, at: float, *, sample_rate: int = 8000) -> None:
        """Mix an announcement both phones heard into the recording from wall-clock `at`.

        `pcm` is mono int16 at `sample_rate`. It is added with saturation on top of both
        legs (once in mono, on both channels in stereo); the inband DTMF listener does not
        get it. Audio before what is already written (`at` older than the reorder window)
        is lost; a paused span silences it like the rest.
        """
        if self._result is not None:
            return
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise ValueError(f"prompt PCM must be 1-D mono, not shape {samples.shape}")
        if sample_rate != self.clock_rate:
            samples = resample(samples.astype(np.float64), sample_rate, self.clock_rate)
        prompt = np.clip(samples, -32768, 32767).astype(np.int16)
        start = round((at - self.start_time) * self.clock_rate)
        if start < 0:
            prompt, start = prompt[-start:], 0
        if prompt.size and start + prompt.size > self._written_until:
            self._prompts.append((start, prompt))

    def pause(self, now: float) -> None:
        """Stop recording from call time `now` (no-op if already paused)."""
        if not self.paused and self._result is None:
            self._paused.append((max(self.call_sample(now), self._written_until), None))

    def resume(self, now: float) -> None:
        """Record again from call time `now` (no-op if not paused)."""
        if self.paused and self._result is None:
            start, _ = self._paused[-1]
            self._paused[-1] = (start, max(start, self.call_sample(now)))

    def tick(self, now: float) -> None:
        """Decode queued packets and write everything older than the reorder window."""
        if self._result is not None:
            return
        self._ingest()
        self._advance(now - self.reorder_window_s)

    def close(self, now: float) -> RecordingResult:
        """Write all remaining audio up to `now`, seal the file and report (idempotent)."""
        if self._result is not None:
            return self._result
        self._ingest()
        self._advance(now)
        if not self._media_seen:
            logger.warning("recording %s: no RTP from either leg, file is silence", self.label)
        summary: RecordingSummary | None = None
        try:
            summary = self.sink.close()
        except MediaError as exc:
            self._fail(str(exc))
        self._result = RecordingResult(
            file=summary,
            segments=self.segments(now),
            duration_s=self.call_sample(now) / self.clock_rate,
            media_seen=self._media_seen,
            unrecordable_reason=self._unrecordable_reason,
            error=self._error,
            legs=dict(self._stats),
        )
        return self._result

    # -- work --------------------------------------------------------------------------

    def _ingest(self) -> None:
        for leg in LEGS:
            queue = self._queues[leg]
            if queue:
                self._queues[leg] = []
                self._ingest_leg(leg, queue)

    def _ingest_leg(self, leg: str, queue: list[tuple[bytes, float]]) -> None:
        """Parse, decode and place one leg's queued packets: per codec, one decode of the
        joined payloads and one `push_batch`, with the header fields read as plain ints
        (an `RtpPacket` only for a header with CSRCs, an extension or padding)."""
        stats = self._stats[leg]
        codecs = self._codecs[leg]
        event_pts = self._event_pts[leg]
        stats.rtp_packets += len(queue)
        batches: dict[str, _Batch] = {}
        last_codec: str | None = None
        batch: _Batch | None = None
        unpack = _SEQUENCE_TIMESTAMP_SSRC.unpack_from
        for data, arrival in queue:
            packet: RtpPacket | None = None
            if len(data) >= _RTP_HEADER_SIZE and data[0] == _PLAIN_HEADER:
                payload_type = data[1] & 0x7F
            else:
                try:
                    packet = RtpPacket.parse(data)
                except MediaError:
                    stats.malformed += 1
                    continue
                payload_type = packet.payload_type
            self._media_seen = True
            if payload_type in event_pts:
                stats.telephone_events += 1
                continue
            if payload_type == COMFORT_NOISE_PT:
                stats.comfort_noise += 1
                continue
            codec = codecs.get(payload_type)
            if codec != last_codec or batch is None:
                if codec not in DECODABLE:
                    stats.undecodable += 1
                    self._mark_unrecordable(leg, payload_type, codec)
                    continue
                assert codec is not None
                batch = batches.get(codec)
                if batch is None:
                    batch = batches[codec] = _Batch(payload_type)
                last_codec = codec
            if packet is None:
                sequence, timestamp, ssrc = unpack(data, 2)
                batch.payloads.append(data[_RTP_HEADER_SIZE:])
            else:
                sequence, timestamp, ssrc = packet.sequence, packet.timestamp, packet.ssrc
                batch.payloads.append(packet.payload)
            batch.sequences.append(sequence)
            batch.timestamps.append(timestamp)
            batch.ssrcs.append(ssrc)
            batch.arrivals.append(arrival)
        if not batches:
            return
        timeline = self._timelines[leg]
        decoder = self._decoders[leg]
        for codec, batch in batches.items():
            try:
                pcm, sizes = decoder.decode_joined(codec, batch.payloads)
            except CodecError as exc:
                stats.undecodable += len(batch.payloads)
                self._mark_unrecordable(leg, batch.payload_type, f"{codec}: {exc}")
                continue
            stats.undecodable += sizes.count(0)
            timeline.push_batch(
                batch.ssrcs,
                batch.sequences,
                batch.timestamps,
                batch.arrivals,
                pcm,
                sizes,
                rtp_clock_rate=RTP_CLOCK_RATES[codec],
                lead=decoder.delay(codec),
            )

    def _fix_origin(self) -> None:
        """Move call time 0 back to the earliest audio held (at most the reorder window),
        so that the first packet after the answer is kept whole. Runs once, at the first
        write; nothing has been handed out yet, so only positions move."""
        self._origin_fixed = True
        starts = [t.earliest_pending() for t in self._timelines.values()]
        earliest = min((start for start in starts if start is not None), default=0)
        lead = min(max(0, -earliest), round(self.reorder_window_s * self.clock_rate))
        if lead == 0:
            return
        self.start_time -= lead / self.clock_rate
        for timeline in self._timelines.values():
            timeline.rebase(lead)
        # A pause from the answer on (on-demand) still starts at the file's start.
        self._paused = [
            (start + lead if start > 0 else 0, None if end is None else end + lead)
            for start, end in self._paused
        ]
        self._prompts = [(start + lead, prompt) for start, prompt in self._prompts]

    def _advance(self, until: float) -> None:
        """Write the call's audio up to wall-clock `until`."""
        if self.call_sample(until) <= self._written_until:
            return
        if not self._origin_fixed:
            self._fix_origin()
        up_to = self.call_sample(until)
        block_start = self._written_until
        legs = {leg: self._timelines[leg].drain(up_to) for leg in LEGS}
        # The listener (in-band DTMF) may pause or resume inside this very block, so it
        # runs before the block counts as written.
        if self._audio_listener is not None:
            for leg, samples in legs.items():
                self._audio_listener(leg, block_start, samples)
        self._written_until = up_to
        if self._error is not None:
            return
        frames = self._mixer.mix(legs)
        if self._prompts:
            self._mix_prompts(frames, block_start, up_to)
        recorded = self._recorded_mask(block_start, up_to)
        if recorded is not None:
            if self.paused_mode == "skip":
                frames = frames[recorded]
            else:
                frames[~recorded] = 0
        try:
            self.sink.write(frames)
        except MediaError as exc:
            self._fail(str(exc))

    def _mix_prompts(self, frames: Int16Array, start: int, stop: int) -> None:
        """Add the pending prompts' samples in [start, stop) to `frames`, in place."""
        pending: list[tuple[int, Int16Array]] = []
        for prompt_start, prompt in self._prompts:
            prompt_stop = prompt_start + prompt.size
            lo, hi = max(prompt_start, start), min(prompt_stop, stop)
            if lo < hi:
                part = prompt[lo - prompt_start : hi - prompt_start].astype(np.int32)
                target = frames[lo - start : hi - start]
                if target.ndim == 2:
                    part = part[:, np.newaxis]
                target[...] = np.clip(target.astype(np.int32) + part, -32768, 32767)
            if prompt_stop > stop:
                pending.append((prompt_start, prompt))
        self._prompts = pending

    def _recorded_mask(self, start: int, stop: int) -> npt.NDArray[np.bool_] | None:
        """False where [start, stop) is paused; None if nothing in it is paused."""
        mask: npt.NDArray[np.bool_] | None = None
        for pause_start, pause_end in self._paused:
            lo = max(pause_start, start)
            hi = stop if pause_end is None else min(pause_end, stop)
            if lo < hi:
                if mask is None:
                    mask = np.ones(stop - start, dtype=np.bool_)
                mask[lo - start : hi - start] = False
        return mask

    def _mark_unrecordable(self, leg: str, payload_type: int, codec: str | None) -> None:
        if self._unrecordable_reason is None:
            name = codec or "unknown"
            self._unrecordable_reason = (
                f"unrecordable codec: leg {leg} payload type {payload_type} ({name})"
            )
            logger.warning("recording %s: %s", self.label, self._unrecordable_reason)

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
            logger.error("recording %s: writing stopped: %s", self.label, reason)
