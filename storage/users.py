"""Users and their devices: extensions, names, recording modes, SIP credentials and
portal passwords.

A user belongs to one organisation and has an extension (2 to 15 digits, unique within
the organisation only) and a recording mode that applies to all their devices. A device
is a SIP URI of one of their phones; its user part may authenticate too, so within an
organisation a username (an extension or a device's user part) belongs to one user
only, which is checked inside the write transaction. Every method takes the
organisation (`OrgScope`): nothing here reads or changes two organisations at once. A
user's digest realm is their organisation's domain. SIP passwords are kept only as digest HA1
values and portal passwords only as argon2 hashes, both made by `accounts.Passwords`.

One kind of user, whoever creates it (portal, API or CLI): an extension, a name, an
optional e-mail, a recording mode (`callrec.policy.DEFAULT_RECORDING_MODE` unless
given), SIP credentials (HA1 of the extension), an optional portal login and any number
of devices, each with its own SIP username (the user part of its URI; a bare username
becomes `sip:<username>@<domain>`) and its own password. A device whose username is the
extension authenticates with the user's password.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable
from urllib.parse import unquote

from callrec.policy import (
    DEFAULT_RECORDING_MODE,
    RECORDING_MODES,
    PolicyError,
    parse_language,
)
from storage.accounts import EMAIL, MIN_PORTAL_PASSWORD_LENGTH, Passwords
from storage.connection import Database, Session
from storage.errors import Conflict, InvalidValue, NotFound
from storage.models import Credentials, Device, OrgScope, User
from storage.organisations import existing_org

__all__ = ["KEEP", "USER_COLUMNS", "Users", "device_username", "user_from_row"]

_EXTENSION = re.compile(r"[0-9]{2,15}")
_MAX_NAME_LENGTH = 200

USER_COLUMNS = (
    "id, org_id, extension, name, email, recording_mode, realm, ha1_md5, ha1_sha256,"
    " created_at, language, portal_password_hash IS NOT NULL AS portal_login"
)
# A device named by its username alone (the portal's form, `callrec devices add`).
_BARE_USERNAME = re.compile(r"[A-Za-z0-9._+-]{1,64}")


class _Keep:
    """The default of an optional change: leave the value as it is."""


KEEP = _Keep()
_DEVICE_COLUMNS = "id, user_id, uri, username, kind, ha1_md5, ha1_sha256"


def device_username(uri: str) -> str | None:
    """The user part of a sip:/sips: URI (unescaped), None if it has none.

    Raises InvalidValue (field "uri") if `uri` is not a SIP URI with a host.
    """
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise InvalidValue("uri", f"invalid device URI {uri!r}: expected sip:user@host")
    user_info, at, host_part = rest.rpartition("@")
    host = re.split(r"[;?]", host_part, maxsplit=1)[0]
    if not host or any(ch.isspace() for ch in rest):
        raise InvalidValue("uri", f"invalid device URI {uri!r}: expected sip:user@host")
    if not at:
        return None
    user = unquote(user_info.partition(":")[0])
    if not user:
        raise InvalidValue("uri", f"invalid device URI {uri!r}: empty user part")
    return user


def _validate_extension(extension: str) -> str:
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise InvalidValue("extension", f"invalid extension {extension!r}: expected 2 to 15 digits")
    return extension


def _validate_mode(mode: str) -> str:
    if mode not in RECORDING_MODES:
        raise InvalidValue(
            "mode", f"invalid recording mode {mode!r}: expected one of {', '.join(RECORDING_MODES)}"
        )
    return mode


def _validate_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidValue("password", "invalid password: must not be empty")
    return password


def _validate_portal_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PORTAL_PASSWORD_LENGTH:
        raise InvalidValue(
            "portal_password",
            f"portal password must have at least {MIN_PORTAL_PASSWORD_LENGTH} characters",
        )
    return password


def _validate_name(name: object, extension: str) -> str:
    text = name.strip() if isinstance(name, str) else ""
    if not text or len(text) > _MAX_NAME_LENGTH:
        raise InvalidValue(
            "name", f"invalid name for {extension}: 1 to {_MAX_NAME_LENGTH} characters"
        )
    return text


def _validate_email(email: str | None, extension: str) -> str | None:
    if email is not None and (not isinstance(email, str) or not EMAIL.fullmatch(email)):
        raise InvalidValue("email", f"invalid email {email!r} for {extension}")
    return email


def device_uri(value: str, domain: str) -> str:
    """A device's URI from what a person typed: a sip:/sips: URI as it is, or a bare
    username as `sip:<username>@<domain>`. InvalidValue (field "uri") otherwise."""
    text = value.strip() if isinstance(value, str) else ""
    if ":" in text:
        return text
    if not _BARE_USERNAME.fullmatch(text):
        raise InvalidValue(
            "uri",
            f"invalid device {value!r}: a SIP URI (sip:user@host) or a username of letters,"
            " digits and . _ + -",
        )
    return f"sip:{text}@{domain}"


def _validate_realm(realm: str) -> str:
    if not isinstance(realm, str) or not realm or '"' in realm or "\\" in realm:
        raise InvalidValue("realm", f"invalid realm {realm!r}: must be non-empty, without quotes")
    return realm


def user_from_row(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        extension=row["extension"],
        name=row["name"],
        email=row["email"],
        recording_mode=row["recording_mode"],
        realm=row["realm"],
        ha1_md5=row["ha1_md5"],
        ha1_sha256=row["ha1_sha256"],
        created_at=row["created_at"],
        language=row["language"],
        org_id=int(row["org_id"]),
        portal_login=bool(row["portal_login"]),
    )


def _device_from_row(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        user_id=row["user_id"],
        uri=row["uri"],
        username=row["username"],
        kind=row["kind"],
        ha1_md5=row["ha1_md5"],
        ha1_sha256=row["ha1_sha256"],
    )


async def _user_or_none(session: Session, org: OrgScope, extension: str) -> User | None:
    row = await session.one(
        f"SELECT {USER_COLUMNS} FROM users WHERE org_id = ? AND extension = ?",
        (org.id, extension),
    )
    return user_from_row(row) if row is not None else None


async def _existing_user(session: Session, org: OrgScope, extension: str) -> User:
    user = await _user_or_none(session, org, extension)
    if user is None:
        raise NotFound(f"unknown extension {extension}")
    return user


async def _check_username_free(
    session: Session, org_id: int, username: str, owner_id: int | None, what: str, field: str
) -> None:
    """Raise Conflict unless `username` is unused in the organisation or already
    belongs to user `owner_id`."""
    row = await session.one(
        "SELECT id, extension FROM users WHERE org_id = ? AND extension = ? AND id IS NOT ?",
        (org_id, username, owner_id),
    )
    if row is not None:
        raise Conflict(f"{what}: {username!r} is the extension of user {row['extension']}", field)
    row = await session.one(
        "SELECT u.extension FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE u.org_id = ? AND d.username = ? AND d.user_id IS NOT ?",
        (org_id, username, owner_id),
    )
    if row is not None:
        raise Conflict(
            f"{what}: {username!r} is already a device username of user {row['extension']}",
            field,
        )


class Users:
    """Users, their devices and credentials."""

    database: Database
    passwords: Passwords

    def __init__(self, database: Database, passwords: Passwords) -> None:
        self.database = database
        self.passwords = passwords

    async def _insert_device(
        self,
        session: Session,
        user: User,
        uri: str,
        kind: str,
        password: str | None,
        field: str,
        domain: str,
    ) -> Device:
        try:
            uri = device_uri(uri, domain)
            username = device_username(uri)
        except InvalidValue as exc:
            raise InvalidValue(field, exc.message) from None
        if username == user.extension:
            username = None
        if not kind:
            raise InvalidValue("kind", "invalid device kind: must not be empty")
        if username is not None:
            await _check_username_free(
                session, user.org_id, username, user.id, f"device {uri}", field
            )
        existing = await session.one(
            "SELECT 1 FROM devices WHERE user_id = ? AND uri = ?", (user.id, uri)
        )
        if existing is not None:
            raise Conflict(f"device {uri} already belongs to user {user.extension}", field)
        ha1_md5 = ha1_sha256 = None
        if username is not None and password is not None:
            pair = self.passwords.ha1_pair(username, user.realm, password)
            ha1_md5, ha1_sha256 = pair.md5, pair.sha256
        _, device_id = await session.execute(
            "INSERT INTO devices (user_id, org_id, uri, username, kind, ha1_md5, ha1_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user.id, user.org_id, uri, username, kind, ha1_md5, ha1_sha256),
        )
        assert device_id is not None
        return Device(device_id, user.id, uri, username, kind, ha1_md5, ha1_sha256)

    async def add_user(
        self,
        org: OrgScope,
        extension: str,
        name: str,
        email: str | None = None,
        mode: str = DEFAULT_RECORDING_MODE.value,
        password: str | None = None,
        devices: Iterable[str] = (),
        portal_password: str | None = None,
    ) -> User:
        """Create a user of `org` with its devices (URIs or bare usernames, sharing the
        user's SIP password); HA1 values (realm: the organisation's domain) are kept if
        a password is given, and an argon2 hash of `portal_password` if one is (a
        portal login), all in one transaction."""
        _validate_extension(extension)
        name = _validate_name(name, extension)
        _validate_email(email, extension)
        _validate_mode(mode)
        if password is not None:
            _validate_password(password)
        portal_hash = None
        if portal_password is not None:
            portal_hash = await self.passwords.hash(_validate_portal_password(portal_password))
        # A lone string would otherwise be iterated character by character.
        device_uris = [devices] if isinstance(devices, str) else list(devices)
        created_at = time.time()
        async with self.database.transaction() as session:
            realm = _validate_realm((await existing_org(session, org)).domain)
            ha1_md5 = ha1_sha256 = None
            if password is not None:
                pair = self.passwords.ha1_pair(extension, realm, password)
                ha1_md5, ha1_sha256 = pair.md5, pair.sha256
            if await _user_or_none(session, org, extension) is not None:
                raise Conflict(f"user {extension} already exists", "extension")
            await _check_username_free(
                session, org.id, extension, None, f"extension {extension}", "extension"
            )
            _, user_id = await session.execute(
                "INSERT INTO users (org_id, extension, name, email, recording_mode, realm,"
                " ha1_md5, ha1_sha256, created_at, portal_password_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    org.id,
                    extension,
                    name,
                    email,
                    mode,
                    realm,
                    ha1_md5,
                    ha1_sha256,
                    created_at,
                    portal_hash,
                ),
            )
            assert user_id is not None
            user = User(
                user_id,
                extension,
                name,
                email,
                mode,
                realm,
                ha1_md5,
                ha1_sha256,
                created_at,
                org_id=org.id,
                portal_login=portal_hash is not None,
            )
            for uri in device_uris:
                await self._insert_device(session, user, uri, "phone", password, "devices", realm)
        return user

    async def add_device(
        self,
        org: OrgScope,
        extension: str,
        uri: str,
        kind: str = "phone",
        password: str | None = None,
    ) -> Device:
        """Add a device to a user: a SIP URI, or a bare username (`sip:<username>@<the
        organisation's domain>`). Its own username authenticates with `password`
        (without one it cannot log in until `set_device_password`)."""
        if password is not None:
            _validate_password(password)
        async with self.database.transaction() as session:
            domain = (await existing_org(session, org)).domain
            user = await _existing_user(session, org, extension)
            return await self._insert_device(session, user, uri, kind, password, "uri", domain)

    async def _existing_device(
        self, session: Session, org: OrgScope, extension: str, device_id: int
    ) -> tuple[User, Device]:
        user = await _existing_user(session, org, extension)
        row = await session.one(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ? AND user_id = ?",
            (device_id, user.id),
        )
        if row is None:
            raise NotFound(f"user {extension} has no device {device_id}")
        return user, _device_from_row(row)

    async def get_device(self, org: OrgScope, extension: str, device_id: int) -> Device:
        """Device `device_id` of `org`'s user `extension`; NotFound otherwise."""
        async with self.database.read() as session:
            return (await self._existing_device(session, org, extension, device_id))[1]

    async def set_device_password(
        self, org: OrgScope, extension: str, device_id: int, password: str
    ) -> Device:
        """Give a device's own username a new password (HA1 only; realm: the
        organisation's domain). InvalidValue when the device has no username of its own
        (it authenticates as the extension: set the user's password instead)."""
        _validate_password(password)
        async with self.database.transaction() as session:
            realm = _validate_realm((await existing_org(session, org)).domain)
            _, device = await self._existing_device(session, org, extension, device_id)
            if device.username is None:
                raise InvalidValue(
                    "password",
                    f"device {device.uri} signs in as extension {extension}: change the"
                    " user's SIP password instead",
                )
            pair = self.passwords.ha1_pair(device.username, realm, password)
            await session.execute(
                "UPDATE devices SET ha1_md5 = ?, ha1_sha256 = ? WHERE id = ?",
                (pair.md5, pair.sha256, device.id),
            )
            return (await self._existing_device(session, org, extension, device_id))[1]

    async def remove_device(self, org: OrgScope, extension: str, device_id: int) -> Device:
        """Remove one of a user's devices (its username can no longer authenticate);
        returns what was removed."""
        async with self.database.transaction() as session:
            _, device = await self._existing_device(session, org, extension, device_id)
            await session.execute("DELETE FROM devices WHERE id = ?", (device.id,))
        return device

    async def update_user(
        self,
        org: OrgScope,
        extension: str,
        *,
        name: str | _Keep = KEEP,
        email: str | _Keep | None = KEEP,
    ) -> User:
        """Change a user's name and e-mail (None: no e-mail); what is not given stays."""
        if not isinstance(name, _Keep):
            name = _validate_name(name, extension)
        if not isinstance(email, _Keep):
            email = _validate_email(email, extension)
        async with self.database.transaction() as session:
            user = await _existing_user(session, org, extension)
            await session.execute(
                "UPDATE users SET name = ?, email = ? WHERE id = ?",
                (
                    user.name if isinstance(name, _Keep) else name,
                    user.email if isinstance(email, _Keep) else email,
                    user.id,
                ),
            )
            return await _existing_user(session, org, extension)

    async def get_user(self, org: OrgScope, extension: str) -> User | None:
        """The user of `org` with this extension, or None."""
        async with self.database.read() as session:
            return await _user_or_none(session, org, extension)

    async def get_user_by_id(self, org: OrgScope, user_id: int) -> User | None:
        """The user of `org` with this row id, or None."""
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = ? AND org_id = ?", (user_id, org.id)
            )
        return user_from_row(row) if row is not None else None

    async def find_user_by_auth_username(self, org: OrgScope, username: str) -> User | None:
        """The user who authenticates as `username`: their extension or a device username."""
        credentials = await self.find_credentials(org, username)
        return credentials.user if credentials is not None else None

    async def find_credentials(self, org: OrgScope, username: str) -> Credentials | None:
        """User, realm and HA1 values for a digest username of `org`, or None if nobody
        there has it."""
        async with self.database.read() as session:
            user = await _user_or_none(session, org, username)
            if user is not None:
                return Credentials(user, username, user.realm, user.ha1_md5, user.ha1_sha256)
            row = await session.one(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE org_id = ? AND username = ?"
                " ORDER BY id LIMIT 1",
                (org.id, username),
            )
            if row is None:
                return None
            device = _device_from_row(row)
            owner = await session.one(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (device.user_id,)
            )
        if owner is None:
            return None
        user = user_from_row(owner)
        return Credentials(user, username, user.realm, device.ha1_md5, device.ha1_sha256)

    async def set_mode(self, org: OrgScope, extension: str, mode: str) -> User:
        """Change a user's recording mode; returns the updated user."""
        _validate_mode(mode)
        async with self.database.transaction() as session:
            user = await _existing_user(session, org, extension)
            await session.execute(
                "UPDATE users SET recording_mode = ? WHERE id = ?", (mode, user.id)
            )
            return await _existing_user(session, org, extension)

    async def set_language(self, org: OrgScope, extension: str, language: str | None) -> User:
        """Set a user's own language (None: the organisation's); returns the user."""
        if language is not None:
            try:
                language = parse_language(language)
            except PolicyError as exc:
                raise InvalidValue("language", exc.message) from exc
        async with self.database.transaction() as session:
            user = await _existing_user(session, org, extension)
            await session.execute("UPDATE users SET language = ? WHERE id = ?", (language, user.id))
            return await _existing_user(session, org, extension)

    async def set_password(self, org: OrgScope, extension: str, password: str) -> User:
        """Replace the HA1 values of a user and of their devices' usernames (realm: the
        organisation's domain, as it is now)."""
        _validate_password(password)
        async with self.database.transaction() as session:
            realm = _validate_realm((await existing_org(session, org)).domain)
            user = await _existing_user(session, org, extension)
            pair = self.passwords.ha1_pair(extension, realm, password)
            await session.execute(
                "UPDATE users SET realm = ?, ha1_md5 = ?, ha1_sha256 = ? WHERE id = ?",
                (realm, pair.md5, pair.sha256, user.id),
            )
            for row in await session.all(
                "SELECT id, username FROM devices WHERE user_id = ? AND username IS NOT NULL",
                (user.id,),
            ):
                device_pair = self.passwords.ha1_pair(row["username"], realm, password)
                await session.execute(
                    "UPDATE devices SET ha1_md5 = ?, ha1_sha256 = ? WHERE id = ?",
                    (device_pair.md5, device_pair.sha256, row["id"]),
                )
            return await _existing_user(session, org, extension)

    async def remove_user(self, org: OrgScope, extension: str) -> None:
        """Delete a user with their devices and registrations; call records stay."""
        async with self.database.transaction() as session:
            user = await _existing_user(session, org, extension)
            # Foreign keys cascade to devices and registrations.
            await session.execute("DELETE FROM users WHERE id = ?", (user.id,))

    async def list_users(self, org: OrgScope) -> list[User]:
        """Every user of `org`, by extension."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {USER_COLUMNS} FROM users WHERE org_id = ?"
                " ORDER BY length(extension), extension",
                (org.id,),
            )
        return [user_from_row(row) for row in rows]

    async def list_devices(self, org: OrgScope, extension: str) -> list[Device]:
        """The devices of a user, in the order they were added."""
        async with self.database.read() as session:
            user = await _existing_user(session, org, extension)
            rows = await session.all(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY id",
                (user.id,),
            )
        return [_device_from_row(row) for row in rows]

    # -- portal logins ---------------------------------------------------------------------

    async def set_portal_password(self, org: OrgScope, extension: str, password: str) -> None:
        """Set the password a user logs in to the portal with (argon2 hash only)."""
        if not isinstance(password, str) or len(password) < MIN_PORTAL_PASSWORD_LENGTH:
            raise InvalidValue(
                "password",
                f"portal password must have at least {MIN_PORTAL_PASSWORD_LENGTH} characters",
            )
        hashed = await self.passwords.hash(password)
        await self._set_portal_hash(org, extension, hashed)

    async def clear_portal_password(self, org: OrgScope, extension: str) -> None:
        """Take a user's portal login away; their portal sessions end with it."""
        await self._set_portal_hash(org, extension, None)

    async def _set_portal_hash(self, org: OrgScope, extension: str, hashed: str | None) -> None:
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "UPDATE users SET portal_password_hash = ? WHERE org_id = ? AND extension = ?",
                (hashed, org.id, extension),
            )
            if changed and hashed is None:
                await session.execute(
                    "DELETE FROM portal_sessions WHERE user_id IN"
                    " (SELECT id FROM users WHERE org_id = ? AND extension = ?)",
                    (org.id, extension),
                )
        if not changed:
            raise NotFound(f"unknown extension {extension}")

    async def verify_user_password(
        self, org: OrgScope, extension: str, password: str
    ) -> User | None:
        """The user of `org` if `password` is their portal password, else None (an
        unknown extension costs the same argon2 work)."""
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {USER_COLUMNS}, portal_password_hash FROM users"
                " WHERE org_id = ? AND extension = ?",
                (org.id, extension),
            )
        hashed = row["portal_password_hash"] if row is not None else None
        if not await self.passwords.verify(str(hashed) if hashed else None, password):
            return None
        return user_from_row(row) if row is not None else None
