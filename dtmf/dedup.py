"""Counts a digit once when it arrives both as RFC 4733 events and as in-band tones."""

from __future__ import annotations

from dataclasses import dataclass, field

from dtmf.events import DigitEvent, DtmfMethod


@dataclass
class _Passed:
    event: DigitEvent
    methods: set[DtmfMethod] = field(default_factory=set)


class DigitDeduplicator:
    """Passes the first report of a key press and drops its copies by other methods.

    A copy is the same digit on the same leg, by a method not yet seen for that press,
    starting within `window` seconds of it. The same digit twice by the same method is
    two presses (a user dialling `11`), so both pass. Event times of all methods must be
    on the same clock.
    """

    def __init__(self, window: float = 0.25) -> None:
        self.window = window
        self._recent: list[_Passed] = []
        self._latest_at = float("-inf")

    def feed(self, event: DigitEvent) -> DigitEvent | None:
        self._latest_at = max(self._latest_at, event.at)
        # Detectors report with different delays, so keep entries for two windows.
        horizon = self._latest_at - 2 * self.window
        self._recent = [p for p in self._recent if p.event.at >= horizon]
        for passed in self._recent:
            if (
                passed.event.leg == event.leg
                and passed.event.digit == event.digit
                and event.method not in passed.methods
                and abs(passed.event.at - event.at) <= self.window
            ):
                passed.methods.add(event.method)
                return None
        self._recent.append(_Passed(event, {event.method}))
        return event
