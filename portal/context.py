"""State shared by the portal's handlers, the helpers they use to check access, and
`ApiError`, the one error answer: `ApiError.from_storage` is the one place a typed
storage error becomes an HTTP status (InvalidValue 422 naming the field, NotFound 404,
Conflict 409, StorageUnavailable 503); no handler looks at an error's text. A message
marked with `N_` is shown translated on a page; the API answers its English text."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
from aiohttp import web

from callrec.services.presentation import N_, Text
from portal.auth import Identity, LoginThrottle, Session, SessionStore, client_address
from portal.services import PortalServices
from storage.database import Store
from storage.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from storage.models import OrgScope, Recording

# Seconds a client is asked to wait before retrying after a 503 (a lock, a full disk).
RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error answer: status, a message for people and the offending field if any.
    `message` is the English text; `text` the same, translatable where it was marked."""

    def __init__(self, status: int, message: str | Text, field: str | None = None) -> None:
        super().__init__(str(message))
        self.status = status
        self.message = str(message)
        self.text = message
        self.field = field

    @classmethod
    def from_storage(cls, error: StorageError) -> ApiError:
        """The answer to a storage error, by its type. The messages of the typed errors
        are written for people and name no server path; any other StorageError is an
        internal error whose text stays in the log."""
        if isinstance(error, InvalidValue):
            return cls(422, error.message, error.field)
        if isinstance(error, NotFound):
            return cls(404, error.message)
        if isinstance(error, Conflict):
            return cls(409, error.message, error.field)
        if isinstance(error, StorageUnavailable):
            return cls(503, error.message)
        return cls(500, "internal error; see the server log")


@dataclass
class PortalContext:
    """The store, services and in-memory state of one portal."""

    store: Store
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
        """Audit in the identity's organisation (an operator's: the platform's log).
        A bare actor name (a failed login) goes to `org`'s log given by the caller."""
        if isinstance(identity, str):
            actor, org = identity, None
        else:
            actor, org = identity.actor, identity.org
        await self.store.audit(
            org,
            actor,
            action,
            object,
            address=client_address(request),
            detail=detail,
            at=time.time(),
        )

    def recording_file(self, recording: Recording) -> Path:
        """The recording's file, as `RecordingFiles` resolves it inside the recordings
        folder; ApiError if it is not there (purged, missing, or a path escaping it)."""
        if recording.status == "purged" or recording.purged_at is not None:
            raise ApiError(410, f"recording {recording.id} was purged after its retention")
        path = self.services.files.existing(recording.path)
        if path is None:
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


def org_of(identity: Identity) -> OrgScope:
    """The organisation whose data `identity` may see; an operator has none (403)."""
    if identity.org is None:
        raise ApiError(
            403,
            N_("Operators manage organisations; log in as an admin of one to see its data."),
        )
    return identity.org


# Who may use a route, checked the same way by the pages (`portal.pages.page_scope`,
# `operator_page`) and the API (`portal.api.require`, `require_operator`); they differ
# only in what an anonymous request gets (a redirect to the login page, or 401).


def check_role(identity: Identity, *, admin: bool = False) -> OrgScope:
    """The organisation an admin's or user's route works in: an operator has none
    (403), and an `admin` route refuses a user (403)."""
    org = org_of(identity)
    if admin and not identity.is_admin:
        raise ApiError(403, N_("This is for the organisation's administrators."))
    return org


def check_operator(identity: Identity) -> Identity:
    """`identity`, if it is a platform operator's (403 otherwise)."""
    if not identity.is_operator:
        raise ApiError(403, N_("This is for platform operators."))
    return identity


def parse_id(request: web.Request, name: str = "id") -> int:
    text = request.match_info.get(name, "")
    if not text.isdigit() or len(text) > 19:
        raise ApiError(404, f"no such {name}")
    return int(text)
