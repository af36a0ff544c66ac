from __future__ import annotations

import pytest

from dtmf.events import DigitEvent, DtmfError
from dtmf.info import is_dtmf_content_type, parse_info_body


def test_dtmf_relay_with_duration() -> None:
    event = parse_info_body(
        "application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n", leg="b", at=12.5
    )
    assert event == DigitEvent("1", "info", "b", 12.5, 0.16)


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"Signal=*\r\nDuration=250", "*"),
        (b"signal= #\nduration = 100\n", "#"),
        (b"  SIGNAL = d \r\n", "D"),
        (b"Signal=10\r\nDuration=160", "*"),  # RFC 4733 code, as some phones send it
        (b"Signal=11", "#"),
        (b"\r\nSignal=0\r\n\r\n", "0"),
    ],
)
def test_dtmf_relay_variants(body: bytes, digit: str) -> None:
    event = parse_info_body("Application/DTMF-Relay; charset=utf-8", body)
    assert event is not None
    assert event.digit == digit


def test_missing_duration_is_none() -> None:
    event = parse_info_body("application/dtmf-relay", b"Signal=5")
    assert event is not None
    assert event.duration is None


@pytest.mark.parametrize(("body", "digit"), [(b"5", "5"), (b" *\r\n", "*"), (b"b", "B")])
def test_application_dtmf(body: bytes, digit: str) -> None:
    event = parse_info_body("application/dtmf", body)
    assert event is not None
    assert (event.digit, event.method, event.duration) == (digit, "info", None)


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/dtmf-relay", b"Duration=160", "no Signal"),
        ("application/dtmf-relay", b"Signal=E", "not a DTMF digit"),
        ("application/dtmf-relay", b"Signal=12345", "not a DTMF digit"),
        ("application/dtmf-relay", b"Signal=", "not a DTMF digit"),
        ("application/dtmf-relay", b"Signal 1", "without '='"),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=abc", "Duration"),
        ("application/dtmf-relay", b"Signal=\xff", "UTF-8"),
        ("application/dtmf", b"", "empty"),
        ("application/dtmf", b"16", "not a DTMF digit"),
    ],
)
def test_bad_bodies_raise_with_a_reason(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(DtmfError, match=reason):
        parse_info_body(content_type, body)


def test_other_content_types_are_not_dtmf() -> None:
    assert parse_info_body("application/media_control+xml", b"<x/>") is None
    assert not is_dtmf_content_type("text/plain")
    assert is_dtmf_content_type("application/dtmf-relay;x=y")
