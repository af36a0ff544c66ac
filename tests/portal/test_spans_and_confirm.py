"""What an on-demand recording recorded (its feature-code spans, in local time, on the
Reports row and in the API), and the confirmation step before a user comes off
recording (a page and a form: it works without JavaScript)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from storage.recordings import RecordedSpan, spans_from_toggles
from tests.portal.conftest import Client, Fixture, party_users, write_wav
from tests.storage.orgs import ORG

API = "/api/v1"
# 2024-10-27 00:59:50 UTC: 02:59:50 summer time in Amsterdam; ten seconds later the
# clocks go back, and 01:00:10 UTC is 02:00:10 winter time.
T0 = datetime(2024, 10, 27, 0, 59, 50, tzinfo=UTC).timestamp()


def test_spans_pair_starts_and_stops() -> None:
    assert spans_from_toggles([], 10.0, 20.0) == [RecordedSpan(10.0, 20.0)]
    toggles = [(1.0, "start"), (2.0, "stop"), (3.0, "start"), (3.5, "start"), (4.0, "stop")]
    assert spans_from_toggles(toggles, 1.0, 9.0) == [RecordedSpan(1.0, 2.0), RecordedSpan(3.0, 4.0)]
    # Still recording at the end: the last span ends with the recording (None: running).
    assert spans_from_toggles([(1.0, "start")], 1.0, None) == [RecordedSpan(1.0, None)]
    assert spans_from_toggles([(1.0, "start"), (5.0, "stop"), (6.0, "stop")], 1.0, 7.0) == [
        RecordedSpan(1.0, 5.0)
    ]


async def _on_demand_call(portal: Fixture) -> tuple[int, int]:
    store = portal.store
    await store.set_org_setting(ORG, "timezone", "Europe/Amsterdam")
    call_id = await store.create_call(
        ORG.id,
        **await party_users(store, "202", "0201234567"),
        sip_call_id="on-demand@spans",
        direction="outbound",
        caller_ext="202",
        caller_name="Bob Baker",
        callee_ext="0201234567",
        callee_name="Customer",
        started_at=T0 - 10,
        answered_at=T0 - 5,
        ended_at=T0 + 60,
        disposition="answered",
    )
    relative = "recordings/2024/10/27/on-demand.wav"
    write_wav(portal.storage_dir / relative, 40.0, 440.0)
    recording_id = await store.create_recording(
        call_id=call_id, path=relative, format="wav", channels=1, sample_rate=8000,
        started_at=T0, retention_days=90, owner_ext="202",
    )  # fmt: skip
    await store.add_recording_toggle(recording_id, T0, "start", "rfc4733")
    await store.add_recording_toggle(recording_id, T0 + 20, "stop", "rfc4733")
    await store.add_recording_toggle(recording_id, T0 + 40, "start", "inband")
    await store.finish_recording(
        recording_id, status="complete", ended_at=T0 + 60, duration_s=40.0,
        segments=[(5.0, 25.0), (45.0, 65.0)],
    )  # fmt: skip
    return call_id, recording_id


async def test_spans_in_the_api_in_utc_and_local_time(portal: Fixture, admin: Client) -> None:
    call_id, recording_id = await _on_demand_call(portal)
    expected = [
        {
            "start": "2024-10-27T00:59:50.000Z",
            "end": "2024-10-27T01:00:10.000Z",
            "start_local": "2024-10-27T02:59:50+02:00",
            "end_local": "2024-10-27T02:00:10+01:00",
        },
        {
            "start": "2024-10-27T01:00:30.000Z",
            "end": "2024-10-27T01:00:50.000Z",
            "start_local": "2024-10-27T02:00:30+01:00",
            "end_local": "2024-10-27T02:00:50+01:00",
        },
    ]
    async with admin.session.get(f"{portal.url}{API}/calls/{call_id}") as response:
        call = await response.json()
    assert call["recordings"][0]["spans"] == expected
    async with admin.session.get(f"{portal.url}{API}/recordings/{recording_id}") as response:
        assert (await response.json())["spans"] == expected
    async with admin.session.get(f"{portal.url}{API}/recordings") as response:
        listed = {item["id"]: item for item in (await response.json())["items"]}
    assert listed[recording_id]["spans"] == expected
    # A recording of mode always: one span, the whole recording.
    always = listed[portal.recordings["alice-bob"]]["spans"]
    assert [(s["start"], s["end"]) for s in always] == [
        ("2024-05-01T12:00:03.000Z", "2024-05-01T12:00:06.000Z")
    ]


async def test_spans_on_the_reports_row_in_local_time(portal: Fixture, bob: Client) -> None:
    call_id, recording_id = await _on_demand_call(portal)
    async with bob.session.get(f"{portal.url}/reports") as response:
        page = await response.text()
    row = page.split(f'data-call-id="{call_id}"', 1)[1].split("</tr>", 1)[0]
    spans = re.search(rf'data-spans-of="{recording_id}">(.*?)</div>', row, re.S)
    assert spans is not None
    shown = re.findall(r'<span class="span">([^<]*)</span>', spans.group(1))
    dash = "\N{EN DASH}"
    assert shown == [f"02:59:50{dash}02:00:10", f"02:00:30{dash}02:00:50"]


async def test_removing_a_user_from_recording_asks_first(portal: Fixture, admin: Client) -> None:
    url = portal.url
    async with admin.session.get(f"{url}/settings") as response:
        settings = await response.text()
    # The ✕ is a link to the confirmation page, not a form that removes at once.
    assert 'href="/settings/recording-users/201/remove"' in settings
    assert 'action="/settings/recording-users/201/remove"' not in settings

    async with admin.session.get(f"{url}/settings/recording-users/201/remove") as response:
        assert response.status == 200
        page = await response.text()
    assert "Stop recording the calls of Alice Archer (201)?" in page
    assert 'name="confirm" value="yes"' in page and 'href="/settings"' in page
    assert (await portal.store.get_user(ORG, "201")).recording_mode == "always"

    # A post without the confirmation (an old form, a forged button) changes nothing.
    async with admin.session.post(
        f"{url}/settings/recording-users/201/remove",
        data={"csrf_token": admin.csrf},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/settings/recording-users/201/remove"
    assert (await portal.store.get_user(ORG, "201")).recording_mode == "always"
    # Nor does one without the session's CSRF token.
    async with admin.session.post(
        f"{url}/settings/recording-users/201/remove",
        data={"csrf_token": "forged", "confirm": "yes"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403
    assert (await portal.store.get_user(ORG, "201")).recording_mode == "always"

    # Confirmed: off recording, recordings kept, audited.
    async with admin.session.post(
        f"{url}/settings/recording-users/201/remove",
        data={"csrf_token": admin.csrf, "confirm": "yes"},
    ) as response:
        assert response.status == 200
        assert "is no longer recorded; their recordings are kept" in await response.text()
    assert (await portal.store.get_user(ORG, "201")).recording_mode == "never"
    assert await portal.store.get_recording(ORG, portal.recordings["alice-bob"]) is not None
    audit = await portal.store.list_audit(ORG, 10)
    assert any(e.action == "mode.change" and e.object == "user:201" for e in audit)


async def test_confirmation_page_is_for_admins_of_the_organisation(
    portal: Fixture, alice: Client, admin: Client
) -> None:
    async with alice.session.get(
        f"{portal.url}/settings/recording-users/201/remove", allow_redirects=False
    ) as response:
        assert response.status == 403
    async with admin.session.get(f"{portal.url}/settings/recording-users/999/remove") as response:
        assert response.status == 404
