"""Unit tests for b2bua.sdp: parse_sdp and rewrite_sdp."""

from __future__ import annotations

import pytest

from b2bua.sdp import SdpError, parse_sdp, rewrite_sdp

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"a=sendrecv\r\n"
    b"m=audio 49170 RTP/AVP 0 8 9 18 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=ptime:20\r\n"
    b"a=rtcp:49171\r\n"
    b"a=sendonly\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"c=IN IP4 192.0.2.11\r\n"
    b"a=rtpmap:99 H264/90000\r\n"
    b"m=audio 0 RTP/AVP 0\r\n"
)


def _unchanged_lines(body: bytes) -> list[bytes]:
    """Lines rewrite_sdp must leave alone, with their line endings."""
    return [
        line
        for line in body.splitlines(keepends=True)
        if not line.startswith((b"c=", b"m=", b"a=rtcp:"))
    ]


def test_parse_offer() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.version == 0
    assert sdp.origin == "alice 2890844526 2890844526 IN IP4 192.0.2.10"
    assert sdp.connection == "192.0.2.10"
    assert sdp.attributes == [("sendrecv", None)]
    assert [m.kind for m in sdp.media] == ["audio", "video", "audio"]
    audio, video, disabled = sdp.media
    assert (audio.port, audio.proto, audio.formats) == (
        49170,
        "RTP/AVP",
        ["0", "8", "9", "18", "101"],
    )
    assert audio.connection is None
    assert ("fmtp", "101 0-16") in audio.attributes
    assert ("ptime", "20") in audio.attributes
    assert audio.rtpmap == {
        0: ("PCMU", 8000),
        8: ("PCMA", 8000),
        9: ("G722", 8000),
        18: ("G729", 8000),
        101: ("telephone-event", 8000),
    }
    assert audio.direction == "sendonly"
    assert video.connection == "192.0.2.11"
    assert video.rtpmap == {99: ("H264", 90000)}
    assert video.direction == "sendrecv"  # from the session level
    assert disabled.port == 0


def test_static_payload_types_only_when_listed() -> None:
    body = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 13 3 0\r\na=rtpmap:0 PCMU/8000\r\n"
    media = parse_sdp(body).media[0]
    assert media.rtpmap == {13: ("CN", 8000), 0: ("PCMU", 8000)}
    two_channel = b"v=0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
    assert parse_sdp(two_channel).media[0].rtpmap == {96: ("opus", 48000)}


def test_malformed_rtpmap_is_skipped() -> None:
    body = b"v=0\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"  # as in RFC 4475
    media = parse_sdp(body).media[0]
    assert media.rtpmap == {}
    assert media.attributes == [("rtpmap", "31 LPC")]


@pytest.mark.parametrize(
    ("session_attr", "media_attr", "expected"),
    [
        (b"", b"", "sendrecv"),
        (b"a=inactive\r\n", b"", "inactive"),
        (b"a=recvonly\r\n", b"a=sendrecv\r\n", "sendrecv"),
        (b"", b"a=recvonly\r\n", "recvonly"),
        (b"a=sendonly\r\n", b"a=rtpmap:0 PCMU/8000\r\n", "sendonly"),
    ],
)
def test_direction(session_attr: bytes, media_attr: bytes, expected: str) -> None:
    body = b"v=0\r\n" + session_attr + b"m=audio 4000 RTP/AVP 0\r\n" + media_attr
    assert parse_sdp(body).media[0].direction == expected


def test_parse_bare_lf_and_multicast_ttl() -> None:
    sdp = parse_sdp(b"v=0\nc=IN IP4 224.2.1.1/127\nm=audio 4000/2 RTP/AVP 0\n")
    assert sdp.connection == "224.2.1.1"
    assert sdp.media[0].port == 4000


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello world\r\n",
        b"o=- 1 1 IN IP4 1.2.3.4\r\n",  # no v=
        b"v=0\r\nm=audio port RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nc=IN IP4\r\n",
        b"v=0\r\nc=XX IP4 1.2.3.4\r\n",
        b"v=x\r\n",
        b"v=0\r\n\xff\xfe=1\r\n",
    ],
)
def test_parse_errors(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)
    assert issubclass(SdpError, ValueError)


def test_rewrite_replaces_addresses_and_ports_only() -> None:
    out = rewrite_sdp(OFFER, "203.0.113.5", [30000, 30002, 30004])
    assert _unchanged_lines(out) == _unchanged_lines(OFFER)
    lines = out.split(b"\r\n")
    assert b"c=IN IP4 203.0.113.5" in lines
    assert b"c=IN IP4 192.0.2.10" not in lines and b"c=IN IP4 192.0.2.11" not in lines
    assert b"m=audio 30000 RTP/AVP 0 8 9 18 101" in lines
    assert b"m=video 30002 RTP/AVP 99" in lines
    assert b"m=audio 0 RTP/AVP 0" in lines  # disabled stream stays disabled
    assert b"a=rtcp:30001" in lines
    assert out.count(b"\r\n") == OFFER.count(b"\r\n")
    assert b"\n" not in out.replace(b"\r\n", b"")
    sdp = parse_sdp(out)
    assert sdp.connection == "203.0.113.5"
    assert [m.port for m in sdp.media] == [30000, 30002, 0]
    assert sdp.media[1].connection == "203.0.113.5"
    assert sdp.media[0].rtpmap == parse_sdp(OFFER).media[0].rtpmap


def test_rewrite_keeps_bare_lf_and_has_no_trailing_newline_added() -> None:
    body = b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0"
    out = rewrite_sdp(body, "127.0.0.1", [20000])
    assert out == (
        b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 20000 RTP/AVP 0"
    )
    assert b"\r" not in out
    assert out.endswith(b"m=audio 20000 RTP/AVP 0")


def test_rewrite_mixed_line_endings_are_kept_per_line() -> None:
    body = b"v=0\r\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\r\na=fmtp:0 x\n"
    out = rewrite_sdp(body, "127.0.0.1", [20000])
    assert out == b"v=0\r\nc=IN IP4 127.0.0.1\nm=audio 20000 RTP/AVP 0\r\na=fmtp:0 x\n"


def test_rewrite_ipv6_ttl_and_port_count() -> None:
    body = b"v=0\r\nc=IN IP4 224.2.1.1/127\r\nm=audio 4000/2 RTP/AVP 0\r\n"
    out = rewrite_sdp(body, "2001:db8::7", [20000])
    assert out == b"v=0\r\nc=IN IP6 2001:db8::7\r\nm=audio 20000/2 RTP/AVP 0\r\n"


def test_rewrite_extra_media_lines_are_disabled() -> None:
    out = rewrite_sdp(OFFER, "127.0.0.1", [20000])
    assert [m.port for m in parse_sdp(out).media] == [20000, 0, 0]


def test_rewrite_rtcp_with_address() -> None:
    body = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.1\r\n"
    out = rewrite_sdp(body, "127.0.0.1", [20000])
    assert out.endswith(b"a=rtcp:20001 IN IP4 127.0.0.1\r\n")


def test_rewrite_bumps_origin_version_only_when_asked() -> None:
    same = rewrite_sdp(OFFER, "127.0.0.1", [1, 2, 3])
    assert b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n" in same
    bumped = rewrite_sdp(OFFER, "127.0.0.1", [1, 2, 3], bump_version=True)
    assert b"o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n" in bumped


def test_rewrite_errors() -> None:
    with pytest.raises(SdpError):
        rewrite_sdp(b"not sdp", "127.0.0.1", [1])
    with pytest.raises(SdpError):
        rewrite_sdp(b"v=0\r\nm=audio x RTP/AVP 0\r\n", "127.0.0.1", [1])
    with pytest.raises(SdpError):
        rewrite_sdp(b"v=0\r\no=bad\r\n", "127.0.0.1", [1], bump_version=True)


def test_rewrite_is_idempotent_for_same_target() -> None:
    once = rewrite_sdp(OFFER, "127.0.0.1", [20000, 20002, 20004])
    assert rewrite_sdp(once, "127.0.0.1", [20000, 20002, 20004]) == once
