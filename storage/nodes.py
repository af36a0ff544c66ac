"""The nodes sharing one store: their heartbeats, and the calls of a node that died.

Each `callrec serve` on a shared store (PostgreSQL) writes its heartbeat (`nodes`:
name, started_at, last_seen; migration 11) every few seconds. A node whose heartbeat is
older than the timeout (`[cluster] node_timeout`) is dead: another node closes its open
calls (`take_over_dead_nodes`) as `interrupted`, at the dead node's last heartbeat, and
its unfinished recordings as `partial`. A node's name is the one its calls carry
(`calls.node`, `storage.uploads.node_name`).

What the other node cannot do is reach the dead node's disk: the recording files (and
any upload still queued there) stay on it. A `partial` recording closed this way has no
checksum yet. When the dead node starts again it repairs those files
(`taken_over_recordings`, `seal_taken_over`: the file made readable, its SHA-256, size
and length filed) and its upload queue sends them to the object store; until then the
row says `partial` and the portal cannot play it (the file is on a node that is down).

Clocks: times are the nodes' wall clocks (unix seconds), so the nodes' clocks must agree
to well within the timeout (NTP). A node that could not write its own heartbeat for a
while (the store was down) must not judge the others by theirs, which stopped for the
same reason: the caller (`callrec.app`) only takes over once its own heartbeat has been
written without a gap for a whole timeout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.connection import Database
from storage.models import Recording
from storage.rows import RECORDING_COLUMNS_R, recording_from_row

__all__ = ["DeadNode", "Nodes"]


@dataclass(frozen=True)
class DeadNode:
    """A node found dead and what was closed for it."""

    name: str
    last_seen: float
    calls: tuple[str, ...]  # the SIP Call-IDs of the calls closed
    recordings: int  # recordings closed as partial


class Nodes:
    """The `nodes` table: heartbeats and the take-over of a dead node's calls."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def heartbeat(self, node: str, now: float, *, starting: bool = False) -> None:
        """`node` is alive at `now`; `starting`: it has just started (again)."""
        async with self.database.transaction() as session:
            if starting:
                await session.execute(
                    "INSERT INTO nodes (name, started_at, last_seen) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at,"
                    " last_seen = excluded.last_seen",
                    (node, now, now),
                )
            else:
                await session.execute(
                    "INSERT INTO nodes (name, started_at, last_seen) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    (node, now, now),
                )

    async def nodes_last_seen(self) -> dict[str, float]:
        """Every node's last heartbeat, by name."""
        async with self.database.read() as session:
            rows = await session.all("SELECT name, last_seen FROM nodes ORDER BY name")
        return {str(row["name"]): float(row["last_seen"]) for row in rows}

    async def take_over_dead_nodes(self, me: str, now: float, timeout: float) -> list[DeadNode]:
        """Close the open calls of every other node silent for more than `timeout`
        seconds: each call `interrupted` at that node's last heartbeat (or at its answer
        or start, if later), its unfinished recordings `partial`. Only nodes that had
        open calls are returned; one transaction, so two nodes never both close them."""
        async with self.database.read() as session:
            # Most of the time nobody is dead: a read, without the writers' lock.
            any_open = await session.one(
                "SELECT 1 AS open FROM nodes n JOIN calls c ON c.node = n.name"
                " WHERE n.name <> ? AND n.last_seen < ? AND c.ended_at IS NULL LIMIT 1",
                (me, now - timeout),
            )
        if any_open is None:
            return []
        found: list[DeadNode] = []
        async with self.database.transaction() as session:
            dead = await session.all(
                "SELECT name, last_seen FROM nodes WHERE name <> ? AND last_seen < ? ORDER BY name",
                (me, now - timeout),
            )
            for node in dead:
                name, last_seen = str(node["name"]), float(node["last_seen"])
                calls = await session.all(
                    "SELECT id, sip_call_id, started_at, answered_at FROM calls"
                    " WHERE node = ? AND ended_at IS NULL",
                    (name,),
                )
                if not calls:
                    continue
                closed = 0
                for call in calls:
                    start = call["answered_at"] or call["started_at"]
                    ended_at = max(float(start), last_seen)
                    changed, _ = await session.execute(
                        "UPDATE recordings SET status = 'partial', ended_at = ?, error = ?"
                        " WHERE call_id = ? AND status = 'recording'",
                        (
                            ended_at,
                            f"node {name} stopped answering during the call; what it wrote"
                            " is kept on its disk and filed when it starts again",
                            call["id"],
                        ),
                    )
                    closed += changed
                    await session.execute(
                        "UPDATE calls SET ended_at = ?, disposition = 'interrupted' WHERE id = ?",
                        (ended_at, call["id"]),
                    )
                    if changed:
                        await session.execute(
                            "UPDATE calls SET recorded = 1 WHERE id = ?", (call["id"],)
                        )
                found.append(
                    DeadNode(name, last_seen, tuple(str(c["sip_call_id"]) for c in calls), closed)
                )
        return found

    async def taken_over_recordings(self, node: str) -> list[Recording]:
        """The recordings another node closed as `partial` while `node` was dead (no
        checksum yet): their files are on `node`'s disk, to be repaired and filed."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {RECORDING_COLUMNS_R} FROM recordings r JOIN calls c"
                " ON c.id = r.call_id WHERE c.node = ? AND r.status = 'partial'"
                " AND r.sha256 IS NULL ORDER BY r.id",
                (node,),
            )
        return [recording_from_row(row) for row in rows]

    async def seal_taken_over(
        self, recording_id: int, *, duration_s: float, sha256: str, size: int
    ) -> None:
        """File what the repaired file of a taken-over recording holds."""
        segments = json.dumps([[0.0, round(duration_s, 3)]])
        async with self.database.transaction() as session:
            await session.execute(
                "UPDATE recordings SET duration_s = ?, segments_json = ?, sha256 = ?, bytes = ?"
                " WHERE id = ? AND sha256 IS NULL",
                (duration_s, segments, sha256, size, recording_id),
            )
