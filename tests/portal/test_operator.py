"""The operator's routes: organisations with their first admin, DIDs and usage; and
what an operator may not do (see an organisation's data: tests/portal/test_isolation.py)."""

from __future__ import annotations

import csv
import io

from tests.portal.conftest import ADMIN, Fixture, login, new_session
from tests.storage.orgs import ORG


async def test_an_operator_creates_an_organisation_its_admin_logs_in_to(portal: Fixture) -> None:
    await portal.store.add_operator("ops", "ops-password-1")
    async with new_session() as operator:
        csrf = await login(operator, portal.url, "ops", "ops-password-1")
        headers = {"X-CSRF-Token": csrf}
        new = {
            "slug": "acme",
            "name": "Acme",
            "domain": "acme.example",
            "timezone": "Europe/Amsterdam",
            "admin_name": "anna",
            "admin_password": "anna-password-1",
        }
        async with operator.post(f"{portal.url}/api/v1/orgs", json=new, headers=headers) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        assert (created["domain"], created["timezone"], created["language"]) == (
            "acme.example", "Europe/Amsterdam", "en",
        )  # fmt: skip
        async with operator.post(f"{portal.url}/api/v1/orgs", json=new, headers=headers) as r:
            assert r.status == 409
        did = {"first": "31201000", "last": "31201099"}
        async with operator.post(
            f"{portal.url}/api/v1/orgs/acme/dids", json=did, headers=headers
        ) as r:
            assert r.status == 201
        async with operator.post(
            f"{portal.url}/api/v1/orgs/{ORG.slug}/dids", json={"first": "31201050"}, headers=headers
        ) as r:
            assert r.status == 409 and (await r.json())["field"] == "first"
        async with operator.patch(
            f"{portal.url}/api/v1/orgs/acme", json={"language": "nl"}, headers=headers
        ) as r:
            assert r.status == 200 and (await r.json())["language"] == "nl"
        async with operator.get(f"{portal.url}/api/v1/usage?month=2024-05&format=csv") as r:
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        by_org = {row["organisation"]: row for row in rows}
        # The fixture's organisation: 201 (always) and 202 (on demand) record; two
        # recordings in May 2024 of 3 s and 2 s: one minute, rounded up.
        assert by_org[ORG.slug]["recording_users"] == "2"
        assert by_org[ORG.slug]["recordings"] == "2"
        assert by_org[ORG.slug]["recorded_minutes"] == "1"
        assert by_org["acme"]["recordings"] == "0"
        async with operator.get(f"{portal.url}/operator") as r:
            page = await r.text()
        assert r.status == 200 and "acme.example" in page and "Alice Archer" not in page
    # The new admin logs in to the new organisation, which is empty.
    async with new_session() as admin:
        await login(admin, portal.url, "anna", "anna-password-1")
        async with admin.get(f"{portal.url}/api/v1/calls") as r:
            assert (await r.json())["total"] == 0
        async with admin.get(f"{portal.url}/api/v1/orgs") as r:
            assert r.status == 403
        async with admin.get(f"{portal.url}/settings") as r:
            assert r.status == 200 and 'lang="nl"' in await r.text()
    # The fixture's admin is not an operator.
    async with new_session() as other:
        await login(other, portal.url, *ADMIN)
        async with other.get(f"{portal.url}/api/v1/usage") as r:
            assert r.status == 403
