"""Who is asking: logins, sessions, CSRF tokens, API bearer tokens and login throttling.

`SessionStore` and `LoginThrottle` are plain in-memory classes taking `now`, so their
rules are tested without a server. `identity_middleware` attaches the `Identity` of each
request (from a bearer token or the session cookie) for the handlers to check.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from callrec.services.presentation import Text
from storage.database import Store
from storage.models import OrgScope

SESSION_COOKIE = "callrec_session"
LOGIN_CSRF_COOKIE = "callrec_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600

ROLE_ADMIN = "admin"
ROLE_USER = "user"
ROLE_OPERATOR = "operator"


@dataclass(frozen=True)
class Identity:
    """An authenticated operator, admin or user. An admin or a user belongs to one
    organisation (`org`) and sees nothing of any other; `scope_ext` limits a user to
    their own calls. An operator (`org` None) administers organisations and sees none
    of their calls."""

    actor: str
    role: str
    name: str
    extension: str | None = None
    via: str = "session"
    org: OrgScope | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def is_operator(self) -> bool:
        return self.role == ROLE_OPERATOR

    @property
    def scope_ext(self) -> str | None:
        """None for an admin (everything); the user's own extension otherwise."""
        if self.is_admin:
            return None
        # A user identity without an extension must see nothing, never everything.
        return self.extension if self.extension is not None else "\x00none"


def admin_identity(name: str, org: OrgScope, via: str = "session") -> Identity:
    """An admin of `org` logged in by name, or an admin API token of `org` (actor
    "token:<name>")."""
    prefix = "token" if via == "token" else "admin"
    return Identity(actor=f"{prefix}:{name}", role=ROLE_ADMIN, name=name, via=via, org=org)


def operator_identity(name: str, via: str = "session") -> Identity:
    """A platform operator logged in by name, or an operator's API token."""
    prefix = "token" if via == "token" else "operator"
    return Identity(actor=f"{prefix}:{name}", role=ROLE_OPERATOR, name=name, via=via)


def user_identity(org: OrgScope, extension: str, name: str) -> Identity:
    return Identity(
        actor=f"user:{extension}", role=ROLE_USER, name=name, extension=extension, org=org
    )


@dataclass
class Session:
    """A logged-in browser: its cookie value, CSRF token and idle deadline."""

    id: str
    identity: Identity
    csrf_token: str
    expires_at: float
    # Shown once on the next page, translated then (see portal.pages._notice).
    notices: list[str | Text] = field(default_factory=list)


class SessionStore:
    """Sessions in memory (a restart logs everyone out), expiring after idle time."""

    def __init__(self, idle_s: float = SESSION_IDLE_S) -> None:
        self.idle_s = idle_s
        self._sessions: dict[str, Session] = {}

    def create(self, identity: Identity, now: float) -> Session:
        self._drop_expired(now)
        session = Session(
            id=secrets.token_urlsafe(32),
            identity=identity,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + self.idle_s,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, now: float) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._sessions[session_id]
            return None
        session.expires_at = now + self.idle_s
        return session

    def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


@dataclass
class LoginThrottle:
    """At most `max_failures` failed logins per (address, name) within `window_s`."""

    max_failures: int = 5
    window_s: float = 300.0
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def retry_after(self, address: str, name: str, now: float) -> float:
        """0 if a login may be tried now, else the seconds until it may."""
        failures = self._recent(address, name, now)
        if len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[0] + self.window_s - now)

    def failed(self, address: str, name: str, now: float) -> None:
        self._recent(address, name, now).append(now)

    def succeeded(self, address: str, name: str) -> None:
        self._failures.pop((address, name.lower()), None)

    def _recent(self, address: str, name: str, now: float) -> deque[float]:
        failures = self._failures.setdefault((address, name.lower()), deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures


def csrf_matches(expected: str, supplied: str | None) -> bool:
    return supplied is not None and hmac.compare_digest(expected.encode(), supplied.encode())


async def verify_admin(store: Store, name: str, password: str) -> bool:
    """True if `name`/`password` is an admin (argon2 check in `Store.verify_admin`). A
    store that cannot answer raises its typed error: the edge answers 503, not "wrong
    password"."""
    return await store.verify_admin(name, password) is not None


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
