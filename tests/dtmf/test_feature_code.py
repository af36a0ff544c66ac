from __future__ import annotations

import pytest

from callrec.policy import FeatureCode, InvalidFeatureCode
from dtmf.events import DigitEvent, DtmfError
from dtmf.feature_code import FeatureCodeMatcher


def digit(d: str, at: float, leg: str = "a") -> DigitEvent:
    return DigitEvent(d, "rfc4733", leg, at)


def run(matcher: FeatureCodeMatcher, events: list[DigitEvent]) -> list[bool]:
    return [matcher.feed(event) for event in events]


def test_star_one_within_timeout_matches_on_the_digit() -> None:
    assert run(FeatureCodeMatcher(), [digit("*", 1.0), digit("1", 2.5)]) == [False, True]


def test_each_code_matches_again_for_the_second_toggle() -> None:
    events = [digit("*", 1.0), digit("1", 1.5), digit("*", 9.0), digit("1", 9.4)]
    assert run(FeatureCodeMatcher(), events) == [False, True, False, True]


def test_late_digit_does_not_match() -> None:
    assert run(FeatureCodeMatcher(), [digit("*", 1.0), digit("1", 3.01)]) == [False, False]


def test_configurable_code_and_timeout() -> None:
    matcher = FeatureCodeMatcher("*7", timeout=5.0)
    assert run(matcher, [digit("*", 0.0), digit("1", 1.0)]) == [False, False]
    assert run(matcher, [digit("*", 2.0), digit("7", 6.9)]) == [False, True]


def test_other_digit_in_between_breaks_the_code() -> None:
    events = [digit("*", 1.0), digit("2", 1.2), digit("1", 1.4)]
    assert run(FeatureCodeMatcher(), events) == [False, False, False]


def test_repeated_star_restarts_the_code() -> None:
    events = [digit("*", 0.0), digit("*", 1.9), digit("1", 3.5)]
    assert run(FeatureCodeMatcher(), events) == [False, False, True]


def test_digit_alone_does_not_match() -> None:
    assert run(FeatureCodeMatcher(), [digit("1", 0.0), digit("1", 0.5)]) == [False, False]


def test_legs_are_matched_separately() -> None:
    events = [digit("*", 1.0, "a"), digit("1", 1.2, "b"), digit("1", 1.4, "a")]
    assert run(FeatureCodeMatcher(), events) == [False, False, True]


@pytest.mark.parametrize("code", ["1", "*", "**", "*a", "*10", "#1", "1*", "*#", ""])
def test_invalid_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidFeatureCode, match="feature code must be"):
        FeatureCodeMatcher(code)


def test_a_parsed_code_is_matched_on_its_digit() -> None:
    events = [digit("*", 0.0), digit("1", 0.5), digit("*", 1.0), digit("9", 1.5)]
    assert run(FeatureCodeMatcher(FeatureCode("9")), events) == [False, False, False, True]


def test_invalid_timeout_is_refused() -> None:
    with pytest.raises(DtmfError, match="timeout"):
        FeatureCodeMatcher("*1", timeout=0)
