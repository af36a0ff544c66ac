"""State shared by the portal's handlers, and the helpers they use to check access."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from aiohttp import web

from portal.auth import Identity, LoginThrottle, Session, SessionStore, client_address
from portal.services import PortalServices
from storage.database import Store
from storage.models import Recording, RecordingListing
from storage.portal_queries import PortalRepository


class ApiError(Exception):
    """An error answer: status, a message for people and the offending field if any."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class PortalContext:
    """The store, services and in-memory state of one portal."""

    store: Store
    repository: PortalRepository
    services: PortalServices
    sessions: SessionStore
    throttle: LoginThrottle
    templates: jinja2.Environment

    def now(self) -> float:
        return self.services.clock()

    async def audit(
        self,
        request: web.Request,
        identity: Identity | str,
        action: str,
        object: str | None = None,
        detail: str | None = None,
    ) -> None:
        actor = identity if isinstance(identity, str) else identity.actor
        await self.store.audit(
            actor, action, object, address=client_address(request), detail=detail, at=time.time()
        )

    def recording_file(self, recording: Recording) -> Path:
        """The recording's file, resolved inside the storage folder; ApiError if it is not
        there (purged, missing, or a path escaping the folder)."""
        if recording.status == "purged" or recording.purged_at is not None:
            raise ApiError(410, f"recording {recording.id} was purged after its retention")
        base = self.services.storage_dir.resolve()
        relative = Path(recording.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ApiError(404, f"recording {recording.id} has no file")
        path = (base / relative).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise ApiError(404, f"recording {recording.id} has no file")
        return path


CONTEXT: web.AppKey[PortalContext] = web.AppKey("callrec_portal", PortalContext)
IDENTITY: web.RequestKey[Identity] = web.RequestKey("callrec_identity", Identity)
SESSION: web.RequestKey[Session] = web.RequestKey("callrec_session", Session)


def context_of(request: web.Request) -> PortalContext:
    return request.app[CONTEXT]


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def parse_id(request: web.Request, name: str = "id") -> int:
    text = request.match_info.get(name, "")
    if not text.isdigit() or len(text) > 19:
        raise ApiError(404, f"no such {name}")
    return int(text)


def media_type(recording: Recording) -> str:
    return "audio/flac" if recording.format.lower() == "flac" else "audio/wav"


def _slug(text: str | None, fallback: str) -> str:
    cleaned = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in (text or "").strip())
    cleaned = "-".join(part for part in cleaned.split("-") if part)
    return cleaned[:40] or fallback


def download_name(listing: RecordingListing) -> str:
    """E.g. "2024-05-01_12-30-05_Alice-201_to_Bob-202_rec17.wav" (ASCII-safe parts)."""
    call = listing.call
    moment = datetime.fromtimestamp(listing.recording.started_at, tz=UTC)
    caller = _slug(f"{call.caller_name or ''} {call.caller_ext or ''}", "unknown")
    callee = _slug(f"{call.callee_name or ''} {call.callee_ext or ''}", "unknown")
    extension = "flac" if listing.recording.format.lower() == "flac" else "wav"
    return f"{moment:%Y-%m-%d_%H-%M-%S}_{caller}_to_{callee}_rec{listing.recording.id}.{extension}"
