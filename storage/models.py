"""Rows of the metadata store as frozen dataclasses.

Every timestamp is a unix time in seconds (float, UTC); `format_timestamp` renders one
for people and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

CALL_DIRECTIONS = ("inbound", "outbound", "internal")
# `interrupted`: the process died during the call; set at the next start-up.
CALL_DISPOSITIONS = ("answered", "busy", "no-answer", "cancelled", "failed", "interrupted")


def format_timestamp(timestamp: float | None) -> str | None:
    """ISO-8601 UTC text such as "2024-05-01T12:30:00.250Z" (None stays None)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class OrgScope:
    """Which organisation a read or a change is about. Every store method that reads or
    changes an organisation's data takes one (required, never defaulted), so a caller
    cannot forget to say whose data it means; get one from `Organisation.scope` or
    `Store.org_scope`."""

    id: int
    slug: str


@dataclass(frozen=True)
class Organisation:
    """A customer of the platform: its SIP domain (also its digest realm), and its own
    language and time zone (None: the server's defaults from the config)."""

    id: int
    slug: str
    name: str
    domain: str
    language: str | None
    timezone: str | None
    created_at: float

    @property
    def scope(self) -> OrgScope:
        return OrgScope(self.id, self.slug)


@dataclass(frozen=True)
class Did:
    """A number (or a range `first`..`last` of numbers of one length) the trunk
    delivers, and the organisation it belongs to. `extension`: the user every number of
    the range rings; None: the number dialled is itself an extension of the organisation."""

    id: int
    org_id: int
    first: str
    last: str
    extension: str | None

    def target(self, number: str) -> str:
        """The extension a call to `number` (one of this range) rings."""
        return self.extension if self.extension is not None else number


@dataclass(frozen=True)
class Usage:
    """What one organisation used in one period, for billing."""

    org_id: int
    since: float
    until: float
    recording_users: int
    recordings: int
    recorded_seconds: float
    bytes_stored: int
    retention_days: int | None


@dataclass(frozen=True)
class User:
    """A person with an extension; the recording mode applies to all their devices."""

    id: int
    extension: str
    name: str
    email: str | None
    recording_mode: str
    realm: str
    ha1_md5: str | None
    ha1_sha256: str | None
    created_at: float
    # The user's own language for the portal (`callrec.policy.LANGUAGES`); None: the
    # organisation's.
    language: str | None = None
    # The organisation the user belongs to (extensions are unique within it only).
    org_id: int = 0
    # Whether the user may log in to the portal (a portal password is set).
    portal_login: bool = False

    @property
    def has_password(self) -> bool:
        return self.ha1_md5 is not None


@dataclass(frozen=True)
class Device:
    """A SIP phone of a user; `username` (the user part of its URI) may authenticate.

    `username` is None when the URI has no user part or when it equals the owner's
    extension (the extension authenticates anyway). The device's own HA1 is kept because
    digest HA1 covers the username.
    """

    id: int
    user_id: int
    uri: str
    username: str | None
    kind: str
    ha1_md5: str | None
    ha1_sha256: str | None


@dataclass(frozen=True)
class Credentials:
    """What a digest server needs for one authentication username."""

    user: User
    username: str
    realm: str
    ha1_md5: str | None
    ha1_sha256: str | None


@dataclass(frozen=True)
class Registration:
    """One REGISTER binding: a contact of a user's phone, valid until `expires_at`.

    `received` is where the REGISTER came from, as "host:port;transport=udp" (the
    format of `b2bua.peer.Peer.__str__`).
    """

    id: int
    user_id: int
    extension: str
    contact: str
    received: str
    call_id: str
    cseq: int
    expires_at: float
    device_username: str | None
    instance: str | None
    user_agent: str | None
    updated_at: float


@dataclass(frozen=True)
class CallRecord:
    """A call detail record; names and extensions are copied so they outlive users."""

    id: int
    sip_call_id: str
    direction: str
    caller_ext: str | None
    caller_name: str | None
    callee_ext: str | None
    callee_name: str | None
    started_at: float
    answered_at: float | None
    ended_at: float | None
    disposition: str | None
    sip_status: int | None
    recorded: bool
    leg_a_call_id: str | None
    leg_b_call_id: str | None

    @property
    def duration_s(self) -> float | None:
        """Talk time from answer to hang-up; None if never answered or not ended."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.answered_at)


RECORDING_STATUSES = (
    "recording",
    "complete",
    "recovered",
    "partial",
    "error",
    "unrecordable",
    "purged",
)
# Statuses whose file holds audio to play and export. `partial`: writing stopped early
# (disk full, I/O error) and the file keeps what was written before.
PLAYABLE_STATUSES = ("complete", "recovered", "partial")


@dataclass(frozen=True)
class Recording:
    """One call's recording file and its integrity data; `path` is relative to the
    storage directory. `segments` are the recorded spans in call seconds."""

    id: int
    call_id: int
    owner_ext: str | None
    path: str
    format: str
    channels: int
    sample_rate: int
    codec: str | None
    status: str
    error: str | None
    started_at: float
    ended_at: float | None
    duration_s: float | None
    segments: list[tuple[float, float]]
    sha256: str | None
    bytes: int | None
    retention_days: int
    expires_at: float
    purged_at: float | None


@dataclass(frozen=True)
class RecordingListing:
    """A recording with its call's caller and callee, as `recordings list` shows it."""

    recording: Recording
    call: CallRecord


@dataclass(frozen=True)
class AuditEntry:
    """Who did what, when, from where."""

    id: int
    at: float
    actor: str
    action: str
    object: str | None
    address: str | None
    detail: str | None


EXPORT_STATUSES = ("queued", "building", "ready", "failed", "expired")


@dataclass(frozen=True)
class ExportJob:
    """One month's bulk-download ZIP: who ordered it and how far it got. `path` is
    relative to the storage directory (absolute when written elsewhere by the CLI)."""

    id: int
    month: str
    requested_by: str
    requested_at: float
    status: str
    path: str | None
    bytes: int | None
    files: int | None
    error: str | None
    finished_at: float | None
    org_id: int = 0


@dataclass(frozen=True)
class Admin:
    """A portal administrator; the password hash never leaves the store."""

    id: int
    name: str
    email: str | None
    created_at: float
    # The organisation an admin administers; None for a platform operator.
    org_id: int | None = None
    role: str = "admin"
    # An operator's own portal language (None: the browser's, else the server's).
    language: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class CallRow:
    """A call with its recordings (those visible to the asker)."""

    call: CallRecord
    recordings: list[Recording]


@dataclass(frozen=True)
class ApiToken:
    """An API bearer token (only its SHA-256 is stored)."""

    id: int
    name: str
    actor: str
    role: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    # The organisation the token acts for; None for an operator's token.
    org_id: int | None = None
