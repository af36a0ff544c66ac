"""The one JSON shape of each stored record, and the one file name of a recording.

The REST API (`portal/api.py`) and the CLI's `--json` (`callrec/cli.py`) both serialise
through these functions, so a user, a call or a recording reads the same whichever way
it was asked for: `recording_mode`, the parties as `caller`/`callee` objects
(`{"extension", "name"}`), ISO-8601 UTC timestamps, and a recording's call nested under
`call`. The API adds only what is about HTTP (links to the audio, a call's recordings).

`recording_file_name` names a recording wherever it leaves callrec as a file: the
portal's download and the entry in a month's export ZIP, dated in the reader's time zone
(a `Presentation`; UTC without one). JSON times stay ISO-8601 UTC.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from callrec.services.presentation import Presentation, Presentations
from storage.models import (
    AuditEntry,
    CallRecord,
    Device,
    Did,
    ExportJob,
    Organisation,
    Recording,
    RecordingListing,
    Usage,
    User,
    format_timestamp,
)
from storage.recordings import RecordedSpan

__all__ = [
    "USAGE_FIELDS",
    "audit_json",
    "call_json",
    "call_parties",
    "device_json",
    "did_json",
    "export_json",
    "listing_json",
    "media_type",
    "organisation_json",
    "recording_file_name",
    "recording_json",
    "spans_json",
    "usage_json",
    "user_json",
]


def user_json(user: User, devices: Sequence[Device] | None = None) -> dict[str, Any]:
    """A user (HA1 values and password hashes are never shown); with `devices`, their
    devices too."""
    data: dict[str, Any] = {
        "extension": user.extension,
        "name": user.name,
        "email": user.email,
        "recording_mode": user.recording_mode,
        "has_password": user.has_password,
        "portal_login": user.portal_login,
        "realm": user.realm,
        "language": user.language,
        "created_at": format_timestamp(user.created_at),
    }
    if devices is not None:
        data["devices"] = [device_json(device) for device in devices]
    return data


def device_json(device: Device) -> dict[str, Any]:
    return {"id": device.id, "uri": device.uri, "username": device.username, "kind": device.kind}


def call_parties(call: CallRecord) -> dict[str, Any]:
    """Who called whom, and when: shared by a call and a recording's call. `direction`
    is `outbound` (a user to the trunk), `inbound` (the trunk to a user) or `internal`
    (a user to another user of the organisation: both are named, and both see it)."""
    return {
        "direction": call.direction,
        "caller": {"extension": call.caller_ext, "name": call.caller_name},
        "callee": {"extension": call.callee_ext, "name": call.callee_name},
        "started_at": format_timestamp(call.started_at),
        "answered_at": format_timestamp(call.answered_at),
        "ended_at": format_timestamp(call.ended_at),
    }


def call_json(call: CallRecord) -> dict[str, Any]:
    """A call detail record with its talk time and outcome."""
    return {
        "id": call.id,
        "sip_call_id": call.sip_call_id,
        **call_parties(call),
        "duration_s": call.duration_s,
        "disposition": call.disposition,
        "sip_status": call.sip_status,
        "recorded": call.recorded,
    }


def media_type(recording: Recording) -> str:
    """The Content-Type of a recording's file."""
    return "audio/flac" if recording.format.lower() == "flac" else "audio/wav"


def spans_json(spans: Sequence[RecordedSpan], zone: Presentation) -> list[dict[str, str | None]]:
    """What was recorded of a call (`Store.recorded_spans`): `start` and `end` in UTC like
    every time here, and the same moments in the organisation's time zone with its
    offset (`start_local`, `end_local`), as the portal shows them."""

    def local(timestamp: float | None) -> str | None:
        if timestamp is None:
            return None
        return zone.local(timestamp).isoformat(timespec="seconds")

    return [
        {
            "start": format_timestamp(span.start),
            "end": format_timestamp(span.end),
            "start_local": local(span.start),
            "end_local": local(span.end),
        }
        for span in spans
    ]


def recording_json(
    recording: Recording, spans: Sequence[RecordedSpan], zone: Presentation
) -> dict[str, Any]:
    """A recording: its file (path relative to the storage folder), format, segments
    (offsets in the file), recorded spans (wall-clock, `spans_json`), checksum, status
    and retention."""
    return {
        "id": recording.id,
        "call_id": recording.call_id,
        "owner_ext": recording.owner_ext,
        "path": recording.path,
        "format": recording.format,
        "media_type": media_type(recording),
        "channels": recording.channels,
        "sample_rate": recording.sample_rate,
        "codec": recording.codec,
        "status": recording.status,
        "error": recording.error,
        "started_at": format_timestamp(recording.started_at),
        "ended_at": format_timestamp(recording.ended_at),
        "duration_s": recording.duration_s,
        "segments": [list(segment) for segment in recording.segments],
        "spans": spans_json(spans, zone),
        "sha256": recording.sha256,
        "bytes": recording.bytes,
        "retention_days": recording.retention_days,
        "expires_at": format_timestamp(recording.expires_at),
        "purged_at": format_timestamp(recording.purged_at),
    }


def listing_json(
    listing: RecordingListing, spans: Sequence[RecordedSpan], zone: Presentation
) -> dict[str, Any]:
    """A recording with its call's parties and times under `call`."""
    data = recording_json(listing.recording, spans, zone)
    call = listing.call
    data["call"] = {"id": call.id, **call_parties(call)}
    return data


def export_json(export: ExportJob) -> dict[str, Any]:
    return {
        "id": export.id,
        "month": export.month,
        "requested_by": export.requested_by,
        "requested_at": format_timestamp(export.requested_at),
        "status": export.status,
        "bytes": export.bytes,
        "files": export.files,
        "error": export.error,
        "finished_at": format_timestamp(export.finished_at),
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": format_timestamp(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "object": entry.object,
        "address": entry.address,
        "detail": entry.detail,
    }


# -- the file name ---------------------------------------------------------------------

_NAME_PART_MAX = 40


def _safe(text: str | None, fallback: str) -> str:
    """ASCII letters, digits and - only: accents are folded, anything else becomes -."""
    if not text:
        return fallback
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in folded)
    cleaned = "-".join(part for part in cleaned.split("-") if part)
    return cleaned[:_NAME_PART_MAX].strip("-") or fallback


def _party(ext: str | None, name: str | None) -> str:
    return f"{_safe(ext, 'unknown')}-{_safe(name, '')}".rstrip("-")


def recording_file_name(listing: RecordingListing, presentation: Presentation | None = None) -> str:
    """`YYYY-MM-DD_HHMMSS_<caller ext>-<caller name>_to_<callee ext>-<callee name>_<id>.wav`
    (start of the recording in the presentation's zone, UTC without one; the extension
    is the recording's format). Only ASCII letters, digits, `-` and `_`, so it is safe in
    a Content-Disposition header, a ZIP and every file system."""
    recording, call = listing.recording, listing.call
    zone = presentation or Presentations().get("en", "UTC")
    started = zone.file_stamp(recording.started_at)
    caller = _party(call.caller_ext, call.caller_name)
    callee = _party(call.callee_ext, call.callee_name)
    extension = "flac" if recording.format.lower() == "flac" else "wav"
    return f"{started}_{caller}_to_{callee}_{recording.id}.{extension}"


# The columns of the usage report (CSV) and the keys of its JSON, in order.
USAGE_FIELDS = (
    "organisation",
    "month",
    "recording_users",
    "recordings",
    "recorded_minutes",
    "bytes_stored",
    "retention_days",
)


def usage_json(org: Organisation, month: str, usage: Usage) -> dict[str, Any]:
    """One organisation's usage in one month, as the API, the portal and the CLI give
    it (recorded minutes rounded up to whole minutes per month, as billed)."""
    return {
        "organisation": org.slug,
        "month": month,
        "recording_users": usage.recording_users,
        "recordings": usage.recordings,
        "recorded_minutes": -(-round(usage.recorded_seconds) // 60),
        "bytes_stored": usage.bytes_stored,
        "retention_days": usage.retention_days,
    }


def organisation_json(org: Organisation) -> dict[str, Any]:
    """An organisation (language and time zone None: the server's defaults)."""
    return {
        "slug": org.slug,
        "name": org.name,
        "domain": org.domain,
        "language": org.language,
        "timezone": org.timezone,
        "created_at": format_timestamp(org.created_at),
    }


def did_json(did: Did) -> dict[str, Any]:
    """A number range from the trunk and the extension it rings (None: the number)."""
    return {"id": did.id, "first": did.first, "last": did.last, "extension": did.extension}
