"""SIP authentication state shared by the nodes of one store (storage.auth), on both
backends: one nonce secret, nonce counts that refuse a replay from any node, failures
that add up to one lock-out, and trust."""

from __future__ import annotations

from storage.database import Store


async def _fail(
    store: Store, source: str, user: str | None, now: float
) -> list[tuple[str, str, float]]:
    """One failure, with 3 failures in 60 s locking out for 300 s."""
    return await store.count_failure(source, user, now, window=60.0, max_failures=3, lockout=300.0)


async def test_one_nonce_secret_for_every_node(store: Store) -> None:
    secret = await store.nonce_secret()
    assert len(secret) == 32
    assert await store.nonce_secret() == secret


async def test_nonce_counts_refuse_replays_and_expire(store: Store) -> None:
    async def accept(nonce: str, issued: float, nc: int, expires_before: float) -> bool:
        return await store.accept_nonce(
            nonce,
            issued,
            nc,
            expires_before,
            username="100@callrec",
            source="127.0.0.1",
            trusted_until=4600.0,
        )

    assert await accept("n1", 1000.0, 1, 940.0)
    assert await accept("n1", 1000.0, 2, 940.0)
    assert not await accept("n1", 1000.0, 2, 940.0), "the same count again"
    assert not await accept("n1", 1000.0, 1, 940.0), "a lower count"
    assert await accept("n2", 1001.0, 1, 941.0)
    # Past the lifetime, a nonce's row is pruned (it is refused as stale anyway).
    assert await accept("n3", 1100.0, 1, 1050.0)
    assert await accept("n1", 1000.0, 1, 1050.0), "n1's row was pruned"
    state = await store.lock_state("127.0.0.1", "100@callrec", 1000.0)
    assert state.trusted_until == 4600.0 and state.user_until == 0.0


async def test_failures_on_any_node_add_up_to_one_lockout(store: Store) -> None:
    source, user = "192.0.2.7", "100@callrec"
    assert await _fail(store, source, user, 1000.0) == []
    assert await _fail(store, source, None, 1001.0) == []
    started = await _fail(store, source, user, 1002.0)
    assert started == [("source", source, 1302.0)], "3 from the source; 2 for the user"
    state = await store.lock_state(source, user, 1003.0)
    assert state.source_until == 1302.0 and state.user_until == 0.0
    # While locked, failures change nothing for the source; the user's third counts.
    assert await _fail(store, source, user, 1004.0) == [("user", user, 1304.0)]
    # Failures older than the window do not count; a lock ends.
    assert (await store.lock_state(source, user, 1400.0)).source_until == 0.0
    assert await _fail(store, "198.51.100.1", None, 2000.0) == []
    assert await _fail(store, "198.51.100.1", None, 2070.0) == []
    assert await _fail(store, "198.51.100.1", None, 2071.0) == []
