"""Watches one leg of a call for the feature code, whichever way its digits arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from callrec.policy import DEFAULT_FEATURE_CODE, FeatureCode
from dtmf.dedup import DigitDeduplicator
from dtmf.events import DigitEvent
from dtmf.feature_code import FeatureCodeMatcher
from dtmf.inband import InbandDetector
from dtmf.info import parse_info_body
from dtmf.rfc4733 import TelephoneEventDecoder
from media.rtp import MediaError, RtpPacket


class FeatureCodeWatcher:
    """Digits of one leg from RFC 4733, in-band audio and SIP INFO, merged and matched.

    Each `on_*` method returns the digit events that completed the feature code (at most
    one per digit). A digit that arrives both as RFC 4733 and in-band counts once.
    `on_digit`, when set, is told of every key counted (the feature code's too).
    """

    def __init__(
        self,
        leg: str,
        code: FeatureCode | str = DEFAULT_FEATURE_CODE,
        *,
        timeout: float = 2.0,
        telephone_event_pts: Iterable[int] = (),
        sample_rate: int = 8000,
    ) -> None:
        self.leg = leg
        self.matcher = FeatureCodeMatcher(code, timeout)
        self.dedup = DigitDeduplicator()
        self.inband = InbandDetector(sample_rate, leg=leg)
        self.decoders: dict[int, TelephoneEventDecoder] = {}
        self.digits: list[DigitEvent] = []
        self.on_digit: Callable[[DigitEvent], None] | None = None
        self.set_telephone_event_pts(telephone_event_pts)

    def set_telephone_event_pts(self, payload_types: Iterable[int]) -> None:
        """The RFC 4733 payload types this leg negotiated (from its SDP)."""
        wanted = set(payload_types)
        for payload_type in wanted - set(self.decoders):
            self.decoders[payload_type] = TelephoneEventDecoder(payload_type, leg=self.leg)
        for payload_type in set(self.decoders) - wanted:
            del self.decoders[payload_type]

    def on_rtp(self, data: bytes, arrival: float) -> list[DigitEvent]:
        """An RTP packet from this leg; only telephone-event packets are looked at."""
        if len(data) < 12:
            return []
        decoder = self.decoders.get(data[1] & 0x7F)
        if decoder is None:
            return []
        try:
            packet = RtpPacket.parse(data)
        except MediaError:
            return []
        events = decoder.feed(
            packet.payload, packet.timestamp, packet.marker, packet.sequence, arrival
        )
        return self._match(events)

    def on_audio(self, pcm: npt.NDArray[np.int16], start_time: float) -> list[DigitEvent]:
        """Decoded audio of this leg, contiguous, starting at wall-clock `start_time`."""
        if pcm.size == 0:
            return []
        return self._match(self.inband.feed(pcm, start_time))

    def on_info(self, content_type: str, body: bytes, at: float) -> list[DigitEvent]:
        """A SIP INFO body from this leg (raises DtmfError for a bad DTMF body)."""
        event = parse_info_body(content_type, body, leg=self.leg, at=at)
        return self._match([event] if event is not None else [])

    def _match(self, events: list[DigitEvent]) -> list[DigitEvent]:
        matched: list[DigitEvent] = []
        for event in events:
            unique = self.dedup.feed(event)
            if unique is None:
                continue
            self.digits.append(unique)
            if self.on_digit is not None:
                self.on_digit(unique)
            if self.matcher.feed(unique):
                matched.append(unique)
        return matched
