"""Nodes sharing a store (storage.nodes): heartbeats, the take-over of a dead node's open
calls and recordings, and the dead node's repair of them when it is back; on both
backends."""

from __future__ import annotations

import uuid

from storage.database import Store
from tests.storage.orgs import ORG

A, B = "host:/node-a", "host:/node-b"


async def _open_call(store: Store, node: str | None, started_at: float) -> tuple[int, int]:
    """An answered call of `node`, still open, with a recording in progress."""
    store.node = node
    call_id = await store.create_call(
        ORG.id,
        sip_call_id=f"{uuid.uuid4()}@test",
        direction="outbound",
        caller_ext="101",
        callee_ext="300",
        started_at=started_at,
        answered_at=started_at + 1,
    )
    recording_id = await store.create_recording(
        call_id=call_id,
        path=f"recordings/{uuid.uuid4()}.wav",
        format="wav",
        channels=1,
        sample_rate=8000,
        started_at=started_at + 1,
        retention_days=90,
        owner_ext="101",
    )
    return call_id, recording_id


async def test_heartbeats(store: Store) -> None:
    await store.heartbeat(A, 100.0, starting=True)
    await store.heartbeat(B, 101.0, starting=True)
    await store.heartbeat(A, 105.0)
    assert await store.nodes_last_seen() == {A: 105.0, B: 101.0}


async def test_a_dead_nodes_open_calls_are_closed_by_another(store: Store) -> None:
    await store.heartbeat(A, 1000.0, starting=True)
    await store.heartbeat(B, 1000.0, starting=True)
    a_call, a_recording = await _open_call(store, A, 990.0)
    b_call, b_recording = await _open_call(store, B, 990.0)
    # B beats on; A falls silent. Not yet past the timeout: nothing happens.
    await store.heartbeat(B, 1010.0)
    assert await store.take_over_dead_nodes(B, 1010.0, timeout=15.0) == []
    await store.heartbeat(B, 1020.0)
    (dead,) = await store.take_over_dead_nodes(B, 1020.0, timeout=15.0)
    assert dead.name == A and dead.last_seen == 1000.0 and dead.recordings == 1
    assert len(dead.calls) == 1
    call = await store.get_call(ORG, a_call)
    assert call is not None and call.disposition == "interrupted" and call.ended_at == 1000.0
    recording = await store.get_recording(ORG, a_recording)
    assert recording is not None and recording.status == "partial" and recording.sha256 is None
    assert recording.error is not None and A in recording.error
    # The live node's call and recording are untouched; a second pass finds nothing.
    other = await store.get_call(ORG, b_call)
    assert other is not None and other.ended_at is None
    b_row = await store.get_recording(ORG, b_recording)
    assert b_row is not None and b_row.status == "recording"
    assert await store.take_over_dead_nodes(B, 1030.0, timeout=15.0) == []
    # A is back: its taken-over recording is its own to repair and file.
    (taken,) = await store.taken_over_recordings(A)
    assert taken.id == a_recording
    assert await store.taken_over_recordings(B) == []
    await store.seal_taken_over(a_recording, duration_s=3.5, sha256="ab" * 32, size=1234)
    sealed = await store.get_recording(ORG, a_recording)
    assert sealed is not None and sealed.status == "partial" and sealed.sha256 == "ab" * 32
    assert await store.taken_over_recordings(A) == []

    # Judged by A (silent as well), B is dead too; a node never takes itself over.
    (dead_b,) = await store.take_over_dead_nodes(A, 5000.0, timeout=15.0)
    assert dead_b.name == B


async def test_start_up_repair_sees_only_its_own_nodes_recordings(store: Store) -> None:
    _, mine = await _open_call(store, A, 100.0)
    _, theirs = await _open_call(store, B, 100.0)
    _, nobodys = await _open_call(store, None, 100.0)
    store.node = A
    found = {r.id for r in await store.recordings_with_status("recording")}
    assert found == {mine, nobodys}
    store.node = None  # the CLI and one-node tools: all of them
    found = {r.id for r in await store.recordings_with_status("recording")}
    assert found == {mine, theirs, nobodys}
