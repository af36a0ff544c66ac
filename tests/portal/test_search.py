"""Finding calls by a name or by part of a number (API `?q=`, the Reports page).

The search is scoped to the asker's organisation (and, for a user, to their own calls),
uses the trigram index for three characters or more, and takes `%`, `_`, `\\` and FTS5's
own syntax literally."""

from __future__ import annotations

import re
from typing import Any

from storage.search import normalise_search, search_condition
from tests.portal.conftest import BASE_TIME, Client, Fixture, login, new_session, party_users
from tests.storage.orgs import ORG

API = "/api/v1"


async def _add_call(fixture: Fixture, org_id: int, key: str, caller: tuple[str, str],
                    callee: tuple[str, str], at: float) -> int:  # fmt: skip
    call_id = await fixture.store.create_call(
        org_id,
        # Filed with the parties' user ids as the B2BUA files them (beta has no users).
        **(await party_users(fixture.store, caller[0], callee[0]) if org_id == ORG.id else {}),
        sip_call_id=f"{key}@search",
        direction="outbound",
        caller_ext=caller[0],
        caller_name=caller[1],
        callee_ext=callee[0],
        callee_name=callee[1],
        started_at=at,
        answered_at=at + 1,
        ended_at=at + 30,
        disposition="answered",
    )
    fixture.calls[key] = call_id
    return call_id


async def _found(client: Client, fixture: Fixture, q: str, path: str = "/calls") -> set[int]:
    async with client.session.get(fixture.url + API + path, params={"q": q}) as response:
        assert response.status == 200, await response.text()
        page: dict[str, Any] = await response.json()
    assert page["total"] == len(page["items"])
    if path == "/calls":
        return {item["id"] for item in page["items"]}
    return {item["call"]["id"] for item in page["items"]}


async def test_search_by_name_part_of_number_and_literally(portal: Fixture, admin: Client) -> None:
    calls = portal.calls
    await _add_call(portal, ORG.id, "percent", ("201", "Alice Archer"), ("0201", "50% Sale_Desk"),
                    BASE_TIME + 3600)  # fmt: skip
    await _add_call(portal, ORG.id, "fifty", ("201", "Alice Archer"), ("0202", "50 Sales"),
                    BASE_TIME + 7200)  # fmt: skip
    await _add_call(portal, ORG.id, "quote", ("202", "Bob Baker"), ("0203", 'Zoë "Z" OR NEAR*'),
                    BASE_TIME + 9000)  # fmt: skip

    # A name, in any case, and part of one (trigram index: three characters or more).
    assert await _found(admin, portal, "carol") == {calls["carol-out"], calls["bob-carol"]}
    assert await _found(admin, portal, "ARCH") == {calls["alice-bob"], calls["percent"],
                                                    calls["fifty"]}  # fmt: skip
    # Part of a number, also as people write it (spaces, dashes, brackets).
    assert await _found(admin, portal, "1234") == {calls["carol-out"]}
    assert await _found(admin, portal, "06 123-45") == {calls["carol-out"]}
    assert await _found(admin, portal, "(0612)") == {calls["carol-out"]}
    # One or two characters: no trigram, the LIKE fallback finds the same way.
    assert await _found(admin, portal, "ob") == {calls["alice-bob"], calls["bob-carol"],
                                                 calls["quote"]}  # fmt: skip
    assert await _found(admin, portal, "03") == {
        calls["carol-out"],
        calls["bob-carol"],
        calls["quote"],
    }
    # LIKE's wildcards are literal: "50%" is not "50" then anything, "_" is not any one
    # character, and a lone "%" or "_" finds only rows holding one.
    assert await _found(admin, portal, "50%") == {calls["percent"]}
    assert await _found(admin, portal, "%") == {calls["percent"]}
    assert await _found(admin, portal, "e_D") == {calls["percent"]}
    assert await _found(admin, portal, "_") == {calls["percent"]}
    assert await _found(admin, portal, "\\") == set()
    # FTS5's own syntax is literal too (quotes, OR, NEAR, *).
    assert await _found(admin, portal, '"Z" OR NEAR*') == {calls["quote"]}
    assert await _found(admin, portal, "Zoë OR Alice") == set()
    assert await _found(admin, portal, "zoë") == {calls["quote"]}
    # Nothing typed: every call.
    assert len(await _found(admin, portal, "   ")) == 6
    # The recordings list takes the same q.
    assert await _found(admin, portal, "carol", "/recordings") == {calls["carol-out"]}
    # Too long: 422 naming q.
    url = portal.url + API + "/calls"
    async with admin.session.get(url, params={"q": "x" * 101}) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "q"


async def test_other_organisations_calls_are_never_found(portal: Fixture, admin: Client) -> None:
    beta = (await portal.store.add_organisation("beta", "Beta", "beta.example")).scope
    await portal.store.add_admin(beta, "bea", "bea-password-1")
    # Beta's call has Alice's name and Carol's outside number.
    beta_call = await _add_call(portal, beta.id, "beta", ("201", "Alice Archer"),
                                ("0612345678", "Carol Cole"), BASE_TIME)  # fmt: skip
    found = await _found(admin, portal, "Alice Archer")
    assert found == {portal.calls["alice-bob"]}
    assert beta_call not in await _found(admin, portal, "0612345678")
    assert beta_call not in await _found(admin, portal, "al")  # the LIKE fallback too
    async with new_session() as session:
        bea = Client(session, await login(session, portal.url, "bea", "bea-password-1"))
        assert await _found(bea, portal, "Alice") == {beta_call}
        assert await _found(bea, portal, "bob") == set()
        assert await _found(bea, portal, "ob") == set()


async def test_a_user_finds_only_their_own_calls(portal: Fixture, alice: Client) -> None:
    # Carol's call is not Alice's, even though it matches.
    assert await _found(alice, portal, "carol") == set()
    assert await _found(alice, portal, "Bob") == {portal.calls["alice-bob"]}


async def test_reports_page_searches(portal: Fixture, admin: Client) -> None:
    async with admin.session.get(portal.url + "/reports", params={"q": "0612"}) as response:
        assert response.status == 200
        page = await response.text()
    shown = set(map(int, re.findall(r'data-call-id="(\d+)"', page)))
    assert shown == {portal.calls["carol-out"]}
    assert 'name="q"' in page and 'value="0612"' in page
    async with admin.session.get(portal.url + "/reports", params={"q": "<b>%"}) as response:
        page = await response.text()
    assert "<b>%" not in page and "&lt;b&gt;%" in page  # shown back, escaped
    assert not re.findall(r'data-call-id="(\d+)"', page)


async def test_index_is_used_and_kept_in_step(portal: Fixture) -> None:
    store = portal.store
    condition, params = search_condition("c", normalise_search("Archer"))
    async with store.database.read() as session:
        plan = await session.all(
            f"EXPLAIN QUERY PLAN SELECT c.id FROM calls c WHERE c.org_id = ? AND {condition}",
            [ORG.id, *params],
        )
    assert any("VIRTUAL TABLE" in str(row["detail"]) for row in plan), [dict(r) for r in plan]
    # A renamed party is found by the new name only (the update trigger).
    call_id = portal.calls["bob-carol"]
    await store.update_call(call_id, callee_name="Caroline Vos")
    async with store.database.read() as session:
        condition, params = search_condition("c", "Vos")
        rows = await session.all(f"SELECT c.id FROM calls c WHERE {condition}", params)
        assert [row["id"] for row in rows] == [call_id]
        condition, params = search_condition("c", "Carol Cole")
        rows = await session.all(f"SELECT c.id FROM calls c WHERE {condition}", params)
        assert call_id not in {row["id"] for row in rows}
