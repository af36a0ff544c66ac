"""SIP authentication state shared by the nodes of one store (migration 11).

On one node (SQLite) the SIP side keeps all of this in memory (`b2bua.digest`,
`b2bua.limits`). Nodes behind a dispatcher share it here, so that a nonce issued by one
node is accepted by another and a guesser cannot spread guesses over the nodes:

- the digest nonces' HMAC secret (the server setting `sip_nonce_secret`, made once by the
  first node that asks), so every node recognises every node's nonces;
- `nonce_counts`: the highest `nc` accepted per nonce, over all nodes (replay);
  rows of nonces past their lifetime are pruned as new ones are written;
- `auth_failures` and `auth_locks`: failures per source and per user within the window
  and the lock-outs they led to;
- `auth_trust`: the sources a user authenticated from (a locked user's own phones stay
  allowed, as `b2bua.limits` describes).

Times are wall-clock unix seconds, since the nodes share no monotonic clock. This module
decides nothing about SIP: it counts and answers; `b2bua.server` applies the answers to
its in-memory limits through the `b2bua.services.AuthLedger` Protocol.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from storage.connection import Database, Session

__all__ = ["NONCE_SECRET_SETTING", "SharedAuth", "SharedLocks"]

NONCE_SECRET_SETTING = "sip_nonce_secret"


@dataclass(frozen=True)
class SharedLocks:
    """Until when (unix seconds; 0: not) a source and a user are locked out, and until
    when that user trusts that source."""

    source_until: float = 0.0
    user_until: float = 0.0
    trusted_until: float = 0.0


class SharedAuth:
    """The shared SIP authentication state (see the module docstring)."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def nonce_secret(self) -> bytes:
        """The nodes' common nonce secret (32 bytes), made by the first to ask."""
        async with self.database.transaction() as session:
            await session.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (NONCE_SECRET_SETTING, secrets.token_hex(32)),
            )
            row = await session.one(
                "SELECT value FROM settings WHERE key = ?", (NONCE_SECRET_SETTING,)
            )
        assert row is not None
        return bytes.fromhex(str(row["value"]))

    async def accept_nonce(
        self,
        nonce: str,
        issued: float,
        nc: int,
        expires_before: float,
        *,
        username: str,
        source: str,
        trusted_until: float,
    ) -> bool:
        """Record a successful authentication: `nc` for `nonce` (False, and nothing
        recorded, if some node already accepted that count or a higher one: a replay),
        and `username` trusting `source` until `trusted_until`. Nonces issued before
        `expires_before` have expired and are pruned."""
        async with self.database.transaction() as session:
            await session.execute("DELETE FROM nonce_counts WHERE issued_at < ?", (expires_before,))
            row = await session.one("SELECT nc FROM nonce_counts WHERE nonce = ?", (nonce,))
            if row is not None and int(row["nc"]) >= nc:
                return False
            await session.execute(
                "INSERT INTO nonce_counts (nonce, issued_at, nc) VALUES (?, ?, ?)"
                " ON CONFLICT (nonce) DO UPDATE SET nc = excluded.nc",
                (nonce, issued, nc),
            )
            await session.execute(
                "INSERT INTO auth_trust (username, source, trusted_until) VALUES (?, ?, ?)"
                " ON CONFLICT (username, source) DO UPDATE"
                " SET trusted_until = excluded.trusted_until",
                (username, source, trusted_until),
            )
        return True

    async def lock_state(self, source: str, username: str | None, now: float) -> SharedLocks:
        """The lock-outs in force at `now` for `source` and `username`, and the trust."""
        async with self.database.read() as session:
            source_until = await _locked_until(session, "source", source, now)
            if username is None:
                return SharedLocks(source_until)
            user_until = await _locked_until(session, "user", username, now)
            row = await session.one(
                "SELECT trusted_until FROM auth_trust WHERE username = ? AND source = ?",
                (username, source),
            )
        trusted = float(row["trusted_until"]) if row is not None else 0.0
        return SharedLocks(source_until, user_until, trusted if trusted > now else 0.0)

    async def count_failure(
        self,
        source: str,
        username: str | None,
        now: float,
        *,
        window: float,
        max_failures: int,
        lockout: float,
    ) -> list[tuple[str, str, float]]:
        """Count a failed authentication from `source` (for `username`, None when no
        such user) on any node; returns the lock-outs it starts, as (kind, key, until):
        `max_failures` within `window` seconds lock the source or user out for `lockout`
        seconds, and use those failures up."""
        started: list[tuple[str, str, float]] = []
        keys = [("source", source)] + ([("user", username)] if username is not None else [])
        async with self.database.transaction() as session:
            await session.execute("DELETE FROM auth_failures WHERE at <= ?", (now - window,))
            await session.execute("DELETE FROM auth_locks WHERE locked_until <= ?", (now,))
            await session.execute("DELETE FROM auth_trust WHERE trusted_until <= ?", (now,))
            for kind, key in keys:
                if await _locked_until(session, kind, key, now):
                    continue  # already locked: this failure changes nothing
                await session.execute(
                    "INSERT INTO auth_failures (kind, key, at) VALUES (?, ?, ?)", (kind, key, now)
                )
                row = await session.one(
                    "SELECT COUNT(*) AS n FROM auth_failures WHERE kind = ? AND key = ?",
                    (kind, key),
                )
                if row is None or int(row["n"]) < max_failures:
                    continue
                until = now + lockout
                await session.execute(
                    "DELETE FROM auth_failures WHERE kind = ? AND key = ?", (kind, key)
                )
                await session.execute(
                    "INSERT INTO auth_locks (kind, key, locked_until) VALUES (?, ?, ?)"
                    " ON CONFLICT (kind, key) DO UPDATE SET locked_until = excluded.locked_until",
                    (kind, key, until),
                )
                started.append((kind, key, until))
        return started


async def _locked_until(session: Session, kind: str, key: str, now: float) -> float:
    row = await session.one(
        "SELECT locked_until FROM auth_locks WHERE kind = ? AND key = ?", (kind, key)
    )
    until = float(row["locked_until"]) if row is not None else 0.0
    return until if until > now else 0.0
