"""Digit events shared by every DTMF detector, and the dtmf layer's one exception type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

DtmfMethod = Literal["rfc4733", "inband", "info"]

# RFC 4733 §3.2 event codes 0-15, in the order of the code.
DIGITS: Final = "0123456789*#ABCD"


class DtmfError(Exception):
    """A DTMF input (INFO body, feature code setting) that cannot be understood."""


@dataclass(frozen=True)
class DigitEvent:
    """One key press, however it arrived.

    `at` is the time the digit started, on the clock the caller feeds in (wall clock for
    the relay tap). `duration` is in seconds when the detector knows it at emission time,
    else None: detectors emit as soon as they are sure, before the key is released.
    """

    digit: str
    method: DtmfMethod
    leg: str
    at: float
    duration: float | None = None
