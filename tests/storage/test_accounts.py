"""The one password hasher (argon2 and SIP HA1), admins and API tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from storage.accounts import ha1, ha1_pair, token_digest
from storage.database import Store
from storage.errors import Conflict, InvalidValue, NotFound
from tests.storage.orgs import ORG


def test_ha1_known_value() -> None:
    # RFC 2617 §3.5 example user "Mufasa", realm "testrealm@host.com", password "Circle Of Life"
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )


def test_ha1_pair_and_unknown_algorithm() -> None:
    pair = ha1_pair("alice", "callrec", "pw")
    assert (pair.md5, pair.sha256) == (
        ha1("alice", "callrec", "pw", "MD5"),
        ha1("alice", "callrec", "pw", "SHA-256"),
    )
    with pytest.raises(InvalidValue) as refused:
        ha1("alice", "callrec", "pw", "SHA-512-256")
    assert refused.value.field == "algorithm"


async def test_admins_are_argon2_hashed_verified_and_removed(store: Store) -> None:
    admin = await store.add_admin(ORG, "root", "correct horse", email="root@example.org")
    assert (admin.name, admin.email) == ("root", "root@example.org")
    assert await store.verify_admin("root", "correct horse") == admin
    assert await store.verify_admin("root", "correct horsE") is None
    assert await store.verify_admin("nobody", "correct horse") is None
    assert await store.get_admin("root") == admin and await store.list_admins(ORG) == [admin]
    with pytest.raises(Conflict) as duplicate:
        await store.add_admin(ORG, "root", "another pass")
    assert duplicate.value.field == "name"
    for call, field in (
        (store.add_admin(ORG, "no spaces", "long enough"), "name"),
        (store.add_admin(ORG, "eve", "short"), "password"),
        (store.add_admin(ORG, "eve", "long enough", email="nope"), "email"),
    ):
        with pytest.raises(InvalidValue) as refused:
            await call
        assert refused.value.field == field
    await store.set_admin_password("root", "battery staple")
    assert await store.verify_admin("root", "battery staple") == admin
    await store.remove_admin("root")
    assert await store.get_admin("root") is None
    for missing in (store.remove_admin("root"), store.set_admin_password("root", "long enough")):
        with pytest.raises(NotFound):
            await missing


async def test_one_hasher_for_admins_and_users_and_weak_hashes_are_upgraded(
    store_location: str | Path,
) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    path = store_location
    store = await Store.open(path, hasher=cheap)
    await store.add_admin(ORG, "root", "correct horse")
    await store.add_user(ORG, "101", "Alice")
    await store.set_portal_password(ORG, "101", "alice-pass-1")
    async with store.database.read() as session:
        hashes = [
            str(row[0])
            for row in await session.all(
                "SELECT password_hash FROM admins UNION ALL SELECT portal_password_hash FROM users"
            )
        ]
    await store.close()
    assert len(hashes) == 2 and all("m=1024,t=1,p=1" in h for h in hashes)
    # Reopened with the default parameters: a login replaces the weak admin hash.
    store = await Store.open(path)
    try:
        assert await store.verify_admin("root", "correct horse") is not None
        async with store.database.read() as session:
            row = await session.one("SELECT password_hash FROM admins")
        assert row is not None and "m=1024,t=1" not in str(row[0])
        assert await store.verify_user_password(ORG, "101", "alice-pass-1") is not None
    finally:
        await store.close()


async def test_api_tokens_keep_only_their_sha256(store: Store) -> None:
    token_id, token = await store.create_api_token(ORG, " ci ", "admin:root")
    assert token.startswith("crt_")
    found = await store.verify_api_token(token)
    assert found is not None and (found.id, found.name, found.actor) == (
        token_id,
        "ci",
        "admin:root",
    )
    async with store.database.read() as session:
        rows = await session.all("SELECT token_sha256 FROM api_tokens")
    assert [row[0] for row in rows] == [token_digest(token)]
    assert await store.verify_api_token(token + "x") is None
    assert [t.id for t in await store.list_api_tokens(ORG)] == [token_id]
    assert await store.revoke_api_token(ORG, token_id)
    assert not await store.revoke_api_token(ORG, token_id)
    assert not await store.revoke_api_token(ORG, 2**63)
    assert await store.verify_api_token(token) is None
    with pytest.raises(InvalidValue) as refused:
        await store.create_api_token(ORG, "   ", "admin:root")
    assert refused.value.field == "name"
