"""Per-leg audio timeline: decoded RTP payloads placed by RTP timestamp on the call clock.

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

Packets come one at a time (`push`) or a tick's worth at once (`push_batch`: header
fields as plain ints and the decoded audio of all of them as one array, so nothing per
packet is allocated but its position in its stream's set of pending positions, against
duplicates). Either way each packet goes through the same placement rules, in order.
Packets of one stream that land back to back are kept as one run (one span of samples),
which is what `drain` copies: a run stands exactly for its packets in a row, since a
packet that overlaps them and was placed later still overwrites them.

Samples are handed out by `drain(up_to)` in one contiguous block per call, zeros where no
packet covered the time. The caller drains up to `now - reorder_window`, so packets
reordered or jittered by less than the window still land in place; a packet whose span is
entirely committed when it arrives is dropped and counted as late.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media.rtp import RtpPacket

__all__ = ["LegTimeline", "TimelineStats"]

Int16Array = npt.NDArray[np.int16]

_TIMESTAMP_MODULUS = 1 << 32
_HALF_TIMESTAMP = _TIMESTAMP_MODULUS >> 1
_SEQUENCE_MODULUS = 1 << 16
_HALF_SEQUENCE = _SEQUENCE_MODULUS >> 1
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


class _Anchor:
    """Maps one stream's extended RTP timestamps to call samples:
    call = ext * clock_rate // rtp_rate + offset."""

    __slots__ = (
        "highest_sequence",
        "highest_timestamp",
        "offset",
        "pending",
        "rtp_rate",
        "window_end",
        "window_min_lateness",
    )

    def __init__(
        self,
        offset: int,
        rtp_rate: int,
        highest_timestamp: int,
        highest_sequence: int,
        window_end: float,
    ) -> None:
        self.offset = offset
        self.rtp_rate = rtp_rate
        self.highest_timestamp = highest_timestamp
        self.highest_sequence = highest_sequence
        self.window_min_lateness = 0
        self.window_end = window_end
        # The positions of this stream's packets not yet drained, against duplicates.
        self.pending: set[int] = set()


class _Run:
    """Packets of one stream placed back to back: `starts` are their positions (extended
    timestamps at the timeline's rate, before the anchor's offset), ascending, each
    packet ending where the next starts; `pcm` holds their samples from `starts[0]`."""

    __slots__ = ("anchor", "pcm", "starts")

    def __init__(self, anchor: _Anchor, starts: list[int], pcm: Int16Array) -> None:
        self.anchor = anchor
        self.starts = starts
        self.pcm = pcm


class LegTimeline:
    """One leg's decoded audio placed on the call clock by RTP timestamp (sans-IO).

    `push` each decoded packet (or `push_batch` a tick's packets) with its arrival
    wall-clock time, then `drain(up_to)` the contiguous samples of call time
    [committed, up_to).
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
        # Pending audio in the order it was placed: a later run overwrites an earlier
        # one where they overlap.
        self._runs: list[_Run] = []
        self._committed = 0

    @property
    def committed(self) -> int:
        """Call sample up to which audio has been drained (exclusive)."""
        return self._committed

    @property
    def pending_packets(self) -> int:
        return sum(len(run.starts) for run in self._runs)

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
        self.push_batch(
            [packet.ssrc],
            [packet.sequence],
            [packet.timestamp],
            [arrival],
            pcm,
            [len(pcm)],
            rtp_clock_rate=rtp_clock_rate,
            lead=lead,
        )

    def push_batch(
        self,
        ssrcs: Sequence[int],
        sequences: Sequence[int],
        timestamps: Sequence[int],
        arrivals: Sequence[float],
        pcm: Int16Array,
        sizes: Sequence[int],
        *,
        rtp_clock_rate: int | None = None,
        lead: int = 0,
    ) -> None:
        """Place packets in order, as many `push` calls would: packet i has the header
        fields `ssrcs[i]`, `sequences[i]`, `timestamps[i]`, arrived at `arrivals[i]`, and
        its `sizes[i]` samples follow the previous packet's in `pcm` (at this timeline's
        rate). A packet of 0 samples is skipped. `rtp_clock_rate` and `lead` as `push`.
        """
        rtp_rate = rtp_clock_rate or self.clock_rate
        rate = self.clock_rate
        scale = rtp_rate != rate
        call_start = self.call_start
        stats = self.stats
        anchors = self._anchors
        committed = self._committed
        jump = self._jump_threshold
        reorder = self._reorder_window
        early = self._early_tolerance
        runs = self._runs
        run: _Run | None = None  # the run being extended: the last one placed
        run_first = run_stop = 0  # its samples in `pcm`
        run_end = 0  # the position where it ends
        bound = 0
        last_ssrc: int | None = None  # the stream of the packet before, and its anchor
        anchor: _Anchor | None = None
        for size, arrival, ssrc, sequence, rtp_timestamp in zip(
            sizes, arrivals, ssrcs, sequences, timestamps, strict=True
        ):
            first = bound
            bound += size
            if size == 0:
                continue
            stats.packets += 1
            first_sample_by_arrival = round((arrival - call_start) * rate) - size
            if ssrc != last_ssrc:
                anchor = anchors.get(ssrc)
                last_ssrc = ssrc
            if anchor is not None and anchor.rtp_rate != rtp_rate:
                anchor = None  # the stream changed codec clock: place it afresh
            if anchor is None:
                anchor = self._new_anchor(
                    ssrc, rtp_timestamp, sequence, first_sample_by_arrival, arrival, rtp_rate
                )
                timestamp = rtp_timestamp
            else:
                highest = anchor.highest_timestamp
                timestamp = highest + (
                    (rtp_timestamp - highest + _HALF_TIMESTAMP) % _TIMESTAMP_MODULUS
                    - _HALF_TIMESTAMP
                )
                sequence_step = (
                    sequence - anchor.highest_sequence + _HALF_SEQUENCE
                ) % _SEQUENCE_MODULUS - _HALF_SEQUENCE
                scaled = timestamp * rate // rtp_rate if scale else timestamp
                lateness = first_sample_by_arrival - scaled - anchor.offset
                if lateness > jump and -_OLD_SEQUENCE_SPAN <= sequence_step <= 0:
                    # An old packet arriving very late, not a timestamp jump: drop it. The
                    # span is bounded so that a sender restarting its sequence lower
                    # re-anchors.
                    stats.late += 1
                    continue
                if lateness > jump or lateness < -reorder:
                    anchor = self._new_anchor(
                        ssrc, rtp_timestamp, sequence, first_sample_by_arrival, arrival, rtp_rate
                    )
                    timestamp = rtp_timestamp
                else:
                    if lateness >= 0 and arrival < anchor.window_end:
                        # Within the drift window (most packets): `_track_delay`, inline.
                        if lateness < anchor.window_min_lateness:
                            anchor.window_min_lateness = lateness
                    elif not -early <= lateness < 0:
                        self._track_delay(anchor, lateness, arrival)
                    if timestamp > highest:
                        anchor.highest_timestamp = timestamp
                    if sequence_step > 0:
                        anchor.highest_sequence = sequence

            position = (timestamp * rate // rtp_rate if scale else timestamp) - lead
            if position + anchor.offset + size <= committed:
                stats.late += 1
                continue
            pending = anchor.pending
            if position in pending:
                stats.duplicates += 1
                continue
            pending.add(position)
            stats.samples += size
            if (
                run is not None
                and run.anchor is anchor
                and run_end == position
                and run_stop == first
            ):
                run.starts.append(position)  # right after the last one placed, in time
            else:  # and in `pcm`
                if run is not None:
                    run.pcm = pcm[run_first:run_stop]
                run = _Run(anchor, [position], pcm)
                runs.append(run)
                run_first = first
            run_end = position + size
            run_stop = bound
        if run is not None:
            run.pcm = pcm[run_first:run_stop]

    def earliest_pending(self) -> int | None:
        """The call sample of the earliest audio not yet drained, or None if none is."""
        starts = [run.starts[0] + run.anchor.offset for run in self._runs]
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
        """Return call samples [committed, up_to) and advance `committed` to `up_to`.

        A pending packet whose span now lies wholly before `committed` (its stream's
        anchor moved earlier after it was placed) is dropped and counted as late."""
        start_of_block = self._committed
        if up_to <= start_of_block:
            return np.zeros(0, dtype=np.int16)
        block = np.zeros(up_to - start_of_block, dtype=np.int16)
        kept: list[_Run] = []
        for run in self._runs:
            anchor = run.anchor
            offset = anchor.offset
            starts = run.starts
            start = starts[0] + offset
            end = start + len(run.pcm)
            if end <= start_of_block:
                self.stats.late += len(starts)
                anchor.pending.difference_update(starts)
                continue
            if start >= up_to:
                kept.append(run)
                continue
            # Packets that end before the block: each one a late packet.
            self.stats.late += max(0, bisect_right(starts, start_of_block - offset) - 1)
            copy_from = max(start, start_of_block)
            copy_to = min(end, up_to)
            block[copy_from - start_of_block : copy_to - start_of_block] = run.pcm[
                copy_from - start : copy_to - start
            ]
            split = up_to - offset  # the first position not handed out
            handed = bisect_left(starts, split)  # the packets that start before it
            anchor.pending.difference_update(starts[:handed])
            if end > up_to:
                # The packet that straddles `up_to` stays as its remainder, known from
                # now on by where the remainder starts.
                rest = starts[handed:]
                if not rest or rest[0] != split:
                    rest.insert(0, split)
                    anchor.pending.add(split)
                kept.append(_Run(anchor, rest, run.pcm[split - starts[0] :]))
        self._runs = kept
        self._committed = up_to
        return block

    def _new_anchor(
        self,
        ssrc: int,
        timestamp: int,
        sequence: int,
        first_sample: int,
        arrival: float,
        rtp_rate: int,
    ) -> _Anchor:
        scaled = (
            timestamp * self.clock_rate // rtp_rate if rtp_rate != self.clock_rate else timestamp
        )
        anchor = _Anchor(
            offset=first_sample - scaled,
            rtp_rate=rtp_rate,
            highest_timestamp=timestamp,
            highest_sequence=sequence,
            window_end=arrival + self._drift_window_s,
        )
        self._anchors[ssrc] = anchor
        self.stats.anchors += 1
        return anchor

    def _track_delay(self, anchor: _Anchor, lateness: int, arrival: float) -> None:
        """Follow the stream's delay (a lateness within the early tolerance never gets
        here: moving the stream for scheduling noise of a sample or two would leave a
        seam, samples dropped or repeated, for a sub-millisecond gain in alignment)."""
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
