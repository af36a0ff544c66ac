"""Keeps the feature code's RFC 4733 events from reaching the far end (sans-IO).

With `[recording] swallow_feature_code`, the `*` of the code is held back when it
arrives. If the code's digit follows within the timeout, both are dropped: the far end
never sees the code. Otherwise the held `*` packets are released, late but in order,
before whatever came next, so a `*` meant for the far end (an IVR, say) still gets there.
Audio and other packets are never held.
"""

from __future__ import annotations

from collections.abc import Iterable

from callrec.policy import DEFAULT_FEATURE_CODE, FeatureCode
from dtmf.events import DIGITS

STAR = DIGITS.index("*")
HEADER = 12


def _event(data: bytes) -> tuple[int, int] | None:
    """(event code, RTP timestamp) of a telephone-event packet, or None if garbled."""
    offset = HEADER + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    if len(data) < offset + 4:
        return None
    return data[offset], int.from_bytes(data[4:8], "big")


class FeatureCodeSwallower:
    """Decides for each RTP packet of the user's leg whether it goes to the far end."""

    def __init__(
        self,
        code: FeatureCode | str = DEFAULT_FEATURE_CODE,
        *,
        timeout: float = 2.0,
        telephone_event_pts: Iterable[int] = (),
    ) -> None:
        self.digit = DIGITS.index(FeatureCode.parse(code).digit)
        self.timeout = timeout
        self.payload_types = set(telephone_event_pts)
        self.held: list[bytes] = []
        self.held_at = 0.0
        self.held_timestamp: int | None = None
        self.swallowed_timestamps: set[int] = set()
        self.swallowed = 0

    def filter(self, data: bytes, arrival: float) -> tuple[bool, list[bytes]]:
        """(forward `data`?, held packets to send first)."""
        if len(data) < HEADER or (data[1] & 0x7F) not in self.payload_types:
            return True, self.due(arrival)
        event = _event(data)
        if event is None:
            return True, self.due(arrival)
        code, timestamp = event
        if timestamp in self.swallowed_timestamps:
            self.swallowed += 1
            return False, []
        if code == STAR:
            release = [] if timestamp == self.held_timestamp else self._release()
            if not self.held:
                self.held_at = arrival
            self.held_timestamp = timestamp
            self.held.append(data)
            return False, release
        if code == self.digit and self.held and arrival - self.held_at <= self.timeout:
            # The feature code: neither its `*` nor its digit reach the far end.
            self.swallowed_timestamps = {timestamp, self.held_timestamp or 0}
            self.swallowed += len(self.held) + 1
            self.held = []
            self.held_timestamp = None
            return False, []
        return True, self._release()

    def due(self, now: float) -> list[bytes]:
        """Held packets whose wait for the code's digit is over."""
        if self.held and now - self.held_at > self.timeout:
            return self._release()
        return []

    def _release(self) -> list[bytes]:
        released, self.held, self.held_timestamp = self.held, [], None
        return released
