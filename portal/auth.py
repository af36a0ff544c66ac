"""Who is asking: logins, sessions, CSRF tokens, API bearer tokens and login throttling.

Sessions live in the store (`storage.sessions`), so a restart of `callrec serve` logs
nobody out: the cookie holds a random token (`secrets`), the store its SHA-256, who is
logged in (by reference: removing the admin, user or organisation ends the session) and
the idle deadline. `SessionStore` is the portal's side of it: it turns a stored session
into an `Identity`, derives the session's CSRF token from the cookie's token (so nothing
that would let someone act is kept in clear), slides the idle deadline (written at most
once a minute, not on every request) and keeps the notices the next page shows. Every
method takes `now`, so expiry is tested on a fake clock. `LoginThrottle` is a plain
in-memory class. `identity_middleware` attaches the `Identity` of each request (from a
bearer token or the session cookie) for the handlers to check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from callrec.services.presentation import Text
from storage.database import Store
from storage.models import OrgScope
from storage.sessions import PortalSessions, StoredSession

SESSION_COOKIE = "callrec_session"
LOGIN_CSRF_COOKIE = "callrec_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600
# How far a session's stored deadline may lag behind its last use: sliding it on every
# request would write to the store on every request.
SESSION_TOUCH_S = 60.0

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
    """A logged-in browser: its cookie value (`id`, never stored), CSRF token and idle
    deadline, and the notices waiting for its next page."""

    id: str
    identity: Identity
    csrf_token: str
    expires_at: float
    # Shown once on the next page, translated then (see portal.pages._notice).
    notices: list[str | Text] = field(default_factory=list)
    # The notices changed during this request: the identity middleware stores them.
    notices_changed: bool = False

    def add_notice(self, notice: str | Text) -> None:
        self.notices.append(notice)
        self.notices_changed = True

    def take_notices(self) -> list[str | Text]:
        """The waiting notices, which are then gone."""
        notices, self.notices = self.notices, []
        if notices:
            self.notices_changed = True
        return notices


def csrf_token_for(session_id: str) -> str:
    """The CSRF token of a session, derived from its cookie token (HMAC-SHA-256): only
    someone who holds the cookie knows it, and the store need not keep it."""
    digest = hmac.new(session_id.encode(), b"callrec csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _notice_to_json(notice: str | Text) -> dict[str, Any]:
    if isinstance(notice, Text):
        return {"msgid": notice.msgid, "values": dict(notice.values)}
    return {"text": notice}


def _notice_from_json(data: object) -> str | Text | None:
    if isinstance(data, dict):
        if isinstance(data.get("msgid"), str):
            values = data.get("values")
            return Text(data["msgid"], values if isinstance(values, dict) else {})
        if isinstance(data.get("text"), str):
            return str(data["text"])
    return None


def _identity_of(stored: StoredSession) -> Identity:
    if stored.role == ROLE_OPERATOR or stored.org is None:
        return operator_identity(stored.name)
    if stored.role == ROLE_ADMIN:
        return admin_identity(stored.name, stored.org)
    return user_identity(stored.org, stored.extension or "", stored.name)


class SessionStore:
    """Portal sessions in the store, ending after `idle_s` without use (see the module
    docstring)."""

    def __init__(
        self,
        store: PortalSessions,
        idle_s: float = SESSION_IDLE_S,
        touch_s: float = SESSION_TOUCH_S,
    ) -> None:
        self.store = store
        self.idle_s = idle_s
        self.touch_s = min(touch_s, idle_s / 2)

    async def create(self, identity: Identity, now: float) -> Session:
        """A new session for `identity` (its token is in `Session.id`, for the cookie)."""
        token = secrets.token_urlsafe(32)
        stored = await self.store.create_session(
            token,
            role=identity.role,
            org=identity.org,
            now=now,
            idle_s=self.idle_s,
            admin_name=None if identity.role == ROLE_USER else identity.name,
            extension=identity.extension,
        )
        return Session(token, _identity_of(stored), csrf_token_for(token), stored.expires_at)

    async def get(self, session_id: str, now: float) -> Session | None:
        """The live session of a cookie token, its deadline moved on; None if unknown,
        ended or expired."""
        stored = await self.store.session_by_token(session_id, now)
        if stored is None:
            return None
        expires_at = stored.expires_at
        if now + self.idle_s - expires_at >= self.touch_s:
            expires_at = now + self.idle_s
            await self.store.extend_session(session_id, expires_at)
        notices = [n for n in map(_notice_from_json, stored.notices) if n is not None]
        return Session(
            session_id, _identity_of(stored), csrf_token_for(session_id), expires_at, notices
        )

    async def save(self, session: Session) -> None:
        """Store the session's notices if this request changed them."""
        if session.notices_changed:
            await self.store.set_session_notices(
                session.id, [_notice_to_json(n) for n in session.notices]
            )
            session.notices_changed = False

    async def delete(self, session_id: str) -> None:
        await self.store.delete_session(session_id)


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
