from __future__ import annotations

import struct
from pathlib import Path

import pytest

from media.rtp import MediaError, RtpPacket, is_rtcp, rtp_header_valid

DATA = Path(__file__).resolve().parent.parent / "data" / "rtp"
SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def udp_payloads_from_pcap(path: Path) -> list[bytes]:
    """UDP payloads of a classic little-endian Ethernet/IPv4 pcap (as SIPp ships them)."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    payloads = []
    offset = 24
    while offset < len(data):
        captured = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip_header = (frame[14] & 0x0F) * 4
        payloads.append(frame[14 + ip_header + 8 :])
    return payloads


def complex_packet() -> RtpPacket:
    return RtpPacket(
        padding=True,
        extension=True,
        marker=True,
        payload_type=96,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0x01020304,
        csrcs=[0xAAAAAAAA, 0xBBBBBBBB],
        extension_profile=0xBEDE,
        extension_data=b"\x10\xff\x00\x00",
        payload=b"hello",
        padding_data=b"\x01\x02\x03",
    )


def test_parse_captured_g711_alaw_packet() -> None:
    packet = RtpPacket.parse(fixture("g711a_marker.bin"))
    assert packet.version == 2
    assert packet.marker is True
    assert packet.payload_type == 8
    assert packet.sequence == 0xE6FD
    assert packet.timestamp == 0xF0
    assert packet.ssrc == 0xDEE0EE8F
    assert packet.csrcs == []
    assert not packet.extension and not packet.padding
    assert len(packet.payload) == 240  # 30 ms of 8 kHz A-law

    following = RtpPacket.parse(fixture("g711a_seq2.bin"))
    assert following.marker is False
    assert following.sequence == packet.sequence + 1
    assert following.timestamp == packet.timestamp + 240


def test_parse_captured_rfc4733_event_packets() -> None:
    start = RtpPacket.parse(fixture("rfc4733_digit1_start.bin"))
    end = RtpPacket.parse(fixture("rfc4733_digit1_end.bin"))
    assert start.payload_type == end.payload_type == 101
    assert start.marker and not end.marker
    assert start.timestamp == end.timestamp  # one event, one timestamp
    assert start.payload[0] == end.payload[0] == 1  # digit "1"
    assert not start.payload[1] & 0x80 and end.payload[1] & 0x80  # E bit only at the end


@pytest.mark.parametrize(
    "name",
    ["g711a_marker.bin", "g711a_seq2.bin", "rfc4733_digit1_start.bin", "rfc4733_digit1_end.bin"],
)
def test_fixture_round_trips_byte_exact(name: str) -> None:
    data = fixture(name)
    assert RtpPacket.parse(data).serialize() == data
    assert rtp_header_valid(data)
    assert not is_rtcp(data)


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="sip-tester's g711a.pcap is not installed")
def test_every_packet_of_the_sipp_capture_round_trips() -> None:
    payloads = udp_payloads_from_pcap(SIPP_PCAP)
    assert len(payloads) > 200
    sequences = []
    for data in payloads:
        packet = RtpPacket.parse(data)
        assert packet.serialize() == data
        sequences.append(packet.sequence)
    assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(len(sequences))]


def test_csrcs_extension_and_padding_round_trip() -> None:
    packet = complex_packet()
    data = packet.serialize()
    assert len(data) == 12 + 8 + 4 + 4 + 5 + 3
    assert data[0] == 0x80 | 0x20 | 0x10 | 2
    assert data[1] == 0x80 | 96
    parsed = RtpPacket.parse(data)
    assert parsed == packet
    assert parsed.serialize() == data


def test_non_zero_padding_octets_are_kept() -> None:
    data = RtpPacket(payload=b"\x00" * 4).serialize()
    padded = bytes([data[0] | 0x20]) + data[1:] + b"\xaa\xbb\x03"
    parsed = RtpPacket.parse(padded)
    assert parsed.payload == b"\x00" * 4
    assert parsed.padding_data == b"\xaa\xbb\x03"
    assert parsed.serialize() == padded


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x80\x08" + bytes(9), "too short"),
        (b"\x40\x08" + bytes(10), "version 1"),
        (b"\xc0\x08" + bytes(10), "version 3"),
        (b"\x83\x08" + bytes(10) + bytes(8), "CSRC count 3"),
        (b"\x90\x08" + bytes(10) + b"\xbe\xde", "extension header"),
        (b"\x90\x08" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4), "extension of 2 words"),
        (b"\xa0\x08" + bytes(10) + b"\x00", "padding length is 0"),
        (b"\xa0\x08" + bytes(10) + b"\x01\x02\x09", "overlaps the header"),
    ],
)
def test_malformed_packets_raise_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        RtpPacket.parse(data)
    assert not rtp_header_valid(data)


def test_header_check_agrees_with_parse_on_every_truncation() -> None:
    data = complex_packet().serialize()
    for length in range(len(data) + 1):
        prefix = data[:length]
        try:
            RtpPacket.parse(prefix)
            parses = True
        except MediaError:
            parses = False
        assert rtp_header_valid(prefix) is parses, length
    # The complete packet is valid; cutting into its CSRCs or extension is not.
    assert rtp_header_valid(data)
    assert not rtp_header_valid(data[:20])


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(payload_type=128),
        RtpPacket(csrcs=list(range(16))),
        RtpPacket(sequence=65536),
        RtpPacket(extension=True, extension_data=b"abc"),
        RtpPacket(padding=True),
        RtpPacket(padding=True, padding_data=b"\x00\x05"),
    ],
)
def test_unencodable_fields_raise_media_error(packet: RtpPacket) -> None:
    with pytest.raises(MediaError):
        packet.serialize()


def test_is_rtcp_uses_the_rfc5761_payload_type_range() -> None:
    sender_report = bytes([0x80, 200, 0x00, 0x06]) + bytes(24)
    receiver_report = bytes([0x81, 201, 0x00, 0x07]) + bytes(28)
    assert is_rtcp(sender_report)
    assert is_rtcp(receiver_report)
    assert not is_rtcp(fixture("g711a_marker.bin"))  # marker + PT 8 = 136
    assert not is_rtcp(RtpPacket(marker=True, payload_type=127).serialize())  # 255
    assert not is_rtcp(bytes([0x40, 200, 0, 1]))  # not version 2
    assert not is_rtcp(b"\x80")
