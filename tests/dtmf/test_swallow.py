"""The feature code's RFC 4733 events are kept from the far end; other digits are not."""

from __future__ import annotations

from dtmf.swallow import FeatureCodeSwallower
from media.rtp import RtpPacket

EVENTS = {"*": 10, "1": 1, "5": 5}


def event(digit: str, timestamp: int, seq: int, end: bool = False) -> bytes:
    payload = bytes([EVENTS[digit], 0x8A if end else 0x0A, 0, 160])
    return RtpPacket(
        version=2,
        padding=False,
        extension=False,
        marker=False,
        payload_type=101,
        sequence=seq,
        timestamp=timestamp,
        ssrc=1,
        csrcs=[],
        payload=payload,
    ).serialize()


def audio(seq: int) -> bytes:
    return RtpPacket(
        version=2,
        padding=False,
        extension=False,
        marker=False,
        payload_type=8,
        sequence=seq,
        timestamp=seq * 160,
        ssrc=1,
        csrcs=[],
        payload=b"\xd5" * 160,
    ).serialize()


def run(packets: list[tuple[bytes, float]], swallower: FeatureCodeSwallower) -> list[bytes]:
    """What reaches the far end, in order."""
    sent: list[bytes] = []
    for data, at in packets:
        forward, release = swallower.filter(data, at)
        sent.extend(release)
        if forward:
            sent.append(data)
    return sent


def test_the_code_is_swallowed_and_audio_passes() -> None:
    swallower = FeatureCodeSwallower("*1", telephone_event_pts=[101])
    packets = [
        (audio(1), 0.00),
        (event("*", 1000, 2), 0.02),
        (event("*", 1000, 3, end=True), 0.04),
        (audio(4), 0.06),
        (event("1", 2000, 5), 0.30),
        (event("1", 2000, 6, end=True), 0.32),
        (event("1", 2000, 7, end=True), 0.34),
        (audio(8), 0.36),
    ]
    sent = run(packets, swallower)
    assert sent == [audio(1), audio(4), audio(8)]


def test_a_star_not_followed_by_the_code_digit_is_released_in_order() -> None:
    swallower = FeatureCodeSwallower("*1", telephone_event_pts=[101])
    star = [event("*", 1000, 2), event("*", 1000, 3, end=True)]
    five = event("5", 2000, 4)
    sent = run([(star[0], 0.0), (star[1], 0.02), (five, 0.3)], swallower)
    assert sent == [*star, five]


def test_a_lone_star_is_released_after_the_timeout() -> None:
    swallower = FeatureCodeSwallower("*1", timeout=2.0, telephone_event_pts=[101])
    star = event("*", 1000, 2)
    assert run([(star, 0.0)], swallower) == []
    assert swallower.due(1.0) == []
    assert swallower.due(2.5) == [star]


def test_other_payload_types_are_never_held() -> None:
    swallower = FeatureCodeSwallower("*1", telephone_event_pts=[96])
    star = event("*", 1000, 2)  # PT 101 is not telephone-event on this call
    assert run([(star, 0.0)], swallower) == [star]
