"""Organisations (tenants), the numbers the trunk delivers to each, and their usage.

An organisation owns its users (with their devices and registrations), settings, calls,
recordings, exports and audit entries; every one of those rows carries its `org_id`.
Its SIP `domain` is what its phones register and call with (`sip:201@acme.example`) and
also the digest realm of its challenges, so it is unique across the platform (compared
without case). `slug` names it on the command line and in URLs.

Calls from the trunk are routed by the number called: a DID row maps one number, or a
range `first`..`last` of numbers of the same length, to one organisation (and, if it
says so, to one extension). Ranges never overlap across the platform, so a number
belongs to one organisation at most. A platform with a single organisation also takes
a number that no DID names as one of its extensions (what callrec did before
organisations existed).

Removing an organisation (`remove_organisation`, the operator's) takes everything it
owns with it, or refuses and changes nothing:
- refused while one of its calls is in progress (its recording is still being written),
  and while a recording of it is still under retention (`expires_at` after now) unless
  the caller says `purge_recordings`: recordings are what the organisation pays to keep,
  so they are never lost as a side effect;
- otherwise the files go first, through their owners (`RecordingFiles.delete_recording`:
  the local file and the object in the object store; the server-built export ZIPs; the
  uploaded notices), then the rows in one transaction: users with their devices and
  registrations, admins and API tokens, portal sessions, DIDs, settings, calls,
  recordings and their toggles, exports and the organisation's own audit log. The
  platform's log gets one `org.remove` entry saying what went. A file that cannot be
  deleted (an object store that is down) stops the removal before any row goes: the
  recordings whose files did go are marked purged, and a second try finishes the job.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callrec.policy import PolicyError, parse_language, parse_timezone
from storage.audit import append_audit, change_detail
from storage.connection import MAX_ROW_ID, Database, Session
from storage.errors import Conflict, InvalidValue, NotFound, StorageError, StorageUnavailable
from storage.files import RecordingFiles
from storage.models import Did, Organisation, OrgScope, Usage
from storage.notices import NoticeFiles

if TYPE_CHECKING:
    from storage.database import Store

__all__ = [
    "ORG_COLUMNS",
    "OrgHoldings",
    "Organisations",
    "did_from_row",
    "did_matches",
    "org_from_row",
    "remove_organisation",
    "validate_domain",
    "validate_language",
    "validate_slug",
]

ORG_COLUMNS = "id, slug, name, domain, language, timezone, created_at"
DID_COLUMNS = "id, org_id, first, last, extension"
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
# A host name (labels of letters, digits and hyphens) or an IPv4 address; no port.
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_NUMBER = re.compile(r"\+?[0-9]{2,20}")
_EXTENSION = re.compile(r"[0-9]{2,15}")
_MAX_NAME_LENGTH = 200
# A recording whose file has not been deleted (by the retention purge).
_NOT_PURGED = "purged_at IS NULL AND status != 'purged'"
# An organisation orders one export a month at most: this covers decades of them.
_ALL_EXPORTS = 100_000


def validate_slug(slug: object) -> str:
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise InvalidValue(
            "slug",
            f"invalid organisation slug {slug!r}: 1 to 40 lower-case letters, digits and"
            " hyphens (not at either end)",
        )
    return slug


def validate_domain(domain: object) -> str:
    """The domain in lower case; raises InvalidValue("domain")."""
    text = domain.strip().lower() if isinstance(domain, str) else ""
    if not _DOMAIN.fullmatch(text):
        raise InvalidValue(
            "domain", f"invalid SIP domain {domain!r}: a host name such as acme.example"
        )
    return text


def _validate_name(name: object) -> str:
    text = name.strip() if isinstance(name, str) else ""
    if not text or len(text) > _MAX_NAME_LENGTH:
        raise InvalidValue(
            "name", f"organisation name must have 1 to {_MAX_NAME_LENGTH} characters"
        )
    return text


def validate_language(value: str | None) -> str | None:
    """A language callrec speaks (None stays None); raises InvalidValue("language")."""
    if value is None:
        return None
    try:
        return parse_language(value)
    except PolicyError as exc:
        raise InvalidValue("language", exc.message) from exc


def _validate_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_timezone(value)
    except PolicyError as exc:
        raise InvalidValue("timezone", exc.message) from exc


def _validate_number(field: str, number: object) -> str:
    if not isinstance(number, str) or not _NUMBER.fullmatch(number.strip()):
        raise InvalidValue(field, f"invalid number {number!r}: 2 to 20 digits, '+' allowed first")
    return number.strip()


def org_from_row(row: sqlite3.Row) -> Organisation:
    return Organisation(
        id=int(row["id"]),
        slug=str(row["slug"]),
        name=str(row["name"]),
        domain=str(row["domain"]),
        language=row["language"],
        timezone=row["timezone"],
        created_at=float(row["created_at"]),
    )


def did_from_row(row: sqlite3.Row) -> Did:
    return Did(
        id=int(row["id"]),
        org_id=int(row["org_id"]),
        first=str(row["first"]),
        last=str(row["last"]),
        extension=row["extension"],
    )


def did_matches(did: Did, number: str) -> bool:
    """Whether `number` is one of the DID range's numbers (same length, in range)."""
    return len(number) == len(did.first) and did.first <= number <= did.last


async def _org_or_none(session: Session, slug: str) -> Organisation | None:
    row = await session.one(f"SELECT {ORG_COLUMNS} FROM organisations WHERE slug = ?", (slug,))
    return org_from_row(row) if row is not None else None


async def existing_org(session: Session, org: OrgScope) -> Organisation:
    """The organisation of `org`; NotFound if it is gone (or the scope is forged)."""
    row = await session.one(
        f"SELECT {ORG_COLUMNS} FROM organisations WHERE id = ? AND slug = ?", (org.id, org.slug)
    )
    if row is None:
        raise NotFound(f"unknown organisation {org.slug!r}")
    return org_from_row(row)


@dataclass(frozen=True)
class OrgHoldings:
    """What an organisation holds, as its removal counts it. `recordings` are those not
    purged (their files are somewhere), `kept_recordings` those of them still under
    retention at the time asked; `open_calls` are calls in progress."""

    users: int
    devices: int
    dids: int
    admins: int
    api_tokens: int
    sessions: int
    calls: int
    open_calls: int
    recordings: int
    kept_recordings: int
    exports: int

    def refusal(self, purge_recordings: bool) -> Conflict | None:
        """Why the organisation may not be removed now, None if it may."""
        if self.open_calls:
            return Conflict(
                f"{self.open_calls} call(s) of the organisation are in progress;"
                " remove it once they have ended",
                "calls",
            )
        if self.kept_recordings and not purge_recordings:
            return Conflict(
                f"{self.kept_recordings} recording(s) of the organisation are still under"
                " retention; export them first, and confirm that they are to be deleted",
                "purge_recordings",
            )
        return None

    def detail(self, files_deleted: int) -> str:
        """The platform audit entry's account of what went."""
        return (
            change_detail(
                users=self.users,
                devices=self.devices,
                dids=self.dids,
                admins=self.admins,
                api_tokens=self.api_tokens,
                calls=self.calls,
                recordings=self.recordings,
                recordings_under_retention=self.kept_recordings,
                recording_files_deleted=files_deleted,
                exports=self.exports,
            )
            or "nothing but the organisation"
        )


# Each count names its organisation (and the time, where it matters) as parameters.
_HOLDINGS: tuple[tuple[str, str], ...] = (
    ("users", "SELECT COUNT(*) FROM users WHERE org_id = ?"),
    ("devices", "SELECT COUNT(*) FROM devices WHERE org_id = ?"),
    ("dids", "SELECT COUNT(*) FROM dids WHERE org_id = ?"),
    ("admins", "SELECT COUNT(*) FROM admins WHERE org_id = ?"),
    ("api_tokens", "SELECT COUNT(*) FROM api_tokens WHERE org_id = ? AND revoked_at IS NULL"),
    ("sessions", "SELECT COUNT(*) FROM portal_sessions WHERE org_id = ? AND expires_at > ?"),
    ("calls", "SELECT COUNT(*) FROM calls WHERE org_id = ?"),
    ("open_calls", "SELECT COUNT(*) FROM calls WHERE org_id = ? AND ended_at IS NULL"),
    ("recordings", f"SELECT COUNT(*) FROM recordings WHERE org_id = ? AND {_NOT_PURGED}"),
    (
        "kept_recordings",
        f"SELECT COUNT(*) FROM recordings WHERE org_id = ? AND {_NOT_PURGED} AND expires_at > ?",
    ),
    ("exports", "SELECT COUNT(*) FROM exports WHERE org_id = ?"),
)

# The rows of an organisation, children before their parents (foreign keys are on).
_REMOVAL_STATEMENTS = (
    "DELETE FROM recording_toggles WHERE recording_id IN"
    " (SELECT id FROM recordings WHERE org_id = ?)",
    "DELETE FROM recordings WHERE org_id = ?",
    "DELETE FROM calls WHERE org_id = ?",
    "DELETE FROM exports WHERE org_id = ?",
    "DELETE FROM portal_sessions WHERE org_id = ?",
    "DELETE FROM api_tokens WHERE org_id = ?",
    "DELETE FROM admins WHERE org_id = ?",
    "DELETE FROM registrations WHERE user_id IN (SELECT id FROM users WHERE org_id = ?)",
    "DELETE FROM devices WHERE org_id = ?",
    "DELETE FROM users WHERE org_id = ?",
    "DELETE FROM dids WHERE org_id = ?",
    "DELETE FROM org_settings WHERE org_id = ?",
    "DELETE FROM audit WHERE org_id = ?",
    "DELETE FROM organisations WHERE id = ?",
)


async def _holdings(session: Session, org: OrgScope, now: float) -> OrgHoldings:
    """What `org` holds at `now`; NotFound if it is gone."""
    await existing_org(session, org)
    select = ", ".join(f"({sql}) AS {name}" for name, sql in _HOLDINGS)
    params: list[float] = []
    for _, sql in _HOLDINGS:
        params.extend([org.id, now][: sql.count("?")])
    row = await session.one(f"SELECT {select}", params)
    assert row is not None
    return OrgHoldings(**{name: int(row[name]) for name, _ in _HOLDINGS})


class Organisations:
    """Organisations, their DIDs and their usage."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    async def add_organisation(
        self,
        slug: str,
        name: str,
        domain: str,
        *,
        language: str | None = None,
        timezone: str | None = None,
    ) -> Organisation:
        """Create an organisation; Conflict if the slug or the domain is taken."""
        slug = validate_slug(slug)
        name = _validate_name(name)
        domain = validate_domain(domain)
        language = validate_language(language)
        timezone = _validate_timezone(timezone)
        created_at = time.time()
        async with self.database.transaction() as session:
            if await _org_or_none(session, slug) is not None:
                raise Conflict(f"organisation {slug!r} already exists", "slug")
            taken = await session.one("SELECT slug FROM organisations WHERE domain = ?", (domain,))
            if taken is not None:
                raise Conflict(
                    f"domain {domain} belongs to organisation {taken['slug']!r}", "domain"
                )
            _, org_id = await session.execute(
                "INSERT INTO organisations (slug, name, domain, language, timezone, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (slug, name, domain, language, timezone, created_at),
            )
        assert org_id is not None
        return Organisation(org_id, slug, name, domain, language, timezone, created_at)

    async def update_organisation(
        self,
        org: OrgScope,
        *,
        name: str | None = None,
        domain: str | None = None,
        language: str | None = None,
        timezone: str | None = None,
    ) -> Organisation:
        """Change what is given (None: unchanged). A new domain is a new digest realm:
        SIP passwords set before it must be set again."""
        changes: dict[str, str] = {}
        if name is not None:
            changes["name"] = _validate_name(name)
        if domain is not None:
            changes["domain"] = validate_domain(domain)
        if language is not None:
            changes["language"] = validate_language(language) or ""
        if timezone is not None:
            changes["timezone"] = _validate_timezone(timezone) or ""
        async with self.database.transaction() as session:
            current = await existing_org(session, org)
            if "domain" in changes:
                taken = await session.one(
                    "SELECT slug FROM organisations WHERE domain = ? AND id != ?",
                    (changes["domain"], current.id),
                )
                if taken is not None:
                    raise Conflict(
                        f"domain {changes['domain']} belongs to organisation {taken['slug']!r}",
                        "domain",
                    )
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                await session.execute(
                    f"UPDATE organisations SET {assignments} WHERE id = ?",
                    (*changes.values(), current.id),
                )
            return await existing_org(session, org)

    async def get_organisation(self, slug: str) -> Organisation | None:
        async with self.database.read() as session:
            return await _org_or_none(session, slug)

    async def organisation(self, org: OrgScope) -> Organisation:
        """The organisation of a scope; NotFound if it is gone."""
        async with self.database.read() as session:
            return await existing_org(session, org)

    async def organisation_by_id(self, org_id: int) -> Organisation | None:
        if not 0 < org_id <= MAX_ROW_ID:
            return None
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {ORG_COLUMNS} FROM organisations WHERE id = ?", (org_id,)
            )
        return org_from_row(row) if row is not None else None

    async def organisation_by_domain(self, domain: str) -> Organisation | None:
        async with self.database.read() as session:
            row = await session.one(
                f"SELECT {ORG_COLUMNS} FROM organisations WHERE domain = ?", (domain.lower(),)
            )
        return org_from_row(row) if row is not None else None

    async def list_organisations(self) -> list[Organisation]:
        async with self.database.read() as session:
            rows = await session.all(f"SELECT {ORG_COLUMNS} FROM organisations ORDER BY slug")
        return [org_from_row(row) for row in rows]

    async def org_scope(self, slug: str | None) -> OrgScope:
        """The scope of organisation `slug`; None: the only organisation there is.
        NotFound for an unknown slug; InvalidValue("org") when None is ambiguous."""
        if slug is not None:
            found = await self.get_organisation(slug)
            if found is None:
                raise NotFound(f"unknown organisation {slug!r}")
            return found.scope
        orgs = await self.list_organisations()
        if len(orgs) != 1:
            names = ", ".join(org.slug for org in orgs) or "none"
            raise InvalidValue(
                "org", f"there are {len(orgs)} organisations ({names}): say which one"
            )
        return orgs[0].scope

    # -- removal (see the module docstring and `remove_organisation`) --------------------

    async def organisation_holdings(self, org: OrgScope, now: float) -> OrgHoldings:
        """What `org` holds at `now`; NotFound if it is gone."""
        async with self.database.read() as session:
            return await _holdings(session, org, now)

    async def organisation_recording_files(self, org: OrgScope) -> list[tuple[int, str]]:
        """The id and path of each of `org`'s recordings whose file was not purged."""
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT id, path FROM recordings WHERE org_id = ? AND {_NOT_PURGED} ORDER BY id",
                (org.id,),
            )
        return [(int(row["id"]), str(row["path"])) for row in rows]

    async def mark_recordings_gone(
        self, org: OrgScope, recording_ids: list[int], at: float
    ) -> None:
        """Mark `org`'s recordings whose files a removal deleted as purged (a removal
        that stopped half-way leaves no row naming a file that is gone)."""
        async with self.database.transaction() as session:
            for recording_id in recording_ids:
                await session.execute(
                    "UPDATE recordings SET status = 'purged', purged_at = ?"
                    " WHERE id = ? AND org_id = ?",
                    (at, recording_id, org.id),
                )

    async def delete_organisation(
        self,
        org: OrgScope,
        *,
        now: float,
        purge_recordings: bool,
        files_gone: set[int],
        files_deleted: int,
        actor: str,
        address: str | None = None,
    ) -> OrgHoldings:
        """Delete `org` and every row it owns in one transaction, with one `org.remove`
        entry in the platform's audit log; returns what it held. Refused (Conflict,
        nothing changed) as `OrgHoldings.refusal` says, and when a recording other than
        those in `files_gone` (whose files the caller deleted) still has a file."""
        async with self.database.transaction() as session:
            holdings = await _holdings(session, org, now)
            refusal = holdings.refusal(purge_recordings)
            if refusal is not None:
                raise refusal
            rows = await session.all(
                f"SELECT id FROM recordings WHERE org_id = ? AND {_NOT_PURGED}", (org.id,)
            )
            if {int(row["id"]) for row in rows} - files_gone:
                raise Conflict(
                    "a recording of the organisation was filed meanwhile; try again",
                    "purge_recordings",
                )
            for statement in _REMOVAL_STATEMENTS:
                await session.execute(statement, (org.id,))
            await append_audit(
                session,
                None,
                actor,
                "org.remove",
                f"org:{org.slug}",
                at=now,
                address=address,
                detail=holdings.detail(files_deleted),
            )
        return holdings

    # -- numbers from the trunk --------------------------------------------------------

    async def add_did(
        self, org: OrgScope, first: str, last: str | None = None, extension: str | None = None
    ) -> Did:
        """Give numbers `first`..`last` (one number if `last` is None) to `org`, ringing
        `extension` if given (else the number itself as an extension). Conflict if any
        of them belongs to a range already."""
        first = _validate_number("first", first)
        last = first if last is None else _validate_number("last", last)
        if len(last) != len(first) or last < first:
            raise InvalidValue("last", f"{first}..{last}: the range must run upwards, same length")
        if extension is not None and not _EXTENSION.fullmatch(extension):
            raise InvalidValue("extension", f"invalid extension {extension!r}: 2 to 15 digits")
        async with self.database.transaction() as session:
            await existing_org(session, org)
            clash = await session.one(
                "SELECT d.first, d.last, o.slug FROM dids d JOIN organisations o"
                " ON o.id = d.org_id WHERE length(d.first) = ? AND d.first <= ? AND d.last >= ?",
                (len(first), last, first),
            )
            if clash is not None:
                owner = "this organisation" if clash["slug"] == org.slug else "another organisation"
                raise Conflict(
                    f"{first}..{last} overlaps {clash['first']}..{clash['last']} of {owner}",
                    "first",
                )
            _, did_id = await session.execute(
                "INSERT INTO dids (org_id, first, last, extension, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (org.id, first, last, extension, time.time()),
            )
        assert did_id is not None
        return Did(did_id, org.id, first, last, extension)

    async def list_dids(self, org: OrgScope) -> list[Did]:
        async with self.database.read() as session:
            rows = await session.all(
                f"SELECT {DID_COLUMNS} FROM dids WHERE org_id = ? ORDER BY first", (org.id,)
            )
        return [did_from_row(row) for row in rows]

    async def all_dids(self) -> list[Did]:
        """Every organisation's numbers (the SIP side's routing table)."""
        async with self.database.read() as session:
            rows = await session.all(f"SELECT {DID_COLUMNS} FROM dids ORDER BY first")
        return [did_from_row(row) for row in rows]

    async def remove_did(self, org: OrgScope, did_id: int) -> None:
        if not 0 < did_id <= MAX_ROW_ID:
            raise NotFound(f"no number range {did_id}")
        async with self.database.transaction() as session:
            changed, _ = await session.execute(
                "DELETE FROM dids WHERE id = ? AND org_id = ?", (did_id, org.id)
            )
        if not changed:
            raise NotFound(f"no number range {did_id}")

    # -- usage -------------------------------------------------------------------------

    async def usage(
        self, org: OrgScope, since: float, until: float, retention_days: int | None
    ) -> Usage:
        """What `org` used in [since, until): users on recording now (always or on
        demand), recordings started in the period, their recorded seconds, and the bytes
        of its recordings stored now (not purged). `retention_days` (the setting in
        force) is passed through for the bill."""
        async with self.database.read() as session:
            await existing_org(session, org)
            users = await session.one(
                "SELECT COUNT(*) AS n FROM users WHERE org_id = ? AND recording_mode != 'never'",
                (org.id,),
            )
            period = await session.one(
                "SELECT COUNT(*) AS n, COALESCE(SUM(duration_s), 0) AS seconds FROM recordings"
                " WHERE org_id = ? AND started_at >= ? AND started_at < ?"
                " AND status IN ('complete', 'recovered', 'partial', 'purged')",
                (org.id, since, until),
            )
            stored = await session.one(
                "SELECT COALESCE(SUM(bytes), 0) AS b FROM recordings"
                " WHERE org_id = ? AND status != 'purged'",
                (org.id,),
            )
        return Usage(
            org_id=org.id,
            since=since,
            until=until,
            recording_users=int(users["n"]) if users is not None else 0,
            recordings=int(period["n"]) if period is not None else 0,
            recorded_seconds=float(period["seconds"]) if period is not None else 0.0,
            bytes_stored=int(stored["b"]) if stored is not None else 0,
            retention_days=retention_days,
        )


def _failure(exc: StorageError | OSError) -> str:
    """Why a file could not be deleted, without a server path."""
    if isinstance(exc, StorageError):
        return exc.message
    return exc.strerror or type(exc).__name__


async def remove_organisation(
    store: Store,
    files: RecordingFiles,
    notices: NoticeFiles,
    org: OrgScope,
    *,
    now: float,
    purge_recordings: bool,
    actor: str,
    address: str | None = None,
) -> OrgHoldings:
    """Remove `org` with everything it owns (see the module docstring): its recording
    files (local and in the object store) and export ZIPs through `files`, its uploaded
    notices through `notices`, then its rows. Returns what it held. Conflict (nothing
    changed) while a call is in progress, or while a recording is under retention
    unless `purge_recordings`; StorageUnavailable if a file cannot be deleted (the
    organisation stays; the files that went are marked purged)."""
    refusal = (await store.organisation_holdings(org, now)).refusal(purge_recordings)
    if refusal is not None:
        raise refusal
    gone: list[int] = []
    deleted = 0
    for recording_id, path in await store.organisation_recording_files(org):
        try:
            deleted += await files.delete_recording(path)
        except InvalidValue:
            pass  # a path outside the recordings folder names no file of ours
        except (StorageError, OSError) as exc:
            await store.mark_recordings_gone(org, gone, now)
            raise StorageUnavailable(
                f"the file of recording {recording_id} could not be deleted"
                f" ({_failure(exc)}); the organisation is kept, {len(gone)} recording"
                " file(s) were deleted: try again"
            ) from exc
        gone.append(recording_id)
    for job in await store.list_exports(org, limit=_ALL_EXPORTS):
        await asyncio.to_thread(files.delete_export, job)
    holdings = await store.delete_organisation(
        org,
        now=now,
        purge_recordings=purge_recordings,
        files_gone=set(gone),
        files_deleted=deleted,
        actor=actor,
        address=address,
    )
    await asyncio.to_thread(notices.remove_all, org.id)
    return holdings
