from __future__ import annotations

import numpy as np

from media import g711
from media.rtp import RtpPacket
from media.timeline import LegTimeline
from tests.media.stream_builder import (
    PTIME,
    RATE,
    SentPacket,
    add_jitter,
    g711_round_trip,
    lag_of,
    noise,
    packetize,
)

START = 1_700_000_000.0  # call start, wall clock


def feed(timeline: LegTimeline, packets: list[SentPacket]) -> None:
    for sent in packets:
        timeline.push(sent.packet, sent.arrival, g711.ulaw_decode(sent.packet.payload))


def run(
    packets: list[SentPacket], seconds: float, **options: float
) -> tuple[np.ndarray, LegTimeline]:
    """Feed in arrival order and drain as a recorder would: every 250 ms, up to
    now - reorder window, then everything at the end."""
    timeline = LegTimeline(START)
    ordered = sorted(packets, key=lambda p: p.arrival)
    chunks = []
    index = 0
    for tick in np.arange(0.25, seconds + 1e-9, 0.25):
        now = START + tick
        while index < len(ordered) and ordered[index].arrival <= now:
            feed(timeline, [ordered[index]])
            index += 1
        chunks.append(timeline.drain(timeline.call_sample(now - timeline.reorder_window_s)))
    feed(timeline, ordered[index:])
    chunks.append(timeline.drain(round(seconds * RATE)))
    return np.concatenate(chunks), timeline


def test_in_order_stream_lands_where_it_was_captured_plus_delay() -> None:
    source = noise(2.0, seed=1)
    packets = packetize(source, first_capture=START + 0.5, delay=0.03)
    out, timeline = run(packets, 3.0)
    assert len(out) == 3 * RATE
    position = round(0.53 * RATE)
    assert np.array_equal(out[position : position + len(source)], g711_round_trip(source))
    assert not out[:position].any() and not out[position + len(source) :].any()
    assert timeline.stats.packets == len(packets) and timeline.stats.late == 0


def test_loss_becomes_silence_of_the_right_length() -> None:
    source = noise(1.0, seed=2)
    packets = packetize(source, first_capture=START + 0.2)
    lost = {5, 6, 20}
    out, _ = run([p for k, p in enumerate(packets) if k not in lost], 1.5)
    expected = g711_round_trip(source)
    for k in lost:
        expected[k * PTIME : (k + 1) * PTIME] = 0
    position = round(0.2 * RATE)
    assert np.array_equal(out[position : position + len(source)], expected)


def test_reordered_and_duplicated_packets_are_placed_once_by_timestamp() -> None:
    source = noise(1.0, seed=3)
    packets = packetize(source, first_capture=START + 0.2)
    shuffled = []
    for k in range(0, len(packets) - 1, 2):
        # swap neighbours, and send every 3rd packet twice (the copy 30 ms later)
        first, second = packets[k + 1], packets[k]
        shuffled.append(SentPacket(first.packet, first.arrival))
        shuffled.append(SentPacket(second.packet, first.arrival + 0.001))
        if k % 3 == 0:
            shuffled.append(SentPacket(second.packet, first.arrival + 0.03))
    out, timeline = run(shuffled, 1.5)
    position = round(0.2 * RATE)
    covered = (len(packets) // 2) * 2 * PTIME
    assert np.array_equal(out[position : position + covered], g711_round_trip(source)[:covered])
    assert timeline.stats.duplicates >= 8


def test_plain_timestamp_gap_is_silence_of_the_gap() -> None:
    """Silence suppression without CN: the sender stops, timestamps jump by the pause."""
    first = noise(0.6, seed=4)
    second = noise(0.6, seed=5)
    talk1 = packetize(first, first_capture=START + 0.1, first_timestamp=1000, first_sequence=10)
    talk2 = packetize(
        second,
        first_capture=START + 0.1 + 0.6 + 0.7,
        first_timestamp=1000 + len(first) + round(0.7 * RATE),
        first_sequence=10 + len(talk1),
    )
    talk2[0].packet.marker = True
    out, timeline = run(talk1 + talk2, 2.5)
    p1 = round(0.1 * RATE)
    p2 = p1 + len(first) + round(0.7 * RATE)
    assert np.array_equal(out[p1 : p1 + len(first)], g711_round_trip(first))
    assert not out[p1 + len(first) : p2].any()
    assert np.array_equal(out[p2 : p2 + len(second)], g711_round_trip(second))
    assert timeline.stats.anchors == 1


def test_sequence_and_timestamp_wraparound() -> None:
    source = noise(1.0, seed=6)
    packets = packetize(
        source,
        first_capture=START + 0.1,
        first_sequence=65530,
        first_timestamp=(1 << 32) - 3 * PTIME - 17,
    )
    assert packets[-1].packet.sequence < 100 and packets[-1].packet.timestamp < 10000
    # Swap neighbours so reordering happens across both wraps.
    swapped = []
    for k in range(0, len(packets) - 1, 2):
        swapped += [packets[k + 1], SentPacket(packets[k].packet, packets[k + 1].arrival)]
    out, timeline = run(swapped, 1.5)
    position = round(0.1 * RATE)
    assert timeline.stats.anchors == 1
    assert np.array_equal(out[position : position + len(source)], g711_round_trip(source))


def test_jitter_of_60_ms_keeps_alignment_within_a_few_samples() -> None:
    source = noise(3.0, seed=16)
    packets = packetize(source, first_capture=START + 0.1, first_timestamp=(1 << 32) - 4000)
    jittered = add_jitter(packets, max_jitter=0.06, seed=1, loss=0.05)
    out, timeline = run(jittered, 3.5)
    # Jitter only adds delay, so the least delayed packet sets the anchor: the stream
    # lands late by the smallest jitter seen, a fraction of a millisecond here.
    lag = lag_of(source, out) - round(0.1 * RATE)
    assert 0 <= lag <= 16
    assert timeline.stats.late == 0 and timeline.stats.anchors == 1
    recovered = out[800 + lag : 800 + lag + len(source)]
    assert 0.9 < np.count_nonzero(recovered) / len(source) < 0.99


def test_ssrc_change_reanchors_to_arrival() -> None:
    first = noise(0.5, seed=7)
    second = noise(0.5, seed=8)
    a = packetize(first, first_capture=START + 0.1, ssrc=1, first_timestamp=123456)
    b = packetize(second, first_capture=START + 0.8, ssrc=2, first_timestamp=999)
    out, timeline = run(a + b, 1.6)
    assert np.array_equal(out[800 : 800 + len(first)], g711_round_trip(first))
    p2 = round(0.8 * RATE)
    assert np.array_equal(out[p2 : p2 + len(second)], g711_round_trip(second))
    assert timeline.stats.anchors == 2


def test_timestamp_jump_reanchors_to_arrival() -> None:
    first = noise(0.5, seed=9)
    second = noise(0.5, seed=10)
    a = packetize(first, first_capture=START + 0.1, first_timestamp=0, first_sequence=1)
    b = packetize(
        second,
        first_capture=START + 0.6,
        first_timestamp=50 * RATE,  # 50 s ahead of the wall clock
        first_sequence=1 + len(a),
    )
    c = packetize(
        first,
        first_capture=START + 1.1,
        first_timestamp=7 * RATE,  # and back again, behind it
        first_sequence=1 + len(a) + len(b),
    )
    out, timeline = run(a + b + c, 1.8)
    assert np.array_equal(out[800:4800], g711_round_trip(first))
    assert np.array_equal(out[4800:8800], g711_round_trip(second))
    assert np.array_equal(out[8800:12800], g711_round_trip(first))
    assert timeline.stats.anchors == 3


def test_late_packet_beyond_the_window_is_dropped_not_misplaced() -> None:
    source = noise(2.0, seed=11)
    packets = packetize(source, first_capture=START + 0.1)
    straggler = packets[10]
    packets[10] = SentPacket(straggler.packet, straggler.arrival + 1.5)
    out, timeline = run(packets, 2.5)
    expected = g711_round_trip(source)
    expected[10 * PTIME : 11 * PTIME] = 0
    assert np.array_equal(out[800 : 800 + len(source)], expected)
    assert timeline.stats.late == 1 and timeline.stats.anchors == 1


def test_delayed_first_packet_does_not_shift_the_stream() -> None:
    source = noise(1.0, seed=12)
    packets = packetize(source, first_capture=START + 0.1, delay=0.02)
    packets[0] = SentPacket(packets[0].packet, packets[0].arrival + 0.06)
    out, _ = run(packets, 1.5)
    position = round(0.12 * RATE)
    assert np.array_equal(out[position : position + len(source)], g711_round_trip(source))


def test_lasting_delay_increase_moves_the_stream_later() -> None:
    """A route change adding 100 ms is followed after the drift window (the arrival clock
    wins), leaving a short silence instead of drifting out of line with the other leg."""
    source = noise(12.0, seed=13)
    packets = packetize(source, first_capture=START)
    step_at = 3.0
    moved = [
        SentPacket(p.packet, p.arrival + (0.1 if p.arrival - START > step_at else 0.0))
        for p in packets
    ]
    out, timeline = run(moved, 12.5)
    assert timeline.stats.drift_shifts == 1
    tail = g711_round_trip(source)[10 * RATE : 11 * RATE]
    assert np.array_equal(out[10 * RATE + 800 : 11 * RATE + 800], tail)


def test_chunked_drain_equals_one_drain() -> None:
    source = noise(1.0, seed=14)
    packets = packetize(source, first_capture=START + 0.05)
    whole = LegTimeline(START)
    feed(whole, packets)
    reference = whole.drain(RATE + 1000)
    pieces = LegTimeline(START)
    feed(pieces, packets)
    bounds = [0, 1, 77, 160, 161, 999, 4000, 4001, RATE + 1000]
    out = np.concatenate([pieces.drain(b) for b in bounds[1:]])
    assert np.array_equal(out, reference)
    assert pieces.pending_packets == 0


def test_packets_before_call_start_are_cut_at_zero() -> None:
    source = noise(0.5, seed=15)
    packets = packetize(source, first_capture=START - 0.1)
    timeline = LegTimeline(START)
    feed(timeline, packets)
    out = timeline.drain(RATE // 2)
    assert np.array_equal(out[: RATE // 2 - 800], g711_round_trip(source)[800 : RATE // 2])


def test_empty_payload_is_ignored() -> None:
    timeline = LegTimeline(START)
    timeline.push(RtpPacket(ssrc=1, timestamp=0), START + 0.1, np.zeros(0, dtype=np.int16))
    assert timeline.stats.packets == 0
    assert not timeline.drain(1600).any()
