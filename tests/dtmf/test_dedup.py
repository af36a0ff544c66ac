from __future__ import annotations

from dtmf.dedup import DigitDeduplicator
from dtmf.events import DigitEvent, DtmfMethod
from dtmf.feature_code import FeatureCodeMatcher


def event(d: str, method: DtmfMethod, at: float, leg: str = "a") -> DigitEvent:
    return DigitEvent(d, method, leg, at)


def passed(dedup: DigitDeduplicator, events: list[DigitEvent]) -> list[DigitEvent]:
    return [e for e in (dedup.feed(ev) for ev in events) if e is not None]


def test_same_digit_by_rfc4733_and_inband_counts_once() -> None:
    first = event("5", "rfc4733", 10.00)
    out = passed(DigitDeduplicator(), [first, event("5", "inband", 10.04)])
    assert out == [first]


def test_inband_first_then_rfc4733_counts_once() -> None:
    out = passed(DigitDeduplicator(), [event("5", "inband", 10.0), event("5", "rfc4733", 9.9)])
    assert [e.method for e in out] == ["inband"]


def test_copies_outside_the_window_both_pass() -> None:
    out = passed(DigitDeduplicator(0.25), [event("5", "rfc4733", 1.0), event("5", "inband", 1.3)])
    assert len(out) == 2


def test_same_method_twice_is_two_presses() -> None:
    out = passed(DigitDeduplicator(), [event("1", "inband", 1.0), event("1", "inband", 1.08)])
    assert len(out) == 2


def test_two_presses_each_sent_both_ways_count_twice() -> None:
    events = [
        event("1", "rfc4733", 1.00),
        event("1", "inband", 1.02),
        event("1", "rfc4733", 1.10),
        event("1", "inband", 1.12),
    ]
    assert [e.at for e in passed(DigitDeduplicator(), events)] == [1.00, 1.10]


def test_other_leg_or_digit_is_not_a_copy() -> None:
    events = [
        event("1", "rfc4733", 1.0, "a"),
        event("1", "inband", 1.0, "b"),
        event("2", "inband", 1.0, "a"),
    ]
    assert len(passed(DigitDeduplicator(), events)) == 3


def test_three_methods_count_once() -> None:
    events = [event("*", "info", 5.0), event("*", "rfc4733", 5.01), event("*", "inband", 5.05)]
    assert len(passed(DigitDeduplicator(), events)) == 1


def test_dedup_then_feature_code_toggles_once_per_code() -> None:
    dedup, matcher = DigitDeduplicator(), FeatureCodeMatcher("*1")
    events = [
        event("*", "rfc4733", 1.00),
        event("*", "inband", 1.03),
        event("1", "rfc4733", 1.40),
        event("1", "inband", 1.43),
    ]
    toggles = [matcher.feed(e) for e in passed(dedup, events)]
    assert toggles == [False, True]
