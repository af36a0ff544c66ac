"""Portal sessions in the store: only the token's SHA-256 is kept, who is logged in is
read from the admin or user row (gone with it), sessions expire when idle and end on
logout, and the bulk operations stay inside one organisation."""

from __future__ import annotations

import pytest

from storage.accounts import token_digest
from storage.database import Store
from storage.errors import InvalidValue, NotFound
from tests.storage.orgs import ORG

IDLE = 100.0


async def _two_orgs(store: Store):  # type: ignore[no-untyped-def]
    other = await store.add_organisation("beta", "Beta", "beta.example")
    await store.add_admin(ORG, "root", "admin-secret-1")
    await store.add_admin(other.scope, "broot", "admin-secret-2")
    await store.add_user(ORG, "201", "Alice")
    await store.add_user(other.scope, "201", "Bert")
    return other.scope


async def test_a_session_names_who_and_keeps_only_the_hash(store: Store) -> None:
    other = await _two_orgs(store)
    admin = await store.create_session(
        "tok-admin", role="admin", org=ORG, now=0.0, idle_s=IDLE, admin_name="root"
    )
    user = await store.create_session(
        "tok-user", role="user", org=other, now=0.0, idle_s=IDLE, extension="201"
    )
    assert (admin.role, admin.org, admin.name, admin.extension) == ("admin", ORG, "root", None)
    assert (user.org, user.name, user.extension) == (other, "Bert", "201")
    async with store.database.read() as session:
        rows = await session.all("SELECT token_sha256 FROM portal_sessions ORDER BY created_at")
    assert {str(row[0]) for row in rows} == {token_digest("tok-admin"), token_digest("tok-user")}
    # The name shown is the user's current one.
    await store.update_user(other, "201", name="Bert Beta")
    found = await store.session_by_token("tok-user", 1.0)
    assert found is not None and found.name == "Bert Beta"


async def test_sessions_expire_and_end(store: Store) -> None:
    await _two_orgs(store)
    await store.create_session("t1", role="user", org=ORG, now=0.0, idle_s=IDLE, extension="201")
    assert await store.session_by_token("t1", IDLE - 1) is not None
    assert await store.session_by_token("t1", IDLE) is None
    await store.extend_session("t1", 2 * IDLE)
    assert await store.session_by_token("t1", IDLE + 1) is not None
    await store.extend_session("t1", 10.0)  # never backwards
    assert await store.session_by_token("t1", IDLE + 1) is not None
    assert await store.delete_session("t1")
    assert await store.session_by_token("t1", 0.0) is None
    assert not await store.delete_session("t1")
    # Expired rows go when the next session is made.
    await store.create_session("t2", role="user", org=ORG, now=0.0, idle_s=IDLE, extension="201")
    await store.create_session(
        "t3", role="admin", org=ORG, now=5 * IDLE, idle_s=IDLE, admin_name="root"
    )
    assert await store.count_sessions(ORG, 0.0) == 1


async def test_sessions_go_with_their_user_admin_or_login(store: Store) -> None:
    other = await _two_orgs(store)
    for token, org in (("a", ORG), ("b", other)):
        await store.create_session(
            token, role="user", org=org, now=0.0, idle_s=IDLE, extension="201"
        )
    await store.create_session("r", role="admin", org=ORG, now=0.0, idle_s=IDLE, admin_name="root")
    # Taking ORG's 201 portal login away ends its session only, not Beta's 201.
    await store.set_portal_password(ORG, "201", "portal-pass-1")
    await store.clear_portal_password(ORG, "201")
    assert await store.session_by_token("a", 1.0) is None
    assert await store.session_by_token("b", 1.0) is not None
    await store.remove_user(other, "201")
    assert await store.session_by_token("b", 1.0) is None
    await store.remove_admin("root")
    assert await store.session_by_token("r", 1.0) is None


async def test_sessions_are_refused_for_nobody(store: Store) -> None:
    other = await _two_orgs(store)
    with pytest.raises(NotFound):
        await store.create_session("x", role="user", org=ORG, now=0, idle_s=IDLE, extension="299")
    with pytest.raises(NotFound):  # Beta's admin is no admin of ORG
        await store.create_session(
            "x", role="admin", org=ORG, now=0, idle_s=IDLE, admin_name="broot"
        )
    with pytest.raises(InvalidValue):
        await store.create_session("x", role="operator", org=other, now=0, idle_s=IDLE)
    assert await store.delete_user_sessions(ORG, "201") == 0
    notices = [{"msgid": "Saved.", "values": {}}]
    await store.create_session("n", role="user", org=ORG, now=0, idle_s=IDLE, extension="201")
    await store.set_session_notices("n", notices)
    found = await store.session_by_token("n", 1.0)
    assert found is not None and found.notices == notices
    assert await store.delete_user_sessions(other, "201") == 0
    assert await store.delete_user_sessions(ORG, "201") == 1
