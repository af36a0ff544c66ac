"""The on-demand feature code: `*` then the code's digit within a timeout toggles recording.

What a valid code is belongs to the product rules (`callrec.policy.FeatureCode`); this
module only matches one in a call's digit stream.
"""

from __future__ import annotations

from callrec.policy import DEFAULT_FEATURE_CODE, FeatureCode
from dtmf.events import DigitEvent, DtmfError


class FeatureCodeMatcher:
    """Matches the feature code in one call's digit stream (already deduplicated).

    Each leg is matched on its own, so a `*` on one side and the digit on the other do
    not combine. `feed` returns True on the digit that completes the code. A code given
    as text is parsed (InvalidFeatureCode if it is not `*` plus one digit).
    """

    def __init__(
        self, code: FeatureCode | str = DEFAULT_FEATURE_CODE, timeout: float = 2.0
    ) -> None:
        self.code = FeatureCode.parse(code)
        if timeout <= 0:
            raise DtmfError(f"feature code timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._star_at: dict[str, float] = {}

    def feed(self, event: DigitEvent) -> bool:
        star_at = self._star_at.pop(event.leg, None)
        if event.digit == "*":
            self._star_at[event.leg] = event.at
            return False
        if star_at is None or event.digit != self.code.digit:
            return False
        return 0.0 <= event.at - star_at <= self.timeout
