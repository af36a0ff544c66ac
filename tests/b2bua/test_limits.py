"""Tests for b2bua.limits: failure counts and lock-outs on a fake clock."""

from __future__ import annotations

import pytest

from b2bua.limits import AuthLimits, Lockout, Verdict, source_key

T0 = 5_000.0
ATTACKER = "127.0.0.2"
PHONE = "127.0.0.1"


def limits(**options: float) -> AuthLimits:
    settings: dict[str, float] = {"max_failures": 10, "window": 60.0, "lockout": 300.0}
    settings.update(options)
    return AuthLimits(
        max_failures=int(settings["max_failures"]),
        window=settings["window"],
        lockout=settings["lockout"],
        capacity=int(settings.get("capacity", 10_000)),
    )


def fail(
    limiter: AuthLimits, times: int, host: str, user: str | None, start: float
) -> list[Lockout]:
    lockouts: list[Lockout] = []
    for i in range(times):
        lockouts += limiter.failure(host, user, start + i * 0.1).lockouts
    return lockouts


def test_ten_failures_lock_the_source_and_the_user_once() -> None:
    limiter = limits()
    assert fail(limiter, 9, ATTACKER, "201", T0) == []
    assert limiter.check(ATTACKER, "201", T0 + 1) is Verdict.ALLOW
    lockouts = limiter.failure(ATTACKER, "201", T0 + 1).lockouts
    assert [(lock.kind, lock.key, lock.until) for lock in lockouts] == [
        ("source", ATTACKER, T0 + 301),
        ("user", "201", T0 + 301),
    ]
    assert "source 127.0.0.2 after 10 failures in 60 s" in lockouts[0].describe(T0 + 1)
    # Even the right password is not looked at: the check comes first.
    assert limiter.check(ATTACKER, "201", T0 + 2) is Verdict.REFUSE_SOURCE
    assert limiter.check(ATTACKER, None, T0 + 2) is Verdict.REFUSE_SOURCE
    # More failures during the lock-out (requests already in flight) log no new lock-out.
    assert fail(limiter, 20, ATTACKER, "201", T0 + 3) == []


def test_failures_spread_beyond_the_window_never_lock() -> None:
    limiter = limits()
    for i in range(30):
        assert limiter.failure(ATTACKER, "201", T0 + i * 7.0).lockouts == []
    assert limiter.check(ATTACKER, "201", T0 + 300) is Verdict.ALLOW


def test_lockout_ends_after_its_time_and_counting_starts_again() -> None:
    limiter = limits(lockout=120.0)
    assert len(fail(limiter, 10, ATTACKER, None, T0)) == 1
    assert limiter.check(ATTACKER, None, T0 + 119) is Verdict.REFUSE_SOURCE
    assert limiter.check(ATTACKER, None, T0 + 121) is Verdict.ALLOW
    assert fail(limiter, 9, ATTACKER, None, T0 + 121) == []
    assert len(fail(limiter, 1, ATTACKER, None, T0 + 130)) == 1


def test_other_sources_and_users_are_unaffected() -> None:
    limiter = limits()
    fail(limiter, 10, ATTACKER, "201", T0)
    assert limiter.check(PHONE, "202", T0 + 1) is Verdict.ALLOW
    assert limiter.check("127.0.0.3", "202", T0 + 1) is Verdict.ALLOW
    # The user itself is locked for sources it has not logged in from...
    assert limiter.check("127.0.0.3", "201", T0 + 1) is Verdict.REFUSE_USER


def test_a_users_own_phones_keep_working_during_a_user_lockout() -> None:
    limiter = limits()
    limiter.success(PHONE, "201", T0)
    fail(limiter, 10, ATTACKER, "201", T0 + 1)
    assert limiter.locked("user", "201", T0 + 2)
    assert limiter.check(PHONE, "201", T0 + 2) is Verdict.ALLOW
    assert limiter.check("127.0.0.3", "201", T0 + 2) is Verdict.REFUSE_USER
    # Trust lasts trusted_for (an hour by default), not forever.
    assert limiter.check(PHONE, "201", T0 + 3601) is Verdict.ALLOW  # the lock is over too
    fail(limiter, 10, ATTACKER, "201", T0 + 3602)
    assert limiter.check(PHONE, "201", T0 + 3603) is Verdict.REFUSE_USER


def test_unknown_users_are_counted_for_the_source_only() -> None:
    limiter = limits()
    for i in range(10):
        limiter.failure(f"127.0.0.{10 + i}", None, T0 + i)
    assert len(limiter.users.counters) == 0
    assert all(
        limiter.check(f"127.0.0.{10 + i}", None, T0 + 11) is Verdict.ALLOW for i in range(10)
    )


def test_a_source_that_keeps_going_is_dropped() -> None:
    limiter = limits(max_failures=3)
    fail(limiter, 3, ATTACKER, None, T0)
    assert not limiter.should_drop(ATTACKER, T0 + 1)
    for _ in range(3):
        assert limiter.check(ATTACKER, None, T0 + 1) is Verdict.REFUSE_SOURCE
    assert limiter.should_drop(ATTACKER, T0 + 1)
    assert not limiter.should_drop(PHONE, T0 + 1)
    assert not limiter.should_drop(ATTACKER, T0 + 301)  # the lock-out is over


def test_failure_logging_is_bounded_per_source_and_window() -> None:
    limiter = limits(max_failures=5, lockout=1.0)
    logged = [limiter.failure(ATTACKER, None, T0 + i * 0.01).log for i in range(5)]
    assert logged == [True] * 5
    # Failures still counted during the lock-out (requests in flight) are not logged.
    assert [limiter.failure(ATTACKER, None, T0 + 0.5).log for _ in range(50)] == [False] * 50
    # After the lock-out, the next failures are logged again.
    assert limiter.failure(ATTACKER, None, T0 + 2).log


def test_tables_are_bounded() -> None:
    limiter = limits(capacity=100)
    for i in range(1000):
        limiter.failure(f"10.0.{i // 256}.{i % 256}", f"user{i}", T0)
        limiter.success(f"10.1.{i // 256}.{i % 256}", f"user{i}", T0)
    assert len(limiter.sources.counters) == 100
    assert len(limiter.users.counters) == 100
    assert len(limiter._trusted) == 100


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:bbbb::9]", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("Phone.Example", "phone.example"),
    ],
)
def test_source_keys(host: str, key: str) -> None:
    assert source_key(host) == key


def test_ipv6_hosts_in_one_64_share_a_counter() -> None:
    limiter = limits(max_failures=4)
    for i in range(4):
        limiter.failure(f"2001:db8::{i + 1}", None, T0)
    assert limiter.check("2001:db8::ffff", None, T0 + 1) is Verdict.REFUSE_SOURCE
    assert limiter.check("2001:db8:0:1::1", None, T0 + 1) is Verdict.ALLOW


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        AuthLimits(max_failures=0)
    with pytest.raises(ValueError):
        AuthLimits(window=0)
