"""The on-demand feature code: `*` then one digit within a timeout toggles recording."""

from __future__ import annotations

from dtmf.events import DigitEvent, DtmfError


def validate_feature_code(code: str) -> str:
    """Return the code if it is `*` plus one digit 0-9; raise DtmfError otherwise."""
    if len(code) != 2 or code[0] != "*" or code[1] not in "0123456789":
        raise DtmfError(f"feature code must be '*' followed by one digit 0-9, got {code!r}")
    return code


class FeatureCodeMatcher:
    """Matches the feature code in one call's digit stream (already deduplicated).

    Each leg is matched on its own, so a `*` on one side and the digit on the other do
    not combine. `feed` returns True on the digit that completes the code.
    """

    def __init__(self, code: str = "*1", timeout: float = 2.0) -> None:
        self.code = validate_feature_code(code)
        if timeout <= 0:
            raise DtmfError(f"feature code timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._star_at: dict[str, float] = {}

    def feed(self, event: DigitEvent) -> bool:
        star_at = self._star_at.pop(event.leg, None)
        if event.digit == "*":
            self._star_at[event.leg] = event.at
            return False
        if star_at is None or event.digit != self.code[1]:
            return False
        return 0.0 <= event.at - star_at <= self.timeout
