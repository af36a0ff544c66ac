"""Authentication limits and nonce counts shared by the nodes of one store.

`AuthLimits` (`b2bua.limits`) and `NonceCounts` (`b2bua.digest`) decide in memory,
without awaiting: a burst of guesses cannot pass the check before the first is counted.
`SharedAuth` adds what the other nodes know, through the `AuthLedger` Protocol
(`b2bua.services`; `storage.auth` on PostgreSQL):

- before the check: the lock-outs and trust the ledger holds for this source and user
  are imposed on the in-memory limits (`before_check`);
- after a failure: the failure is counted in the ledger too, in the background; a
  lock-out it starts there is imposed here at once (`count_failure`);
- after a success: the nonce's count is recorded in the ledger; a count some node
  accepted before is a replay, refused like a wrong password (`accept`).

Times in the ledger are wall-clock seconds; the in-memory limits run on the monotonic
clock, so each time is moved from one to the other by the difference of the two clocks
now. A ledger that fails (the store is down) changes nothing: the node decides with what
it holds in memory, and says so in the log at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from b2bua.digest import AuthResult
from b2bua.limits import AuthLimits, source_key
from b2bua.services import AuthLedger

__all__ = ["SharedAuth"]

log = logging.getLogger("callrec.sip")


class SharedAuth:
    """The in-memory `limits` kept in step with a shared `ledger`."""

    def __init__(
        self,
        ledger: AuthLedger,
        limits: AuthLimits,
        *,
        nonce_lifetime: float,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.limits = limits
        self.nonce_lifetime = nonce_lifetime
        self.wall = wall
        self.monotonic = monotonic
        self._logged_at = float("-inf")

    def _to_monotonic(self, wall_time: float) -> float:
        return self.monotonic() + (wall_time - self.wall())

    def _failed(self, what: str, exc: Exception) -> None:
        now = self.monotonic()
        if now - self._logged_at >= 60.0:
            self._logged_at = now
            log.warning("shared SIP auth state: %s failed (%s); deciding on this node", what, exc)

    async def before_check(self, host: str, username: str | None) -> None:
        """Impose the ledger's lock-outs and trust for `host` and `username`."""
        source = source_key(host)
        try:
            state = await self.ledger.lock_state(source, username, self.wall())
        except Exception as exc:
            self._failed("reading lock-outs", exc)
            return
        if state.source_until:
            self.limits.impose("source", source, self._to_monotonic(state.source_until))
        if username is not None:
            if state.user_until:
                self.limits.impose("user", username, self._to_monotonic(state.user_until))
            if state.trusted_until:
                self.limits.trust(username, host, self._to_monotonic(state.trusted_until))

    async def accept(self, result: AuthResult, host: str, username: str) -> AuthResult:
        """`result` (accepted here) as the ledger sees it: refused if another node
        accepted its nonce count already."""
        if result.nonce is None:
            return result
        now = self.wall()
        try:
            fresh = await self.ledger.accept_nonce(
                result.nonce,
                result.issued,
                result.nc,
                now - self.nonce_lifetime,
                username=username,
                source=source_key(host),
                trusted_until=now + self.limits.trusted_for,
            )
        except Exception as exc:
            self._failed("recording a nonce count", exc)
            return result
        if fresh:
            return result
        return AuthResult(
            False,
            result.username,
            False,
            f"nonce count {result.nc:08x} replayed (accepted before on another node)",
            failed=True,
        )

    async def count_failure(self, host: str, username: str | None) -> None:
        """Count a failure in the ledger; impose the lock-outs it starts."""
        limits = self.limits
        try:
            started = await self.ledger.count_failure(
                source_key(host),
                username,
                self.wall(),
                window=limits.window,
                max_failures=limits.max_failures,
                lockout=limits.lockout,
            )
        except Exception as exc:
            self._failed("counting a failure", exc)
            return
        for kind, key, until in started:
            if not limits.locked(kind, key, self.monotonic()):
                log.warning(
                    "SIP auth lock-out: %s %s after %d failures in %g s on the nodes",
                    kind,
                    key,
                    limits.max_failures,
                    limits.window,
                )
            limits.impose(kind, key, self._to_monotonic(until))
