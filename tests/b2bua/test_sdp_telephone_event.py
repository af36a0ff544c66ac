"""b2bua.sdp.keep_telephone_event: the phone's RFC 4733 kept in an answer that lacks it."""

from __future__ import annotations

from b2bua.sdp import keep_telephone_event, parse_sdp, telephone_event_formats

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 9 0 120\r\na=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:120 telephone-event/8000\r\na=fmtp:120 0-16\r\na=sendrecv\r\n"
)
ANSWER = (
    b"v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
    b"m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def test_answer_without_events_gets_the_offers_payload_type() -> None:
    out = keep_telephone_event(OFFER, ANSWER)
    assert b"m=audio 5000 RTP/AVP 0 120\r\n" in out
    assert out.endswith(b"a=rtpmap:120 telephone-event/8000\r\na=fmtp:120 0-16\r\n")
    # Everything else is the answer's, byte for byte.
    kept = out.replace(b" 120\r\n", b"\r\n", 1).replace(
        b"a=rtpmap:120 telephone-event/8000\r\na=fmtp:120 0-16\r\n", b""
    )
    assert kept == ANSWER
    audio = parse_sdp(out).media[0]
    assert telephone_event_formats(audio) == ["120"]
    assert audio.rtpmap[0] == ("PCMU", 8000)


def test_the_events_go_in_the_audio_section_not_after_a_later_stream() -> None:
    answer = ANSWER + b"m=video 0 RTP/AVP 96\r\n"
    out = keep_telephone_event(OFFER, answer)
    audio, video = parse_sdp(out).media
    assert telephone_event_formats(audio) == ["120"]
    assert video.formats == ["96"] and not video.attributes


def test_nothing_changes_when_the_answer_has_events_or_the_offer_none() -> None:
    with_events = ANSWER.replace(b"RTP/AVP 0", b"RTP/AVP 0 101") + (
        b"a=rtpmap:101 telephone-event/8000\r\n"
    )
    assert keep_telephone_event(OFFER, with_events) == with_events
    no_events = OFFER.replace(b" 120", b"").replace(
        b"a=rtpmap:120 telephone-event/8000\r\na=fmtp:120 0-16\r\n", b""
    )
    assert keep_telephone_event(no_events, ANSWER) == ANSWER


def test_a_payload_type_the_answer_uses_otherwise_is_not_reused() -> None:
    answer = ANSWER.replace(b"RTP/AVP 0", b"RTP/AVP 120") + b"a=rtpmap:120 opus/48000/2\r\n"
    assert keep_telephone_event(OFFER, answer) == answer


def test_bare_lf_answer_keeps_its_line_ends() -> None:
    answer = ANSWER.replace(b"\r\n", b"\n")
    out = keep_telephone_event(OFFER, answer)
    assert b"\r" not in out
    assert b"m=audio 5000 RTP/AVP 0 120\n" in out


def test_a_stray_events_rtpmap_outside_the_m_line_gets_the_type_added_once() -> None:
    # As testkit/sipp/uas_media_keys.xml answers: telephone-event mapped, not offered.
    answer = ANSWER + b"a=rtpmap:120 telephone-event/8000\r\n"
    out = keep_telephone_event(OFFER, answer)
    assert b"m=audio 5000 RTP/AVP 0 120\r\n" in out
    assert out.count(b"a=rtpmap:120 ") == 1 and out.count(b"a=fmtp:120 0-16") == 1
    assert telephone_event_formats(parse_sdp(out).media[0]) == ["120"]


def test_a_stray_rtpmap_of_another_codec_on_that_type_is_left_alone() -> None:
    answer = ANSWER + b"a=rtpmap:120 opus/48000/2\r\n"
    assert keep_telephone_event(OFFER, answer) == answer


def test_a_stray_events_rtpmap_of_another_type_goes() -> None:
    # As testkit/sipp/uas_media_keys.xml answers a G.722 offer with events on 120: pjsua
    # would send its events on the stray 101, which callrec neither sees nor holds back.
    answer = ANSWER + b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    out = keep_telephone_event(OFFER, answer)
    assert b"101" not in out
    assert out == keep_telephone_event(OFFER, ANSWER)
