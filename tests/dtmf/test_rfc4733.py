from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dtmf.events import DIGITS
from dtmf.rfc4733 import TelephoneEventDecoder
from media.rtp import RtpPacket

DATA = Path(__file__).parent.parent / "data" / "rtp"
SIPP_PCAPS = Path("/usr/share/sip-tester")


def payload(code: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    return bytes([code, (0x80 if end else 0) | volume]) + duration.to_bytes(2, "big")


def press(
    decoder: TelephoneEventDecoder,
    code: int,
    timestamp: int,
    sequence: int,
    at: float,
    *,
    packets: int = 6,
    end_repeats: int = 3,
    skip_first: int = 0,
) -> list[str]:
    """One key press as a phone sends it: a marker packet, updates every 20 ms, 3 ends."""
    digits = []
    for index in range(skip_first, packets):
        digits += decoder.feed(
            payload(code, 160 * index), timestamp, index == 0, sequence + index, at + 0.02 * index
        )
    for repeat in range(end_repeats):
        digits += decoder.feed(
            payload(code, 160 * packets, end=True),
            timestamp,
            False,
            sequence + packets + repeat,
            at + 0.02 * packets,
        )
    return [event.digit for event in digits]


def test_real_packets_from_fixtures_give_digit_1_at_the_start_packet() -> None:
    decoder = TelephoneEventDecoder(101, leg="b")
    start = RtpPacket.parse((DATA / "rfc4733_digit1_start.bin").read_bytes())
    end = RtpPacket.parse((DATA / "rfc4733_digit1_end.bin").read_bytes())
    first = decoder.feed_packet(
        start.payload_type, start.payload, start.timestamp, start.marker, start.sequence, 100.0
    )
    assert [(e.digit, e.method, e.leg, e.at) for e in first] == [("1", "rfc4733", "b", 100.0)]
    for repeat in range(3):
        assert not decoder.feed_packet(
            end.payload_type, end.payload, end.timestamp, end.marker, end.sequence + repeat, 100.3
        )


def _pcap_rtp(path: Path) -> list[RtpPacket]:
    data = path.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
    packets, offset = [], 24
    while offset < len(data):
        length = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip_header = (frame[14] & 0x0F) * 4
        packets.append(RtpPacket.parse(frame[14 + ip_header + 8 :]))
    return packets


@pytest.mark.skipif(not SIPP_PCAPS.exists(), reason="sip-tester pcaps not installed")
@pytest.mark.parametrize("digit", list("0123456789"))
def test_sipp_pcaps_each_give_exactly_one_digit(digit: str) -> None:
    decoder = TelephoneEventDecoder(101)
    events = []
    for index, packet in enumerate(_pcap_rtp(SIPP_PCAPS / f"dtmf_2833_{digit}.pcap")):
        events += decoder.feed_packet(
            packet.payload_type,
            packet.payload,
            packet.timestamp,
            packet.marker,
            packet.sequence,
            index * 0.02,
        )
    assert [event.digit for event in events] == [digit]
    assert events[0].at == 0.0


@pytest.mark.parametrize("code", range(16))
def test_every_event_code_maps_to_its_digit(code: int) -> None:
    decoder = TelephoneEventDecoder(101)
    assert press(decoder, code, 1000, 1, 0.0) == [DIGITS[code]]


def test_key_order_of_codes_10_to_15() -> None:
    assert DIGITS[10:] == "*#ABCD"


def test_lost_first_packets_still_give_one_digit_dated_from_the_duration() -> None:
    decoder = TelephoneEventDecoder(101)
    events = decoder.feed(payload(5, 480), 8000, False, 10, 50.0)
    assert [(e.digit, e.duration) for e in events] == [("5", None)]
    assert events[0].at == pytest.approx(50.0 - 480 / 8000)
    assert press(decoder, 5, 8000, 11, 50.02, skip_first=4) == []


def test_only_the_end_packets_arrive() -> None:
    decoder = TelephoneEventDecoder(101)
    digits = press(decoder, 9, 320, 1, 3.0, packets=5, skip_first=5)
    assert digits == ["9"]


def test_end_packet_carries_the_duration_when_it_is_the_first_seen() -> None:
    decoder = TelephoneEventDecoder(101)
    [event] = decoder.feed(payload(0, 1600, end=True), 42, False, 1, 9.0)
    assert event.duration == pytest.approx(0.2)
    assert event.at == pytest.approx(8.8)


def test_same_digit_twice_is_two_presses() -> None:
    decoder = TelephoneEventDecoder(101)
    digits = press(decoder, 1, 1000, 1, 0.0) + press(decoder, 1, 2600, 20, 0.3)
    assert digits == ["1", "1"]


def test_late_packet_of_an_earlier_event_is_not_a_new_digit() -> None:
    decoder = TelephoneEventDecoder(101)
    assert press(decoder, 10, 1000, 1, 0.0) + press(decoder, 1, 3000, 20, 0.3) == ["*", "1"]
    assert decoder.feed(payload(10, 960, end=True), 1000, False, 9, 0.5) == []


def test_long_event_continued_in_a_new_segment_counts_once() -> None:
    decoder = TelephoneEventDecoder(101)
    assert [e.digit for e in decoder.feed(payload(11, 0xFFFF), 100, True, 1, 0.0)] == ["#"]
    # RFC 4733 §2.5.2.1: the continuation starts where the first segment's duration ends.
    continuation = (100 + 0xFFFF) & 0xFFFFFFFF
    assert decoder.feed(payload(11, 800), continuation, False, 2, 8.2) == []
    assert decoder.feed(payload(11, 1600, end=True), continuation, False, 3, 8.3) == []


def test_timestamp_wraps_around() -> None:
    decoder = TelephoneEventDecoder(101)
    digits = press(decoder, 2, 0xFFFFFF00, 1, 0.0) + press(decoder, 3, 0x00000100, 20, 0.3)
    assert digits == ["2", "3"]


def test_garbled_payload_is_counted_not_raised() -> None:
    decoder = TelephoneEventDecoder(101)
    assert decoder.feed(b"\x01\x0a", 1000, True, 1, 0.0) == []
    assert decoder.garbled == 1
    assert press(decoder, 1, 1000, 2, 0.0) == ["1"]


def test_events_above_15_are_ignored() -> None:
    decoder = TelephoneEventDecoder(101)
    assert decoder.feed(payload(16, 0), 1000, True, 1, 0.0) == []  # hook flash
    assert decoder.ignored == 1


def test_negotiated_payload_type_is_honoured() -> None:
    decoder = TelephoneEventDecoder(96)
    assert decoder.feed_packet(101, payload(4, 0), 1000, True, 1, 0.0) == []
    assert decoder.feed_packet(0, payload(4, 0), 1000, True, 1, 0.0) == []
    events = decoder.feed_packet(96, payload(4, 0), 1000, True, 1, 0.0)
    assert [e.digit for e in events] == ["4"]


def test_invalid_payload_type_is_refused() -> None:
    with pytest.raises(ValueError):
        TelephoneEventDecoder(128)
