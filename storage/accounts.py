"""Accounts: the one password hasher, portal administrators and API bearer tokens.

`Passwords` is the only place callrec turns a password into something it stores:
- argon2 hashes (argon2-cffi's defaults) for portal logins, admins' and users' alike;
  verification follows the parameters kept in each hash, and a hash made with weaker
  parameters is replaced at the next successful login;
- digest HA1 values for SIP (RFC 7616, RFC 8760): H(username:realm:password) for MD5
  and SHA-256, all a digest server needs. callrec never stores a plaintext password.

Passwords callrec makes itself (`generate_password`, from `secrets`) are shown once by
whoever asked for them and stored like any other.

An unknown login name costs the same argon2 work as a wrong password, so timing does
not tell which names exist. API tokens are stored only as their SHA-256.

An admin administers one organisation (`org_id`); an operator (role "operator", no
organisation) administers the platform: organisations, their domains and numbers. Admin
names are unique across the platform (they log in by name alone). A token acts for the
organisation (or the platform) of whoever created it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from storage.connection import MAX_ROW_ID, Database
from storage.errors import Conflict, InvalidValue, NotFound
from storage.models import Admin, ApiToken, OrgScope
from storage.organisations import existing_org, validate_language

__all__ = [
    "DIGEST_ALGORITHMS",
    "GENERATED_PASSWORD_LENGTH",
    "MIN_ADMIN_PASSWORD_LENGTH",
    "MIN_PORTAL_PASSWORD_LENGTH",
    "ROLE_ADMIN",
    "ROLE_OPERATOR",
    "Accounts",
    "Ha1Pair",
    "Passwords",
    "generate_password",
    "ha1",
    "ha1_pair",
    "token_digest",
]

DIGEST_ALGORITHMS = ("MD5", "SHA-256")
MIN_ADMIN_PASSWORD_LENGTH = 8
MIN_PORTAL_PASSWORD_LENGTH = 8
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_ADMIN_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TOKEN_COLUMNS = "id, name, actor, role, created_at, last_used_at, revoked_at, org_id"
_ADMIN_COLUMNS = "id, name, email, created_at, org_id, role, language"
ROLE_ADMIN = "admin"
ROLE_OPERATOR = "operator"


# -- SIP digest HA1 ------------------------------------------------------------------------


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Hex HA1 = H(username ":" realm ":" password) for `algorithm` (MD5 or SHA-256)."""
    data = f"{username}:{realm}:{password}".encode()
    normalised = algorithm.upper()
    if normalised == "MD5":
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    if normalised == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    raise InvalidValue("algorithm", f"unsupported digest algorithm {algorithm!r}")


@dataclass(frozen=True)
class Ha1Pair:
    """The HA1 of one username/realm/password for both digest algorithms."""

    md5: str
    sha256: str


def ha1_pair(username: str, realm: str, password: str) -> Ha1Pair:
    """HA1 for MD5 and SHA-256 at once, as stored for a user or a device."""
    return Ha1Pair(
        md5=ha1(username, realm, password, "MD5"),
        sha256=ha1(username, realm, password, "SHA-256"),
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Letters and digits a person reads off a screen and types into a phone without
# confusing them (no 0/O, 1/l/I).
_GENERATED_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GENERATED_PASSWORD_LENGTH = 16


def generate_password(length: int = GENERATED_PASSWORD_LENGTH) -> str:
    """A new random password (`secrets`; 16 characters of 57 carry ~93 bits), for SIP
    accounts and devices. The caller shows it once; only its HA1 or hash is stored."""
    return "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length))


# -- the hasher ----------------------------------------------------------------------------


class Passwords:
    """The one password hasher: argon2 for logins, HA1 pairs for SIP digest."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy_hash: str | None = None

    def ha1_pair(self, username: str, realm: str, password: str) -> Ha1Pair:
        return ha1_pair(username, realm, password)

    async def hash(self, password: str) -> str:
        """An argon2 hash of `password` (computed in a worker thread)."""
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches `stored_hash`. None (no such account) is checked
        against a dummy hash, with the same argon2 work, and is False."""
        if stored_hash is None and self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_hex(8))
        return await asyncio.to_thread(self._matches, stored_hash, password)

    def _matches(self, stored_hash: str | None, password: str) -> bool:
        try:
            matches = self.hasher.verify(stored_hash or self._dummy_hash or "", password)
        except (VerificationError, InvalidHashError):
            return False
        return matches and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)


# -- validation ----------------------------------------------------------------------------


def _validate_admin_name(name: str) -> str:
    if not isinstance(name, str) or not _ADMIN_NAME.fullmatch(name):
        raise InvalidValue(
            "name", f"invalid admin name {name!r}: 1 to 64 of letters, digits and . _ @ -"
        )
    return name


def _validate_admin_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_ADMIN_PASSWORD_LENGTH:
        raise InvalidValue(
            "password",
            f"admin password too short: at least {MIN_ADMIN_PASSWORD_LENGTH} characters",
        )


def _admin_from_row(row: sqlite3.Row) -> Admin:
    return Admin(
        int(row["id"]),
        str(row["name"]),
        row["email"],
        float(row["created_at"]),
        org_id=row["org_id"],
        role=str(row["role"]),
        language=row["language"],
    )


def _token_from_row(row: sqlite3.Row) -> ApiToken:
    return ApiToken(
        id=int(row["id"]),
        name=str(row["name"]),
        actor=str(row["actor"]),
        role=str(row["role"]),
        created_at=float(row["created_at"]),
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        org_id=row["org_id"],
    )


class Accounts:
    """Portal administrators and API tokens (users' portal passwords: `storage.users`)."""

    database: Database
    passwords: Passwords

    def __init__(self, database: Database, passwords: Passwords) -> None:
        self.database = database
        self.passwords = passwords

    # -- admins ----------------------------------------------------------------------------

    async def add_admin(
        self, org: OrgScope, name: str, password: str, *, email: str | None = None
    ) -> Admin:
        """Create a portal admin of `org`; only an argon2 hash of the password is stored."""
        return await self._add_admin(org, name, password, email=email)

    async def add_operator(self, name: str, password: str, *, email: str | None = None) -> Admin:
        """Create a platform operator (administers organisations, sees no calls)."""
        return await self._add_admin(None, name, password, email=email)

    async def _add_admin(
        self, org: OrgScope | None, name: str, password: str, *, email: str | None
    ) -> Admin:
        name = _validate_admin_name(name)
        _validate_admin_password(password)
        if email is not None and not EMAIL.fullmatch(email):
            raise InvalidValue("email", f"invalid email {email!r}")
        password_hash = await self.passwords.hash(password)
        created_at = time.time()
        role = ROLE_ADMIN if org is not None else ROLE_OPERATOR
        org_id = org.id if org is not None else None
        async with self.database.transaction() as session:
            if org is not None:
                await existing_org(session, org)
            existing = await session.one("SELECT 1 FROM admins WHERE name = ?", (name,))
            if existing is not None:
                raise Conflict(f"admin {name!r} already exists", "name")
            _, admin_id = await session.execute(
                "INSERT INTO admins (name, password_hash, email, created_at, org_id, role)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, password_hash, email, created_at, org_id, role),
            )
        assert admin_id is not None
        return Admin(admin_id, name, email, created_at, org_id=org_id, role=role)

    async def set_admin_password(self, name: str, password: str) -> None:
        _validate_admin_password(password)
        password_hash = await self.passwords.hash(password)
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE admins SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
        if not changed:
            raise NotFound(f"unknown admin {name!r}")

    async def set_operator_language(self, name: str, language: str | None) -> Admin:
        """An operator's own portal language (None: the browser's, else the server's).
        InvalidValue("language") for a language callrec does not speak; NotFound for
        an unknown operator (an organisation's admin reads the organisation's)."""
        language = validate_language(language)
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE admins SET language = ? WHERE name = ? AND role = ?",
                (language, name, ROLE_OPERATOR),
            )
            if not changed:
                raise NotFound(f"unknown operator {name!r}")
            row = await session.one(f"SELECT {_ADMIN_COLUMNS} FROM admins WHERE name = ?", (name,))
        assert row is not None
        return _admin_from_row(row)

    async def verify_admin(self, name: str, password: str) -> Admin | None:
        """The admin if `password` is theirs, else None (unknown names cost the same
        argon2 work, so timing does not tell which names exist)."""
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {_ADMIN_COLUMNS}, password_hash FROM admins WHERE name = ?", (name,)
            )
        stored = str(row["password_hash"]) if row is not None else None
        if not await self.passwords.verify(stored, password) or row is None:
            return None
        if stored is not None and self.passwords.needs_rehash(stored):
            await self.set_admin_password(name, password)
        return _admin_from_row(row)

    async def get_admin(self, name: str) -> Admin | None:
        """The admin or operator with this (platform-wide unique) name."""
        async with self.database.read() as session:
            row = await session.one(f"SELECT {_ADMIN_COLUMNS} FROM admins WHERE name = ?", (name,))
        return _admin_from_row(row) if row is not None else None

    async def list_admins(self, org: OrgScope) -> list[Admin]:
        """`org`'s admins by name."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_ADMIN_COLUMNS} FROM admins WHERE org_id = ? ORDER BY name", (org.id,)
            )
        return [_admin_from_row(row) for row in rows]

    async def list_operators(self) -> list[Admin]:
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_ADMIN_COLUMNS} FROM admins WHERE role = ? ORDER BY name",
                (ROLE_OPERATOR,),
            )
        return [_admin_from_row(row) for row in rows]

    async def remove_admin(self, name: str) -> None:
        async with self.database.transaction() as session:
            changed, _ = await session.execute("DELETE FROM admins WHERE name = ?", (name,))
        if not changed:
            raise NotFound(f"unknown admin {name!r}")

    # -- API tokens ------------------------------------------------------------------------

    async def create_api_token(
        self, org: OrgScope | None, name: str, actor: str, role: str = ROLE_ADMIN
    ) -> tuple[int, str]:
        """A new bearer token acting as `role` for `org` (None: an operator's, for the
        platform), returned once and stored as its SHA-256, and its id."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidValue("name", "token name must have 1 to 100 characters")
        if (org is None) != (role == ROLE_OPERATOR):
            raise InvalidValue("role", "an operator's token has no organisation, others one")
        token = "crt_" + secrets.token_urlsafe(32)
        async with self.database.transaction() as session:
            _, token_id = await session.execute(
                "INSERT INTO api_tokens (token_sha256, name, actor, role, created_at, org_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_digest(token), name, actor, role, time.time(), org.id if org else None),
            )
        assert token_id is not None
        return token_id, token

    async def verify_api_token(self, token: str) -> ApiToken | None:
        """The token's row if it exists and is not revoked."""
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens"
                " WHERE token_sha256 = ? AND revoked_at IS NULL",
                (token_digest(token),),
            )
        return _token_from_row(row) if row is not None else None

    async def list_api_tokens(self, org: OrgScope | None) -> list[ApiToken]:
        """`org`'s tokens (None: the operators')."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE org_id IS ? ORDER BY id",
                (org.id if org is not None else None,),
            )
        return [_token_from_row(row) for row in rows]

    async def revoke_api_token(self, org: OrgScope | None, token_id: int) -> bool:
        """Revoke an active token of `org` (None: an operator's); False if there is
        none with this id there."""
        if not 0 < token_id <= MAX_ROW_ID:
            return False
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE api_tokens SET revoked_at = ?"
                " WHERE id = ? AND org_id IS ? AND revoked_at IS NULL",
                (time.time(), token_id, org.id if org is not None else None),
            )
        return changed > 0
