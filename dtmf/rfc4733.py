"""RFC 4733 telephone-event decoding: one DigitEvent per key press, at its first packet."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from dtmf.events import DIGITS, DigitEvent

# RFC 4733 §2.3: event (8 bits), E R volume (8 bits), duration (16 bits).
_PAYLOAD_SIZE: Final = 4
# How many past event timestamps to remember to recognise late or repeated packets.
_REMEMBERED_EVENTS: Final = 32


@dataclass
class _CurrentEvent:
    timestamp: int
    code: int
    duration: int
    ended: bool


class TelephoneEventDecoder:
    """Turns the telephone-event packets of one leg into digits (sans-IO).

    An event is identified by its RTP timestamp (the event's start), so the end packet
    sent three times, lost first packets (marker included) or reordered packets still
    give one digit. The digit is emitted on the first packet seen, so the feature code
    acts without waiting for the key to be released. Packets of another payload type
    (see `feed_packet`), events above 15 (flash, tones) and garbled payloads are counted
    in `ignored` and `garbled`, never raised.
    """

    def __init__(self, payload_type: int, *, leg: str = "a", clock_rate: int = 8000) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0-127, got {payload_type}")
        self.payload_type = payload_type
        self.leg = leg
        self.clock_rate = clock_rate
        self.garbled = 0
        self.ignored = 0
        self._seen: deque[int] = deque(maxlen=_REMEMBERED_EVENTS)
        self._current: _CurrentEvent | None = None

    def feed_packet(
        self,
        payload_type: int,
        payload: bytes,
        timestamp: int,
        marker: bool,
        sequence: int,
        arrival: float,
    ) -> list[DigitEvent]:
        """Like `feed`, for any RTP packet of the leg: other payload types are skipped."""
        if payload_type != self.payload_type:
            return []
        return self.feed(payload, timestamp, marker, sequence, arrival)

    def feed(
        self, payload: bytes, timestamp: int, marker: bool, sequence: int, arrival: float
    ) -> list[DigitEvent]:
        """Decode one telephone-event payload received at `arrival` (seconds)."""
        if len(payload) < _PAYLOAD_SIZE:
            self.garbled += 1
            return []
        code = payload[0]
        ended = bool(payload[1] & 0x80)
        duration = int.from_bytes(payload[2:4], "big")
        current = self._current
        if current is not None and timestamp == current.timestamp:
            current.duration = max(current.duration, duration)
            current.ended = current.ended or ended
            return []
        if timestamp in self._seen:
            return []  # a late packet of an older event
        if code >= len(DIGITS):
            self.ignored += 1
            return []
        if (
            current is not None
            and not current.ended
            and code == current.code
            and timestamp == (current.timestamp + current.duration) & 0xFFFFFFFF
        ):
            # RFC 4733 §2.5.2.1: a long event continues in a new segment whose
            # timestamp is where the previous one ended; still the same key press.
            self._remember(timestamp, code, duration, ended)
            return []
        self._remember(timestamp, code, duration, ended)
        started = arrival - duration / self.clock_rate
        known = duration / self.clock_rate if ended else None
        return [DigitEvent(DIGITS[code], "rfc4733", self.leg, started, known)]

    def _remember(self, timestamp: int, code: int, duration: int, ended: bool) -> None:
        self._seen.append(timestamp)
        self._current = _CurrentEvent(timestamp, code, duration, ended)
