"""Recording rows: filing, finishing, visibility, purge marking, and the exports table."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.database import Store
from storage.errors import Conflict, InvalidValue, NotFound
from tests.storage.orgs import ORG
from tests.storage.recording_factory import DAY, file_recording

T0 = 1_700_000_000.0


async def test_file_finish_and_list(store: Store, tmp_path: Path) -> None:
    filed = await file_recording(store, tmp_path, started_at=T0)
    row = await store.get_recording(ORG, filed.id)
    assert row is not None and (row.status, row.sha256) == ("complete", filed.sha256)
    assert row.expires_at == filed.expires_at
    call = await store.get_call(ORG, filed.call_id)
    assert call is not None and call.recorded
    (listing,) = await store.list_recordings(ORG)
    assert (listing.recording.id, listing.call.id) == (filed.id, filed.call_id)
    assert await store.recordings_with_status("complete") == [row]


async def test_refusals_are_typed(store: Store, tmp_path: Path) -> None:
    filed = await file_recording(store, tmp_path, started_at=T0)
    common = {"format": "wav", "channels": 1, "sample_rate": 8000, "started_at": T0}
    with pytest.raises(InvalidValue) as days:
        await store.create_recording(
            call_id=filed.call_id, path="recordings/x.wav", retention_days=0, **common
        )
    assert days.value.field == "retention_days"
    with pytest.raises(Conflict) as duplicate:
        await store.create_recording(
            call_id=filed.call_id, path=filed.relative, retention_days=30, **common
        )
    assert duplicate.value.field == "path"
    with pytest.raises(InvalidValue) as status:
        await store.finish_recording(filed.id, status="purged", ended_at=T0)
    assert status.value.field == "status"
    with pytest.raises(NotFound):
        await store.finish_recording(filed.id + 100, status="complete", ended_at=T0)
    with pytest.raises(InvalidValue) as action:
        await store.add_recording_toggle(filed.id, T0, "pause", "rfc4733")
    assert action.value.field == "action"


async def test_visibility_follows_ownership_and_participation(store: Store, tmp_path: Path) -> None:
    # A user sees the calls filed with their user id (storage.calls.own_call_condition).
    for extension, name in (("101", "Alice"), ("102", "Bob"), ("103", "Carol")):
        await store.add_user(ORG, extension, name)
    mine = await file_recording(store, tmp_path, started_at=T0, caller=("101", "Alice"))
    theirs = await file_recording(
        store, tmp_path, started_at=T0 + 1, caller=("103", "Carol"), callee=("900", None)
    )
    assert await store.get_visible_recording(ORG, mine.id, "101") is not None
    assert await store.get_visible_recording(ORG, mine.id, "102") is not None  # the callee
    assert await store.get_visible_recording(ORG, theirs.id, "101") is None
    assert await store.get_visible_recording(ORG, theirs.id, None) is not None
    assert await store.get_visible_recording(ORG, 2**63, None) is None
    page, total = await store.recordings_page(
        ORG, since=None, until=None, extension=None, scope_ext="101", limit=10, offset=0
    )
    assert total == 1 and [item.recording.id for item in page] == [mine.id]
    row = await store.get_visible_call(ORG, theirs.call_id, None)
    assert row is not None and [r.id for r in row.recordings] == [theirs.id]
    assert await store.get_visible_call(ORG, theirs.call_id, "101") is None


async def test_only_expired_rows_are_marked_purged_with_an_audit_entry(
    store: Store, tmp_path: Path
) -> None:
    filed = await file_recording(store, tmp_path, started_at=T0, retention_days=30)
    early = T0 + 30 * DAY - 1
    assert await store.expired_recordings(early) == []
    assert not await store.mark_recording_purged(filed.id, at=early, actor="retention")
    late = T0 + 30 * DAY
    assert [r.id for r in await store.expired_recordings(late)] == [filed.id]
    assert await store.mark_recording_purged(filed.id, at=late, actor="retention", detail="d")
    assert not await store.mark_recording_purged(filed.id, at=late, actor="retention")
    (entry,) = await store.list_audit(ORG)
    assert (entry.actor, entry.action, entry.object) == (
        "retention",
        "purge",
        f"recording {filed.id}",
    )
    assert await store.audit_total(ORG) == 1


async def test_export_rows(store: Store) -> None:
    export_id = await store.create_export(ORG, "2024-05", "admin:root", T0)
    await store.update_export(export_id, "ready", path="exports/1.zip", finished_at=T0 + 1)
    job = await store.get_export(ORG, export_id)
    assert job is not None and (job.status, job.path) == ("ready", "exports/1.zip")
    assert [j.id for j in await store.exports_finished_before(T0 + 2)] == [export_id]
    with pytest.raises(InvalidValue) as status:
        await store.update_export(export_id, "lost")
    assert status.value.field == "status"
    with pytest.raises(InvalidValue) as field:
        await store.update_export(export_id, "ready", colour="red")
    assert field.value.field == "colour"
    with pytest.raises(NotFound):
        await store.update_export(export_id + 1, "failed")
