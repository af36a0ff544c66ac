"""Keys for a far end that did not negotiate RFC 4733 (telephone-event interworking).

When a phone offered telephone-event and the far end's answer had none, callrec keeps
telephone-event in its answer to the phone (`b2bua.sdp.keep_telephone_event`), takes the
phone's events for the feature code, and forwards none of them (the far end did not ask
for them). `DigitRelay` decides which of the phone's keys the far end should still get,
by `[media] dtmf_interworking` in-band tones or SIP INFO: every key but the feature
code's. The code's `*` is held until the next key shows whether it began the code (then
both are dropped) or was a `*` of its own (then it goes, before that key), or until the
timeout. `tone` makes the in-band audio of a key. Sans-IO: times come from the caller.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from callrec.policy import DEFAULT_FEATURE_CODE, FeatureCode
from dtmf.events import DigitEvent
from dtmf.inband import COLUMN_FREQUENCIES, KEYPAD, ROW_FREQUENCIES, dbm0_to_peak

__all__ = ["DigitRelay", "tone"]

# An in-band key: 100 ms of both tones at -10 dBm0 each (Q.24 asks >= 40 ms, -20 dBm0),
# then 60 ms of silence so that keys in a row stay apart.
TONE_MS: Final = 100
GAP_MS: Final = 60
TONE_LEVEL_DBM0: Final = -10.0


def tone(digit: str, sample_rate: int = 8000) -> npt.NDArray[np.int16]:
    """The DTMF tone of `digit` (then a short silence), mono int16 at `sample_rate`."""
    found = [(r, keys.index(digit)) for r, keys in enumerate(KEYPAD) if digit in keys]
    if len(digit) != 1 or not found:
        raise ValueError(f"not a DTMF key: {digit!r}")
    row, column = found[0]
    n = np.arange(round(TONE_MS * sample_rate / 1000))
    peak = dbm0_to_peak(TONE_LEVEL_DBM0)
    signal = peak * (
        np.sin(2 * np.pi * ROW_FREQUENCIES[row] * n / sample_rate)
        + np.sin(2 * np.pi * COLUMN_FREQUENCIES[column] * n / sample_rate)
    )
    gap = np.zeros(round(GAP_MS * sample_rate / 1000))
    return np.round(np.concatenate([signal, gap])).astype(np.int16)


class DigitRelay:
    """Which of the phone's keys go on to the far end: all but the feature code."""

    def __init__(self, code: FeatureCode | str = DEFAULT_FEATURE_CODE, timeout: float = 2.0):
        parsed = FeatureCode.parse(code)
        self.digit = parsed.digit
        self.timeout = timeout
        self._held_at: float | None = None  # when a `*` was held

    def feed(self, event: DigitEvent) -> list[str]:
        """A key the phone pressed; returns the keys to send now, in order."""
        out = self.due(event.at)
        if self._held_at is not None:
            self._held_at = None
            if event.digit == self.digit:
                return out  # the feature code: neither key goes on
            out.append("*")
        if event.digit == "*":
            self._held_at = event.at
            return out
        out.append(event.digit)
        return out

    def due(self, now: float) -> list[str]:
        """The held `*`, once no code digit came within the timeout."""
        if self._held_at is not None and now - self._held_at > self.timeout:
            self._held_at = None
            return ["*"]
        return []
