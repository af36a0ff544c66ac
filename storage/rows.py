"""Column lists and row-to-model conversions for calls and recordings, shared by the
modules that join the two tables (`calls`, `recordings`, `exports`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from storage.models import CallRecord, Recording, RecordingListing

__all__ = [
    "CALL_COLUMNS",
    "CALL_COLUMNS_ALIASED",
    "CALL_COLUMNS_C",
    "CALL_FIELDS",
    "RECORDING_COLUMNS",
    "RECORDING_COLUMNS_R",
    "call_from_row",
    "listing_from_row",
    "recording_from_row",
]

CALL_FIELDS = (
    "sip_call_id",
    "direction",
    "caller_ext",
    "caller_name",
    "callee_ext",
    "callee_name",
    "started_at",
    "answered_at",
    "ended_at",
    "disposition",
    "sip_status",
    "recorded",
    "leg_a_call_id",
    "leg_b_call_id",
)
CALL_COLUMNS = ", ".join(("id", *CALL_FIELDS))
CALL_COLUMNS_C = ", ".join(f"c.{name}" for name in ("id", *CALL_FIELDS))
# A call's columns in a join with recordings (alias `c`), named for `listing_from_row`.
CALL_COLUMNS_ALIASED = ", ".join(f"c.{name} AS call_{name}" for name in ("id", *CALL_FIELDS))

_RECORDING_FIELDS = (
    "id",
    "call_id",
    "owner_ext",
    "path",
    "format",
    "channels",
    "sample_rate",
    "codec",
    "status",
    "error",
    "started_at",
    "ended_at",
    "duration_s",
    "segments_json",
    "sha256",
    "bytes",
    "retention_days",
    "expires_at",
    "purged_at",
)
RECORDING_COLUMNS = ", ".join(_RECORDING_FIELDS)
RECORDING_COLUMNS_R = ", ".join(f"r.{name}" for name in _RECORDING_FIELDS)


def call_from_row(row: sqlite3.Row | Mapping[str, Any]) -> CallRecord:
    return CallRecord(
        id=row["id"],
        sip_call_id=row["sip_call_id"],
        direction=row["direction"],
        caller_ext=row["caller_ext"],
        caller_name=row["caller_name"],
        callee_ext=row["callee_ext"],
        callee_name=row["callee_name"],
        started_at=row["started_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        disposition=row["disposition"],
        sip_status=row["sip_status"],
        recorded=bool(row["recorded"]),
        leg_a_call_id=row["leg_a_call_id"],
        leg_b_call_id=row["leg_b_call_id"],
    )


def recording_from_row(row: sqlite3.Row) -> Recording:
    segments = [(float(a), float(b)) for a, b in json.loads(row["segments_json"] or "[]")]
    return Recording(
        id=int(row["id"]),
        call_id=int(row["call_id"]),
        owner_ext=row["owner_ext"],
        path=str(row["path"]),
        format=str(row["format"]),
        channels=int(row["channels"]),
        sample_rate=int(row["sample_rate"]),
        codec=row["codec"],
        status=str(row["status"]),
        error=row["error"],
        started_at=float(row["started_at"]),
        ended_at=row["ended_at"],
        duration_s=row["duration_s"],
        segments=segments,
        sha256=row["sha256"],
        bytes=row["bytes"],
        retention_days=int(row["retention_days"]),
        expires_at=float(row["expires_at"]),
        purged_at=row["purged_at"],
    )


def listing_from_row(row: sqlite3.Row) -> RecordingListing:
    """A recording with its call from `RECORDING_COLUMNS_R, CALL_COLUMNS_ALIASED`."""
    call = call_from_row({name: row[f"call_{name}"] for name in ("id", *CALL_FIELDS)})
    return RecordingListing(recording_from_row(row), call)
