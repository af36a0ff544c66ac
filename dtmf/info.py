"""Digits carried in SIP INFO bodies: `application/dtmf-relay` and `application/dtmf`."""

from __future__ import annotations

from typing import Final

from dtmf.events import DIGITS, DigitEvent, DtmfError

DTMF_RELAY: Final = "application/dtmf-relay"
DTMF: Final = "application/dtmf"


def _digit_from_text(text: str) -> str:
    value = text.strip().upper()
    if len(value) == 1 and value in DIGITS:
        return value
    # Some phones send the RFC 4733 event number instead of the character (10 = *, 11 = #).
    if value.isdigit() and 10 <= int(value) <= 15:
        return DIGITS[int(value)]
    raise DtmfError(f"not a DTMF digit: {text.strip()!r} (expected 0-9, *, #, A-D)")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_dtmf_content_type(content_type: str) -> bool:
    """True for the two INFO body types that carry a digit."""
    return _media_type(content_type) in (DTMF_RELAY, DTMF)


def parse_info_body(
    content_type: str, body: bytes, *, leg: str = "a", at: float = 0.0
) -> DigitEvent | None:
    """The digit in a SIP INFO body, or None when the body type is not a DTMF one.

    `application/dtmf-relay` is `Signal=<digit>` plus an optional `Duration=<ms>` (one
    key per line, keys and the digit letters in any case, spaces allowed). Raises
    DtmfError with the reason when a DTMF body cannot be read.
    """
    media_type = _media_type(content_type)
    if media_type not in (DTMF_RELAY, DTMF):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DtmfError(f"{media_type} body is not UTF-8 text") from exc
    if media_type == DTMF:
        if not text.strip():
            raise DtmfError("application/dtmf body is empty")
        return DigitEvent(_digit_from_text(text), "info", leg, at)

    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise DtmfError(f"dtmf-relay line without '=': {line.strip()!r}")
        fields[key.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise DtmfError("dtmf-relay body has no Signal= line")
    digit = _digit_from_text(fields["signal"])
    duration: float | None = None
    if "duration" in fields:
        raw = fields["duration"]
        if not raw.isdigit():
            raise DtmfError(f"dtmf-relay Duration is not a number of milliseconds: {raw!r}")
        duration = int(raw) / 1000.0
    return DigitEvent(digit, "info", leg, at, duration)
