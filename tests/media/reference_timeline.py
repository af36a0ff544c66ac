"""FROZEN REFERENCE for tests/media/test_batch_ingest.py: media/timeline.py as it was before the
recorder's batch ingest (commit e1378e8), the per-packet path that the batch path must
match byte for byte. Do not change it to follow the live module.

Per-leg audio timeline: decoded RTP payloads placed by RTP timestamp on the call clock.

Call time is a sample index at `clock_rate` counted from `call_start` (a wall-clock time,
the same clock as packet arrivals). Each RTP stream (SSRC) is anchored to call time by
arrival: a packet's last sample is taken to be at its arrival instant, because a sender
emits a packet once its audio is captured. Within a stream, samples are then placed by
RTP timestamp alone, so loss, silence suppression (DTX/comfort noise) and timestamp gaps
become silence of exactly the gap's length, and jitter moves nothing.

The anchor is the least delayed packet seen so far: network delay only ever adds to the
arrival, so a packet that arrives "early" relative to the anchor shows the anchor was
taken from a delayed packet, and the stream is moved earlier. A drift window moves it
later again if every packet for `drift_window_s` came later than expected by more than
`drift_tolerance_s` (a slow sender clock or a longer route). A timestamp that disagrees
with the arrival clock by more than `jump_threshold_s` (or runs ahead of it by more than
the reorder window), and a new SSRC, start a fresh anchor.

A codec's RTP clock need not be the timeline's rate (G.722 is stamped at 8 kHz and
decoded at 16 kHz, Opus at 48 kHz): `push` takes the stream's `rtp_clock_rate` and
converts timestamps to call samples. `lead` places a packet that many samples earlier,
for audio that a resampler delayed (`media.codecs.Resampler.delay`).

Call time may start before `call_start`: `rebase(samples)` moves call time 0 that many
samples earlier (the recorder does it before its first write, so that a first packet
whose audio began just before the answer is kept whole, see `earliest_pending`).

Samples are handed out by `drain(up_to)` in one contiguous block per call, zeros where no
packet covered the time. The caller drains up to `now - reorder_window`, so packets
reordered or jittered by less than the window still land in place; a packet whose span is
entirely committed when it arrives is dropped and counted as late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media.rtp import RtpPacket

__all__ = ["LegTimeline", "TimelineStats"]

Int16Array = npt.NDArray[np.int16]

_TIMESTAMP_MODULUS = 1 << 32
_SEQUENCE_MODULUS = 1 << 16
_OLD_SEQUENCE_SPAN = 256


def _signed_delta(value: int, reference: int, modulus: int) -> int:
    """`value - reference` on a wrapping counter, in [-modulus/2, modulus/2)."""
    half = modulus >> 1
    return ((value - reference + half) % modulus) - half


@dataclass
class TimelineStats:
    """Counters of one leg's timeline, for logs and the fidelity bench."""

    packets: int = 0
    samples: int = 0
    duplicates: int = 0
    late: int = 0
    anchors: int = 0
    drift_shifts: int = 0


# How early (in seconds) a packet must be before the anchor moves.
_EARLY_TOLERANCE_S = 0.001


@dataclass
class _Anchor:
    """Maps one stream's extended RTP timestamps to call samples:
    call = ext * clock_rate // rtp_rate + offset."""

    serial: int
    offset: int
    rtp_rate: int
    highest_timestamp: int
    highest_sequence: int
    window_min_lateness: int
    window_end: float


@dataclass
class _Pending:
    anchor: _Anchor
    timestamp: int  # the extended RTP timestamp in samples of the timeline's rate
    pcm: Int16Array


class LegTimeline:
    """One leg's decoded audio placed on the call clock by RTP timestamp (sans-IO).

    `push` each decoded packet with its arrival wall-clock time, then `drain(up_to)` the
    contiguous samples of call time [committed, up_to).
    """

    def __init__(
        self,
        call_start: float,
        *,
        clock_rate: int = 8000,
        reorder_window_s: float = 0.2,
        jump_threshold_s: float = 1.0,
        drift_window_s: float = 5.0,
        drift_tolerance_s: float = 0.04,
    ) -> None:
        self.call_start = call_start
        self.clock_rate = clock_rate
        self.reorder_window_s = reorder_window_s
        self.stats = TimelineStats()
        self._reorder_window = round(reorder_window_s * clock_rate)
        self._jump_threshold = round(jump_threshold_s * clock_rate)
        self._drift_window_s = drift_window_s
        self._drift_tolerance = round(drift_tolerance_s * clock_rate)
        self._early_tolerance = round(_EARLY_TOLERANCE_S * clock_rate)
        self._anchors: dict[int, _Anchor] = {}
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._committed = 0
        self._next_serial = 0

    @property
    def committed(self) -> int:
        """Call sample up to which audio has been drained (exclusive)."""
        return self._committed

    @property
    def pending_packets(self) -> int:
        return len(self._pending)

    def call_sample(self, wall_time: float) -> int:
        """The call-time sample index of a wall-clock instant."""
        return round((wall_time - self.call_start) * self.clock_rate)

    def push(
        self,
        packet: RtpPacket,
        arrival: float,
        pcm: Int16Array,
        *,
        rtp_clock_rate: int | None = None,
        lead: int = 0,
    ) -> None:
        """Place one packet's decoded samples; `pcm` must be at this timeline's clock rate.

        `rtp_clock_rate` is the rate of the packet's RTP timestamps (default: the
        timeline's); `lead` places the samples that many earlier (a resampler's delay).
        """
        size = len(pcm)
        if size == 0:
            return
        rtp_rate = rtp_clock_rate or self.clock_rate
        self.stats.packets += 1
        first_sample_by_arrival = self.call_sample(arrival) - size
        anchor = self._anchors.get(packet.ssrc)
        if anchor is not None and anchor.rtp_rate != rtp_rate:
            anchor = None  # the stream changed codec clock: place it afresh
        if anchor is None:
            anchor = self._new_anchor(packet, first_sample_by_arrival, arrival, rtp_rate)
            timestamp = packet.timestamp
        else:
            timestamp = anchor.highest_timestamp + _signed_delta(
                packet.timestamp, anchor.highest_timestamp, _TIMESTAMP_MODULUS
            )
            sequence_step = _signed_delta(
                packet.sequence, anchor.highest_sequence, _SEQUENCE_MODULUS
            )
            placed = self._scaled(timestamp, rtp_rate) + anchor.offset
            lateness = first_sample_by_arrival - placed
            if lateness > self._jump_threshold and -_OLD_SEQUENCE_SPAN <= sequence_step <= 0:
                # An old packet arriving very late, not a timestamp jump: drop it. The span
                # is bounded so that a sender restarting its sequence lower re-anchors.
                self.stats.late += 1
                return
            if lateness > self._jump_threshold or lateness < -self._reorder_window:
                anchor = self._new_anchor(packet, first_sample_by_arrival, arrival, rtp_rate)
                timestamp = packet.timestamp
            else:
                self._track_delay(anchor, lateness, arrival)
                if timestamp > anchor.highest_timestamp:
                    anchor.highest_timestamp = timestamp
                if sequence_step > 0:
                    anchor.highest_sequence = packet.sequence

        position = self._scaled(timestamp, rtp_rate) - lead
        if position + anchor.offset + size <= self._committed:
            self.stats.late += 1
            return
        key = (anchor.serial, position)
        if key in self._pending:
            self.stats.duplicates += 1
            return
        self._pending[key] = _Pending(anchor, position, pcm)
        self.stats.samples += size

    def _scaled(self, timestamp: int, rtp_rate: int) -> int:
        """An extended RTP timestamp in samples of this timeline's rate."""
        if rtp_rate == self.clock_rate:
            return timestamp
        return timestamp * self.clock_rate // rtp_rate

    def earliest_pending(self) -> int | None:
        """The call sample of the earliest audio not yet drained, or None if none is."""
        starts = [item.timestamp + item.anchor.offset for item in self._pending.values()]
        return min(starts) if starts else None

    def rebase(self, samples: int) -> None:
        """Move call time 0 `samples` earlier (before anything was drained): every
        sample placed so far keeps its wall-clock time and gets an index `samples` higher."""
        if samples <= 0:
            return
        if self._committed:
            raise ValueError("cannot rebase a timeline that has handed out samples")
        self.call_start -= samples / self.clock_rate
        for anchor in self._anchors.values():
            anchor.offset += samples

    def drain(self, up_to: int) -> Int16Array:
        """Return call samples [committed, up_to) and advance `committed` to `up_to`."""
        start_of_block = self._committed
        if up_to <= start_of_block:
            return np.zeros(0, dtype=np.int16)
        block = np.zeros(up_to - start_of_block, dtype=np.int16)
        kept: dict[tuple[int, int], _Pending] = {}
        for key, item in self._pending.items():
            start = item.timestamp + item.anchor.offset
            end = start + len(item.pcm)
            if end <= start_of_block:
                self.stats.late += 1
                continue
            if start >= up_to:
                kept[key] = item
                continue
            copy_from = max(start, start_of_block)
            copy_to = min(end, up_to)
            block[copy_from - start_of_block : copy_to - start_of_block] = item.pcm[
                copy_from - start : copy_to - start
            ]
            if end > up_to:
                split = up_to - start
                rest = _Pending(item.anchor, item.timestamp + split, item.pcm[split:])
                kept[(item.anchor.serial, rest.timestamp)] = rest
        self._pending = kept
        self._committed = up_to
        return block

    def _new_anchor(
        self, packet: RtpPacket, first_sample: int, arrival: float, rtp_rate: int
    ) -> _Anchor:
        anchor = _Anchor(
            serial=self._next_serial,
            offset=first_sample - self._scaled(packet.timestamp, rtp_rate),
            rtp_rate=rtp_rate,
            highest_timestamp=packet.timestamp,
            highest_sequence=packet.sequence,
            window_min_lateness=0,
            window_end=arrival + self._drift_window_s,
        )
        self._next_serial += 1
        self._anchors[packet.ssrc] = anchor
        self.stats.anchors += 1
        return anchor

    def _track_delay(self, anchor: _Anchor, lateness: int, arrival: float) -> None:
        if -self._early_tolerance <= lateness < 0:
            # Scheduling noise of a sample or two: moving the stream for it would leave a
            # seam (samples dropped or repeated) for a sub-millisecond gain in alignment.
            return
        if lateness < 0:
            # Less delayed than the anchor packet: the anchor itself came in late.
            anchor.offset += lateness
            anchor.window_min_lateness = 0
            return
        if arrival < anchor.window_end:
            anchor.window_min_lateness = min(anchor.window_min_lateness, lateness)
            return
        if anchor.window_min_lateness > self._drift_tolerance:
            anchor.offset += anchor.window_min_lateness
            self.stats.drift_shifts += 1
            lateness -= anchor.window_min_lateness
        anchor.window_min_lateness = lateness
        anchor.window_end = arrival + self._drift_window_s
