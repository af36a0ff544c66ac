"""Abuse limits on SIP authentication (password guessing), sans-IO.

`AuthLimits` owns the failure counts and lock-outs; the server asks it before checking
credentials and tells it the outcome after. It takes ``now`` (any monotonic clock, in
seconds) and never logs, sends or sleeps: it returns what happened, and the server
decides how to answer and what to log.

The model:

* A failure is credentials that were presented and refused (`AuthResult.failed`: wrong
  password, unknown user, a foreign or replayed nonce). A request without credentials
  or with a stale nonce is not one.
* Failures are counted per source and per user over a sliding ``window``. The source is
  the IP address; IPv6 addresses count per /64, since one host usually holds a whole /64.
  Users are counted only when they exist, so made-up names cannot fill the table.
* ``max_failures`` failures within ``window`` lock that source, or that user, out for
  ``lockout`` seconds. `failure` returns a `Lockout` once, when the lock starts: that is
  the one log line per lock-out.
* While a source is locked its requests are refused (403) without looking at their
  credentials, so even the right password is refused. After ``max_failures`` refusals in
  one lock the source is not answered any more (`should_drop`): a client that keeps
  going gets silence.
* While a user is locked, requests for that user are refused from every source except
  those the user authenticated from within ``trusted_for`` seconds before (its own
  phones): a guesser elsewhere cannot lock the real phones out. Those sources still have
  their own source limit.
* The tables are bounded (``capacity`` keys each, least recently used first out), so a
  flood of addresses costs memory up to that bound and no more.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum

DEFAULT_MAX_FAILURES = 10
DEFAULT_WINDOW = 60.0
DEFAULT_LOCKOUT = 300.0
DEFAULT_CAPACITY = 10_000
DEFAULT_TRUSTED_FOR = 3600.0


class Verdict(Enum):
    """What to do with a request before its credentials are checked."""

    ALLOW = "allow"
    REFUSE_SOURCE = "refuse-source"  # the source is locked out
    REFUSE_USER = "refuse-user"  # the user is locked out (for this source)


@dataclass(frozen=True)
class Lockout:
    """A source or user that has just been locked out: log it once."""

    kind: str  # "source" or "user"
    key: str
    failures: int
    window: float
    until: float

    def describe(self, now: float) -> str:
        return (
            f"SIP auth lock-out: {self.kind} {self.key} after {self.failures} failures in "
            f"{self.window:g} s; its requests are refused for {self.until - now:g} s"
        )


@dataclass(frozen=True)
class FailureOutcome:
    """What `AuthLimits.failure` found: whether to log this failure, and new lock-outs.

    ``log`` is false while the source is locked out and once it has had ``max_failures``
    failures in the window, so a guesser cannot fill the log.
    """

    log: bool
    lockouts: list[Lockout] = field(default_factory=list)


@dataclass
class _Counter:
    failures: deque[float]
    locked_until: float = float("-inf")
    refusals: int = 0


def source_key(host: str) -> str:
    """The key a source is counted under: the IP, or the /64 of an IPv6 address."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Table:
    """Failure counters by key, bounded, least recently touched evicted first."""

    def __init__(self, capacity: int, max_failures: int) -> None:
        self.capacity = capacity
        self.max_failures = max_failures
        self.counters: OrderedDict[str, _Counter] = OrderedDict()

    def get(self, key: str) -> _Counter | None:
        return self.counters.get(key)

    def touch(self, key: str) -> _Counter:
        counter = self.counters.get(key)
        if counter is None:
            counter = _Counter(deque(maxlen=self.max_failures))
            self.counters[key] = counter
            while len(self.counters) > self.capacity:
                self.counters.popitem(last=False)
        else:
            self.counters.move_to_end(key)
        return counter


class AuthLimits:
    """Failure counts and lock-outs per source and per user (see the module docstring)."""

    def __init__(
        self,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_WINDOW,
        lockout: float = DEFAULT_LOCKOUT,
        capacity: int = DEFAULT_CAPACITY,
        trusted_for: float = DEFAULT_TRUSTED_FOR,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout <= 0 or capacity < 1:
            raise ValueError("limits need max_failures >= 1, a positive window and lockout")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.trusted_for = trusted_for
        self.sources = _Table(capacity, max_failures)
        self.users = _Table(capacity, max_failures)
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._capacity = capacity

    # -- before the credentials are checked --------------------------------------------

    def check(self, host: str, username: str | None, now: float) -> Verdict:
        """May a request from ``host`` (for ``username``, if known yet) be authenticated?"""
        source = source_key(host)
        counter = self.sources.get(source)
        if counter is not None and counter.locked_until > now:
            counter.refusals += 1
            return Verdict.REFUSE_SOURCE
        if username is not None and not self._is_trusted(username, source, now):
            user_counter = self.users.get(username)
            if user_counter is not None and user_counter.locked_until > now:
                return Verdict.REFUSE_USER
        return Verdict.ALLOW

    def should_drop(self, host: str, now: float) -> bool:
        """True when a locked source has had ``max_failures`` refusals: stop answering it."""
        counter = self.sources.get(source_key(host))
        return (
            counter is not None
            and counter.locked_until > now
            and counter.refusals >= self.max_failures
        )

    # -- after ---------------------------------------------------------------------------

    def failure(self, host: str, username: str | None, now: float) -> FailureOutcome:
        """Count a failure from ``host`` for ``username`` (None: unknown or no user)."""
        source = source_key(host)
        lockouts: list[Lockout] = []
        source_counter = self.sources.touch(source)
        log = source_counter.locked_until <= now and (
            _recent(source_counter.failures, now - self.window) < self.max_failures
        )
        lockout = self._count(source_counter, "source", source, now)
        if lockout is not None:
            lockouts.append(lockout)
        if username is not None:
            lockout = self._count(self.users.touch(username), "user", username, now)
            if lockout is not None:
                lockouts.append(lockout)
        return FailureOutcome(log, lockouts)

    def success(self, host: str, username: str, now: float) -> None:
        """``username`` authenticated from ``host``: trust that pair for ``trusted_for``."""
        pair = (username, source_key(host))
        self._trusted[pair] = now + self.trusted_for
        self._trusted.move_to_end(pair)
        while len(self._trusted) > self._capacity:
            self._trusted.popitem(last=False)

    # -- from other nodes (b2bua.services.AuthLedger) -----------------------------------

    def impose(self, kind: str, key: str, until: float) -> None:
        """Lock a source (by `source_key`) or a user until ``until``, as another node
        decided; no `Lockout` is returned (the node that decided logged it)."""
        table = self.sources if kind == "source" else self.users
        counter = table.touch(key)
        if until > counter.locked_until:
            counter.failures.clear()
            counter.locked_until = until
            counter.refusals = 0

    def trust(self, username: str, host: str, until: float) -> None:
        """``username`` authenticated from ``host`` on another node: trusted until
        ``until`` (if that is later than what this node knows)."""
        pair = (username, source_key(host))
        if until > self._trusted.get(pair, float("-inf")):
            self._trusted[pair] = until
            self._trusted.move_to_end(pair)
            while len(self._trusted) > self._capacity:
                self._trusted.popitem(last=False)

    def locked(self, kind: str, key: str, now: float) -> bool:
        """Whether a source (by `source_key`) or a user is locked out at ``now``."""
        table = self.sources if kind == "source" else self.users
        counter = table.get(key)
        return counter is not None and counter.locked_until > now

    # -- internals -----------------------------------------------------------------------

    def _count(self, counter: _Counter, kind: str, key: str, now: float) -> Lockout | None:
        if counter.locked_until > now:
            return None  # already locked: this failure changes nothing
        counter.failures.append(now)
        if _recent(counter.failures, now - self.window) < self.max_failures:
            return None
        counter.failures.clear()  # a lock-out uses its failures up; afterwards count anew
        counter.locked_until = now + self.lockout
        counter.refusals = 0
        return Lockout(kind, key, self.max_failures, self.window, counter.locked_until)

    def _is_trusted(self, username: str, source: str, now: float) -> bool:
        until = self._trusted.get((username, source))
        return until is not None and until > now


def _recent(failures: deque[float], since: float) -> int:
    """How many failure times are after ``since`` (the deque is in time order)."""
    count = 0
    for stamp in reversed(failures):
        if stamp <= since:
            break
        count += 1
    return count
