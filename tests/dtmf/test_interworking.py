"""Telephone-event interworking: the phone's events are taken for the feature code and
never forwarded to a far end without telephone-event; the other keys go on (DigitRelay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import RecordingConfig
from callrec.policy import FeatureCode, RecordingMode
from callrec.recording.session import CallRecording, RecordingFile
from dtmf.events import DIGITS, DigitEvent
from dtmf.interworking import DigitRelay
from media.rtp import RtpPacket

START = 1_700_000_000.0
PHONE = (
    b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)
TRUNK = b"v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\n"


def key(digit: str, at: float) -> DigitEvent:
    return DigitEvent(digit, "rfc4733", "a", at)


def test_relay_drops_the_code_and_passes_every_other_key() -> None:
    relay = DigitRelay("*1", timeout=2.0)
    sent: list[str] = []
    for digit, at in [("5", 0.0), ("*", 1.0), ("1", 1.3), ("*", 2.0), ("2", 2.2), ("#", 3.0)]:
        sent += relay.feed(key(digit, at))
    assert sent == ["5", "*", "2", "#"]
    sent = relay.feed(key("*", 10.0)) + relay.due(11.0)
    assert sent == []
    assert relay.due(12.1) == ["*"]


def events(digit: str, timestamp: int, seq: int) -> list[bytes]:
    code = DIGITS.index(digit)
    return [
        RtpPacket(
            payload_type=101,
            sequence=seq + i,
            timestamp=timestamp,
            ssrc=7,
            marker=i == 0,
            payload=bytes([code, 0x8A if i == 2 else 0x0A]) + (160 * (i + 1)).to_bytes(2, "big"),
        ).serialize()
        for i in range(3)
    ]


@pytest.mark.parametrize("mode", ["none", "inband"])
def test_events_are_taken_for_the_code_and_kept_from_the_far_end(tmp_path: Path, mode: str) -> None:
    config = RecordingConfig(
        channels="mono", format="wav", feature_code=FeatureCode.parse("*1"), announcement="none"
    )
    recording = CallRecording(
        config,
        RecordingFile("x.wav", tmp_path / "x.wav"),
        internal_leg="a",
        start_time=START,
        mode=RecordingMode.ON_DEMAND,
        feature_code="*1",
        dtmf_interworking=mode,
        now=lambda: START + 10,
    )
    relayed: list[str] = []
    recording.relay_digit = relayed.append
    recording.learn_sdp("a", PHONE)
    recording.learn_sdp("b", TRUNK)
    assert recording.events_terminated
    forwarded = 0
    for n, (digit, at) in enumerate([("4", 1.0), ("*", 2.0), ("1", 2.3)]):
        for packet in events(digit, 1000 + 800 * n, 10 * n):
            forwarded += recording.rtp_filter("a", packet, START + at)
            recording.on_packet("a", "rtp", packet, START + at)
    audio = RtpPacket(payload_type=0, sequence=99, timestamp=5, ssrc=7, payload=b"\xff" * 160)
    assert recording.rtp_filter("a", audio.serialize(), START + 3)
    assert recording.rtp_filter("b", audio.serialize(), START + 3)
    assert forwarded == 0  # no event packet reached the trunk
    assert recording.started  # the code started the recording
    assert relayed == ([] if mode == "none" else ["4"])


def test_events_pass_when_the_far_end_has_them(tmp_path: Path) -> None:
    config = RecordingConfig(
        channels="mono", format="wav", feature_code=FeatureCode.parse("*1"), announcement="none"
    )
    recording = CallRecording(
        config,
        RecordingFile("x.wav", tmp_path / "x.wav"),
        internal_leg="a",
        start_time=START,
        mode=RecordingMode.ON_DEMAND,
        dtmf_interworking="inband",
    )
    recording.learn_sdp("a", PHONE)
    recording.learn_sdp("b", PHONE)
    assert not recording.events_terminated
    assert all(recording.rtp_filter("a", p, START + 1) for p in events("4", 100, 0))
