"""The REST API under /api/v1/ (JSON; session cookie + CSRF header, or a bearer token).

Validation errors answer 422 naming the field, unknown or invisible ids 404, and
recordings cannot be deleted (405). Every route but the operator's works inside the
asker's organisation (`OrgScope` from their login or token, handed to every store
read): another organisation's users, calls, recordings, exports and tokens are 404.
A user sees only calls they took part in and the recordings of those calls (or
recordings they own); an admin sees all of their organisation's. An operator manages
organisations under /api/v1/orgs and sees none of their calls (403 elsewhere).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from callrec.policy import (
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    DEFAULT_RECORDING_MODE,
    PolicyError,
    RecordingMode,
    SettingKey,
    bulk_download_allowed,
    check_settings,
    parse_language,
)
from callrec.services import records
from callrec.services.presentation import N_, Presentation
from callrec.services.records import audit_json, device_json, export_json, media_type, user_json
from portal.auth import ROLE_ADMIN, Identity, client_address
from portal.context import (
    ApiError,
    PortalContext,
    check_operator,
    check_role,
    context_of,
    identity_of,
    org_of,
    parse_id,
    session_of,
)
from portal.i18n import presentation_for
from portal.notice import check_uploaded_choice, current_notice
from portal.openapi import openapi_schema
from portal.recording_audio import open_recording, serve_recording
from portal.recording_settings import (
    load_settings,
    save_settings,
    settings_json,
    validate_settings_patch,
)
from storage.accounts import MIN_PORTAL_PASSWORD_LENGTH, generate_password
from storage.audit import change_detail
from storage.calls import CallQuery
from storage.errors import StorageError
from storage.models import (
    PLAYABLE_STATUSES,
    CallRow,
    Device,
    OrgScope,
    Recording,
    RecordingListing,
    User,
    format_timestamp,
)
from storage.recordings import RecordedSpan
from storage.search import MAX_SEARCH_LENGTH, normalise_search

API = "/api/v1"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
_EXTENSION = re.compile(r"[0-9]{2,15}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
RETENTION_NOTE = "Changes to retention affect new recordings only."

# -- access ----------------------------------------------------------------------------


def _asker(request: web.Request) -> Identity:
    identity = identity_of(request)
    if identity is None:
        raise ApiError(401, "log in or send an API bearer token")
    return identity


def require(request: web.Request, *, admin: bool = False) -> Identity:
    """The asker, who must belong to an organisation (and be its admin if `admin`)."""
    identity = _asker(request)
    check_role(identity, admin=admin)
    return identity


def require_operator(request: web.Request) -> Identity:
    """The asker, who must be a platform operator."""
    return check_operator(_asker(request))


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the body must be JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object", "body")
    return data


# -- filters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Paging:
    """A 1-based page number and its size."""

    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def _parse_date(field: str, text: str, *, end: bool, zone: Presentation) -> float:
    """Unix seconds of YYYY-MM-DD (a calendar day in `zone`'s time zone; `end` means the
    end of that day) or of an ISO time (in that zone unless it names an offset)."""
    try:
        if len(text) == 10:
            start, stop = zone.day_bounds(text)
            return stop if end else start
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(
            422, N_("{field} must be a date YYYY-MM-DD or an ISO time", field=field), field
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone.timezone)
    return moment.timestamp()


def _parse_int(query: Mapping[str, str], field: str, default: int, low: int, high: int) -> int:
    text = query.get(field, "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(
            422,
            N_(
                "{field} must be a whole number from {low} to {high}",
                field=field,
                low=low,
                high=high,
            ),
            field,
        )
    return int(text)


def _parse_bool(query: Mapping[str, str], field: str) -> bool:
    text = query.get(field, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ApiError(422, N_("{field} must be true or false", field=field), field)


def parse_extension_filter(query: Mapping[str, str]) -> str | None:
    text = query.get("extension", "").strip()
    if not text:
        return None
    if not _EXTENSION.fullmatch(text):
        raise ApiError(422, N_("extension must be 2 to 15 digits"), "extension")
    return text


def parse_search(query: Mapping[str, str]) -> str | None:
    """`q`: text in a party's name or number (None when empty); at most
    MAX_SEARCH_LENGTH characters, otherwise 422."""
    text = query.get("q", "")
    if len(text) > MAX_SEARCH_LENGTH:
        raise ApiError(
            422, N_("q must have at most {count} characters", count=MAX_SEARCH_LENGTH), "q"
        )
    return normalise_search(text) or None


def parse_call_filters(
    query: Mapping[str, str], identity: Identity, zone: Presentation
) -> tuple[CallQuery, Paging]:
    """Filters of GET /calls, GET /recordings and the Reports page: from, to (days in
    `zone`'s time zone), extension, q (a name or part of a number), recorded_only,
    page, page_size."""
    since_text = query.get("from", "").strip()
    until_text = query.get("to", "").strip()
    since = _parse_date("from", since_text, end=False, zone=zone) if since_text else None
    until = _parse_date("to", until_text, end=True, zone=zone) if until_text else None
    if since is not None and until is not None and until <= since:
        raise ApiError(422, N_("to must be after from"), "to")
    call_query = CallQuery(
        since=since,
        until=until,
        extension=parse_extension_filter(query),
        recorded_only=_parse_bool(query, "recorded_only"),
        scope_ext=identity.scope_ext,
        search=parse_search(query),
    )
    paging = Paging(
        page=_parse_int(query, "page", 1, 1, 1_000_000),
        page_size=_parse_int(query, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )
    return call_query, paging


# -- JSON shapes -----------------------------------------------------------------------


def _links(recording: Recording) -> dict[str, str | None]:
    """Where the API serves a recording's audio, while it is playable."""
    playable = recording.status in PLAYABLE_STATUSES and recording.purged_at is None
    base = f"{API}/recordings/{recording.id}"
    return {
        "audio_url": f"{base}/audio" if playable else None,
        "download_url": f"{base}/download" if playable else None,
    }


# Recorded spans by recording id (`Store.recorded_spans`).
Spans = Mapping[int, list[RecordedSpan]]


def recording_json(recording: Recording, spans: Spans, zone: Presentation) -> dict[str, Any]:
    """The recording's one JSON shape (with its recorded spans), and links to its audio."""
    return {
        **records.recording_json(recording, spans.get(recording.id, []), zone),
        **_links(recording),
    }


def call_json(row: CallRow, spans: Spans, zone: Presentation) -> dict[str, Any]:
    """The call's one JSON shape, with the recordings the caller may see."""
    return {
        **records.call_json(row.call),
        "recorded": bool(row.recordings) or row.call.recorded,
        "recordings": [recording_json(recording, spans, zone) for recording in row.recordings],
    }


def listing_json(listing: RecordingListing, spans: Spans, zone: Presentation) -> dict[str, Any]:
    """A recording and its call, with links to its audio."""
    recording = listing.recording
    return {
        **records.listing_json(listing, spans.get(recording.id, []), zone),
        **_links(recording),
    }


def page_json(items: list[Any], paging: Paging, total: int) -> dict[str, Any]:
    return {"items": items, "page": paging.page, "page_size": paging.page_size, "total": total}


# -- operations shared with the pages ---------------------------------------------------


def _field_text(data: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = data.get(field)
    if value is None or value == "":
        if required:
            raise ApiError(422, N_("{field} is required", field=field), field)
        return None
    if not isinstance(value, str):
        raise ApiError(422, N_("{field} must be text", field=field), field)
    return value.strip()


def validate_mode(value: object) -> RecordingMode:
    try:
        return RecordingMode.parse(value)
    except PolicyError as exc:
        raise ApiError(422, exc.message, "mode") from exc


async def known_user(context: PortalContext, org: OrgScope, extension: str) -> User:
    """`org`'s user with this extension; 404 (also for another organisation's)."""
    valid = _EXTENSION.fullmatch(extension)
    user = await context.store.get_user(org, extension) if valid else None
    if user is None:
        raise ApiError(404, N_("no user with extension {extension}", extension=extension))
    return user


async def change_mode(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    requested: object,
) -> User:
    """Set a user's recording mode and audit it."""
    org = org_of(identity)
    user = await known_user(context, org, extension)
    mode = validate_mode(requested)
    updated = await context.store.set_mode(org, extension, mode)
    await context.audit(
        request, identity, "mode.change", f"user:{extension}", f"{user.recording_mode} -> {mode}"
    )
    return updated


async def change_language(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    requested: object,
) -> User:
    """Set a user's own portal language (None or "": the organisation's) and audit it."""
    org = org_of(identity)
    await known_user(context, org, extension)
    language: str | None = None
    if requested is not None and requested != "":
        try:
            language = parse_language(requested)
        except PolicyError as exc:
            raise ApiError(422, N_("choose one of the languages"), "language") from exc
    user = await context.store.set_language(org, extension, language)
    await context.audit(
        request, identity, "language.change", f"user:{extension}", language or "default"
    )
    return user


@dataclass(frozen=True)
class Generated:
    """What an operation made, with the password it generated (shown once by the
    caller, then forgotten; only its HA1 is stored)."""

    user: User
    password: str | None = None
    device: Device | None = None


def _flag(data: Mapping[str, Any], field: str) -> bool:
    value = data.get(field, False)
    if not isinstance(value, bool):
        raise ApiError(422, N_("{field} must be true or false", field=field), field)
    return value


def _sip_password(data: Mapping[str, Any], field: str = "password") -> tuple[str | None, bool]:
    """The SIP password given in `field`, or a new one when `generate_password` is true
    (and whether it was generated)."""
    given = _field_text(data, field, required=False)
    if _flag(data, "generate_password"):
        if given is not None:
            raise ApiError(
                422, N_("give a password or generate_password, not both"), "generate_password"
            )
        return generate_password(), True
    return given, False


def _required_sip_password(data: Mapping[str, Any]) -> tuple[str, bool]:
    password, generated = _sip_password(data)
    if password is None:
        raise ApiError(422, N_("give a password or generate_password"), "password")
    return password, generated


def _valid_name(data: Mapping[str, Any]) -> str:
    name = _field_text(data, "name", required=True)
    assert name is not None
    if not 1 <= len(name) <= 200:
        raise ApiError(422, N_("name must have 1 to 200 characters"), "name")
    return name


def _valid_email(data: Mapping[str, Any]) -> str | None:
    email = _field_text(data, "email", required=False)
    if email is not None and not _EMAIL.fullmatch(email):
        raise ApiError(422, N_("email must look like name@example.org"), "email")
    return email


def parse_portal_password(data: Mapping[str, Any], field: str = "portal_password") -> str | None:
    value = _field_text(data, field, required=False)
    if value is not None and len(value) < MIN_PORTAL_PASSWORD_LENGTH:
        raise ApiError(
            422,
            N_(
                "{field} must have at least {count} characters",
                field=field,
                count=MIN_PORTAL_PASSWORD_LENGTH,
            ),
            field,
        )
    return value


async def add_user(
    context: PortalContext, request: web.Request, identity: Identity, data: Mapping[str, Any]
) -> Generated:
    """Create a user with the fields every door shares: extension, name, email, mode
    (on-demand unless given), SIP password (given, or generated with
    `generate_password`), portal password (a portal login, optional) and devices (SIP
    URIs or usernames sharing the SIP password). Audited without the passwords."""
    extension = _field_text(data, "extension", required=True)
    assert extension is not None
    if not _EXTENSION.fullmatch(extension):
        raise ApiError(422, N_("extension must be 2 to 15 digits"), "extension")
    name = _valid_name(data)
    email = _valid_email(data)
    mode = validate_mode(data.get("mode", DEFAULT_RECORDING_MODE))
    password, generated = _sip_password(data)
    portal_password = parse_portal_password(data)
    devices = data.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise ApiError(422, N_("devices must be a list of SIP URIs"), "devices")
    org = org_of(identity)
    if await context.store.get_user(org, extension) is not None:
        raise ApiError(409, N_("user {extension} already exists", extension=extension), "extension")
    # A refused value (InvalidValue) or a username already taken (Conflict) names its
    # field; the error middleware answers it.
    user = await context.store.add_user(
        org,
        extension,
        name,
        email=email,
        mode=mode,
        password=password,
        devices=devices,
        portal_password=portal_password,
    )
    detail = change_detail(
        mode=str(mode),
        sip_password="generated" if generated else ("set" if password else "none"),
        portal_login=portal_password is not None,
        devices=len(devices),
    )
    await context.audit(request, identity, "user.add", f"user:{extension}", detail)
    return Generated(user, password if generated else None)


async def change_user(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    data: Mapping[str, Any],
) -> User:
    """Change a user's name and e-mail ("" or null: none); audited with the new values."""
    org = org_of(identity)
    await known_user(context, org, extension)
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = _valid_name(data)
    if "email" in data:
        changes["email"] = _valid_email(data)
    user = await context.store.update_user(org, extension, **changes)
    if changes:
        await context.audit(
            request,
            identity,
            "user.change",
            f"user:{extension}",
            json.dumps(changes, sort_keys=True),
        )
    return user


async def change_sip_password(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    data: Mapping[str, Any],
) -> Generated:
    """Set a user's SIP password (given, or generated with `generate_password`)."""
    org = org_of(identity)
    await known_user(context, org, extension)
    password, generated = _required_sip_password(data)
    user = await context.store.set_password(org, extension, password)
    detail = "generated" if generated else "set"
    await context.audit(request, identity, "password.set", f"user:{extension}", detail)
    return Generated(user, password if generated else None)


async def change_portal_login(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    password: str | None,
) -> None:
    """Give a user a portal login with `password`, or take it away (None; their
    portal sessions end)."""
    org = org_of(identity)
    await known_user(context, org, extension)
    if password is None:
        await context.store.clear_portal_password(org, extension)
        await context.audit(request, identity, "portal_password.remove", f"user:{extension}")
        return
    await context.store.set_portal_password(org, extension, password)
    await context.audit(request, identity, "portal_password.set", f"user:{extension}")


async def remove_user(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    *,
    confirmed: bool,
) -> User:
    """Delete a user with their devices and sessions (their calls and recordings stay).
    An unknown user (or another organisation's) is a 404 before `confirmed` counts: the
    page's confirmation box is checked only for a user who is there to remove."""
    org = org_of(identity)
    user = await known_user(context, org, extension)
    if not confirmed:
        raise ApiError(422, N_("Tick the box to confirm the removal."), "confirm")
    await context.store.remove_user(org, extension)
    await context.audit(request, identity, "user.remove", f"user:{extension}", user.name)
    return user


async def add_device(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    data: Mapping[str, Any],
) -> Generated:
    """Add a device (`uri`, or `username` on the organisation's domain) with its own
    password (given, or generated with `generate_password`)."""
    org = org_of(identity)
    user = await known_user(context, org, extension)
    uri = _field_text(data, "uri", required=False) or _field_text(data, "username", required=False)
    if uri is None:
        raise ApiError(422, N_("{field} is required", field="uri"), "uri")
    kind = _field_text(data, "kind", required=False) or "phone"
    password, generated = _sip_password(data)
    device = await context.store.add_device(org, extension, uri, kind, password)
    detail = change_detail(
        uri=device.uri,
        password="generated" if generated else ("set" if password else "none"),
    )
    await context.audit(request, identity, "device.add", f"user:{extension}", detail)
    return Generated(user, password if generated else None, device)


async def change_device_password(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    device_id: int,
    data: Mapping[str, Any],
) -> Generated:
    """Set a device's own password (given, or generated with `generate_password`)."""
    org = org_of(identity)
    user = await known_user(context, org, extension)
    password, generated = _required_sip_password(data)
    device = await context.store.set_device_password(org, extension, device_id, password)
    detail = f"{device.uri}: {'generated' if generated else 'set'}"
    await context.audit(request, identity, "device.password.set", f"user:{extension}", detail)
    return Generated(user, password if generated else None, device)


async def remove_device(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    extension: str,
    device_id: int,
) -> Device:
    org = org_of(identity)
    await known_user(context, org, extension)
    device = await context.store.remove_device(org, extension, device_id)
    await context.audit(request, identity, "device.remove", f"user:{extension}", device.uri)
    return device


async def order_export(
    context: PortalContext, request: web.Request, identity: Identity, month: object
) -> int:
    """Ask for one month's ZIP of the asker's organisation; refused (409) below
    `BULK_DOWNLOAD_MIN_RETENTION_DAYS` of retention or with bulk download switched off."""
    if not isinstance(month, str) or not _MONTH.fullmatch(month.strip()):
        raise ApiError(422, N_("month must be YYYY-MM"), "month")
    month = month.strip()
    org = org_of(identity)
    settings = await load_settings(context.store, context.services, org)
    if not bulk_download_allowed(settings.retention_days):
        raise ApiError(
            409,
            N_(
                "Bulk download needs a retention of {minimum} days or more; it is {days} days now.",
                minimum=BULK_DOWNLOAD_MIN_RETENTION_DAYS,
                days=settings.retention_days,
            ),
            SettingKey.RETENTION_DAYS,
        )
    if not settings.bulk_download:
        raise ApiError(
            409,
            N_("Bulk download is switched off. An admin switches it on under Settings."),
            SettingKey.BULK_DOWNLOAD,
        )
    if context.services.request_export is None:
        raise ApiError(503, N_("bulk export is not available in this server"))
    email = None
    if identity.is_admin and identity.via == "session":
        admin = await context.store.get_admin(identity.name)
        email = admin.email if admin is not None and admin.org_id == org.id else None
    try:
        # The export service audits the order itself.
        return await context.services.request_export(
            org, month, identity.actor, email=email, address=client_address(request)
        )
    except StorageError as exc:
        # Answered here, not by the middleware, so the bulk page can show it in place.
        raise ApiError.from_storage(exc) from exc


# -- handlers --------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get(f"{API}/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_schema())


@routes.get(f"{API}/me")
async def get_me(request: web.Request) -> web.Response:
    identity = identity_of(request)
    if identity is None:
        raise ApiError(401, "log in or send an API bearer token")
    session = session_of(request)
    return web.json_response(
        {
            "actor": identity.actor,
            "role": identity.role,
            "name": identity.name,
            "extension": identity.extension,
            "organisation": identity.org.slug if identity.org is not None else None,
            "csrf_token": session.csrf_token if session is not None else None,
        }
    )


@routes.get(f"{API}/users")
async def list_users(request: web.Request) -> web.Response:
    identity = require(request)
    users = await context_of(request).store.list_users(org_of(identity))
    if not identity.is_admin:
        users = [user for user in users if user.extension == identity.extension]
    return web.json_response({"items": [user_json(user) for user in users]})


@routes.post(f"{API}/users")
async def post_user(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    made = await add_user(context, request, identity, await json_body(request))
    devices = await context.store.list_devices(org_of(identity), made.user.extension)
    return web.json_response(_with_password(user_json(made.user, devices), made), status=201)


def _with_password(body: dict[str, Any], made: Generated) -> dict[str, Any]:
    """The answer, with the password callrec generated: this once, never again."""
    if made.password is not None:
        body["password"] = made.password
    return body


def _visible_extension(request: web.Request, identity: Identity) -> str:
    extension = request.match_info["extension"]
    if not identity.is_admin and extension != identity.extension:
        raise ApiError(404, f"no user with extension {extension}")
    return extension


@routes.get(f"{API}/users/{{extension}}")
async def get_user(request: web.Request) -> web.Response:
    identity = require(request)
    context = context_of(request)
    extension = _visible_extension(request, identity)
    user = await known_user(context, org_of(identity), extension)
    devices = await context.store.list_devices(org_of(identity), extension)
    return web.json_response(user_json(user, devices))


@routes.patch(f"{API}/users/{{extension}}")
async def patch_user(request: web.Request) -> web.Response:
    """Change a user's name and e-mail."""
    identity = require(request, admin=True)
    context = context_of(request)
    extension = request.match_info["extension"]
    user = await change_user(context, request, identity, extension, await json_body(request))
    return web.json_response(user_json(user))


@routes.delete(f"{API}/users/{{extension}}")
async def delete_user(request: web.Request) -> web.Response:
    """Remove a user and their devices; their calls and recordings are kept."""
    identity = require(request, admin=True)
    extension = request.match_info["extension"]
    await remove_user(context_of(request), request, identity, extension, confirmed=True)
    return web.Response(status=204)


@routes.put(f"{API}/users/{{extension}}/password")
async def put_sip_password(request: web.Request) -> web.Response:
    """The user's SIP password: `{"password": ...}` or `{"generate_password": true}`
    (the generated one is in the answer, once)."""
    identity = require(request, admin=True)
    context = context_of(request)
    extension = request.match_info["extension"]
    made = await change_sip_password(
        context, request, identity, extension, await json_body(request)
    )
    return web.json_response(_with_password(user_json(made.user), made))


@routes.put(f"{API}/users/{{extension}}/mode")
async def put_mode(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    data = await json_body(request)
    context = context_of(request)
    user = await change_mode(
        context, request, identity, request.match_info["extension"], data.get("mode")
    )
    return web.json_response(user_json(user))


@routes.delete(f"{API}/users/{{extension}}/recording")
async def remove_from_recording(request: web.Request) -> web.Response:
    """Take a user off recording (mode never); their recordings are kept."""
    identity = require(request, admin=True)
    context = context_of(request)
    extension = request.match_info["extension"]
    user = await change_mode(context, request, identity, extension, RecordingMode.NEVER)
    return web.json_response(user_json(user))


@routes.put(f"{API}/users/{{extension}}/portal-password")
async def put_portal_password(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    org = org_of(identity)
    extension = request.match_info["extension"]
    await known_user(context, org, extension)
    data = await json_body(request)
    if _field_text(data, "password", required=True) is None:  # pragma: no cover
        raise ApiError(422, N_("{field} is required", field="password"), "password")
    password = parse_portal_password(data, "password")
    await change_portal_login(context, request, identity, extension, password)
    return web.Response(status=204)


@routes.delete(f"{API}/users/{{extension}}/portal-password")
async def delete_portal_password(request: web.Request) -> web.Response:
    """Take the user's portal login away (their sessions end)."""
    identity = require(request, admin=True)
    extension = request.match_info["extension"]
    await change_portal_login(context_of(request), request, identity, extension, None)
    return web.Response(status=204)


@routes.put(f"{API}/users/{{extension}}/language")
async def put_language(request: web.Request) -> web.Response:
    """A user's own language for the portal ("en", "nl"; null: the organisation's). An
    admin sets anyone's; a user their own."""
    identity = require(request)
    context = context_of(request)
    extension = _visible_extension(request, identity)
    data = await json_body(request)
    if "language" not in data:
        raise ApiError(422, N_("{field} is required", field="language"), "language")
    user = await change_language(context, request, identity, extension, data["language"])
    return web.json_response(user_json(user))


@routes.get(f"{API}/users/{{extension}}/devices")
async def get_devices(request: web.Request) -> web.Response:
    identity = require(request)
    context = context_of(request)
    org = org_of(identity)
    extension = _visible_extension(request, identity)
    await known_user(context, org, extension)
    devices = await context.store.list_devices(org, extension)
    return web.json_response({"items": [device_json(device) for device in devices]})


@routes.post(f"{API}/users/{{extension}}/devices")
async def post_device(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    extension = request.match_info["extension"]
    made = await add_device(context, request, identity, extension, await json_body(request))
    assert made.device is not None
    return web.json_response(_with_password(device_json(made.device), made), status=201)


@routes.put(f"{API}/users/{{extension}}/devices/{{id}}/password")
async def put_device_password(request: web.Request) -> web.Response:
    """A device's own password: `{"password": ...}` or `{"generate_password": true}`."""
    identity = require(request, admin=True)
    context = context_of(request)
    extension, device_id = request.match_info["extension"], parse_id(request)
    data = await json_body(request)
    made = await change_device_password(context, request, identity, extension, device_id, data)
    assert made.device is not None
    return web.json_response(_with_password(device_json(made.device), made))


@routes.delete(f"{API}/users/{{extension}}/devices/{{id}}")
async def delete_device(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    extension, device_id = request.match_info["extension"], parse_id(request)
    await remove_device(context, request, identity, extension, device_id)
    return web.Response(status=204)


async def _settings_body(context: PortalContext, org: OrgScope) -> dict[str, Any]:
    """The settings in force, and the organisation's uploaded notice (None if none)."""
    settings = await load_settings(context.store, context.services, org)
    notice = await current_notice(context, org)
    return {
        **settings_json(settings),
        "uploaded_notice": None
        if notice is None
        else {
            "name": notice.name,
            "seconds": notice.seconds,
            "uploaded_at": format_timestamp(notice.uploaded_at),
            "uploaded_by": notice.uploaded_by,
        },
        "note": RETENTION_NOTE,
    }


@routes.get(f"{API}/settings")
async def get_settings(request: web.Request) -> web.Response:
    identity = require(request)
    return web.json_response(await _settings_body(context_of(request), org_of(identity)))


async def _patch_settings(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    org = org_of(identity)
    data = await json_body(request)
    try:
        changes = validate_settings_patch(data, context.services.defaults)
        before = await load_settings(context.store, context.services, org)
        check_settings(before.with_stored(changes))
        await check_uploaded_choice(context, org, changes)
    except PolicyError as exc:
        raise ApiError(422, exc.message, exc.field) from exc
    await save_settings(context.store, org, changes)
    await context.audit(
        request, identity, "settings.change", "settings", json.dumps(changes, sort_keys=True)
    )
    return web.json_response(await _settings_body(context, org))


routes.put(f"{API}/settings")(_patch_settings)
routes.patch(f"{API}/settings")(_patch_settings)


@routes.get(f"{API}/calls")
async def get_calls(request: web.Request) -> web.Response:
    identity = require(request)
    zone = await presentation_for(request)
    call_query, paging = parse_call_filters(request.query, identity, zone)
    context = context_of(request)
    org = org_of(identity)
    rows, total = await context.store.calls_page(org, call_query, paging.page_size, paging.offset)
    spans = await context.store.recorded_spans(org, [r for row in rows for r in row.recordings])
    return web.json_response(
        page_json([call_json(row, spans, zone) for row in rows], paging, total)
    )


@routes.get(f"{API}/calls/{{id}}")
async def get_call(request: web.Request) -> web.Response:
    identity = require(request)
    call_id = parse_id(request)
    context = context_of(request)
    org = org_of(identity)
    row = await context.store.get_visible_call(org, call_id, identity.scope_ext)
    if row is None:
        raise ApiError(404, f"no call {call_id}")
    spans = await context.store.recorded_spans(org, row.recordings)
    return web.json_response(call_json(row, spans, await presentation_for(request)))


@routes.get(f"{API}/recordings")
async def get_recordings(request: web.Request) -> web.Response:
    identity = require(request)
    zone = await presentation_for(request)
    call_query, paging = parse_call_filters(request.query, identity, zone)
    context = context_of(request)
    org = org_of(identity)
    listings, total = await context.store.recordings_page(
        org,
        since=call_query.since,
        until=call_query.until,
        extension=call_query.extension,
        scope_ext=identity.scope_ext,
        limit=paging.page_size,
        offset=paging.offset,
        search=call_query.search,
    )
    spans = await context.store.recorded_spans(org, [x.recording for x in listings])
    return web.json_response(
        page_json([listing_json(x, spans, zone) for x in listings], paging, total)
    )


async def visible_recording(request: web.Request, identity: Identity) -> RecordingListing:
    recording_id = parse_id(request)
    listing = await context_of(request).store.get_visible_recording(
        org_of(identity), recording_id, identity.scope_ext
    )
    if listing is None:
        raise ApiError(404, f"no recording {recording_id}")
    return listing


@routes.get(f"{API}/recordings/{{id}}")
async def get_recording(request: web.Request) -> web.Response:
    identity = require(request)
    listing = await visible_recording(request, identity)
    spans = await context_of(request).store.recorded_spans(org_of(identity), [listing.recording])
    return web.json_response(listing_json(listing, spans, await presentation_for(request)))


async def _no_recording_changes(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(
        request.method,
        ["GET", "HEAD"],
        text="recordings cannot be changed or deleted; they are kept until their retention expires",
    )


for _method in ("DELETE", "PUT", "PATCH", "POST"):
    routes.route(_method, f"{API}/recordings/{{id}}")(_no_recording_changes)
    routes.route(_method, f"{API}/recordings/{{id}}/audio")(_no_recording_changes)
    routes.route(_method, f"{API}/recordings/{{id}}/download")(_no_recording_changes)


def _is_first_range(request: web.Request) -> bool:
    """Audit a play once per playback, not on every seek or buffering range."""
    if request.method == "HEAD":
        return False
    header = request.headers.get("Range", "").replace(" ", "")
    return header in ("", "bytes=0-") or header.startswith("bytes=0-")


@routes.get(f"{API}/recordings/{{id}}/audio")
async def get_audio(request: web.Request) -> web.StreamResponse:
    identity = require(request)
    context = context_of(request)
    listing = await visible_recording(request, identity)
    # The local file, or the object streamed for the client's Range (recording_audio).
    source = await open_recording(request, context, listing.recording)
    try:
        if _is_first_range(request):
            await context.audit(
                request, identity, "recording.play", f"recording:{listing.recording.id}"
            )
    except BaseException:
        source.close()
        raise
    return await serve_recording(
        request,
        source,
        {
            "Content-Type": media_type(listing.recording),
            "Cache-Control": "private, no-store",
            "Accept-Ranges": "bytes",
        },
    )


@routes.get(f"{API}/recordings/{{id}}/download")
async def get_download(request: web.Request) -> web.StreamResponse:
    identity = require(request)
    context = context_of(request)
    listing = await visible_recording(request, identity)
    source = await open_recording(request, context, listing.recording)
    try:
        if request.method != "HEAD":
            await context.audit(
                request, identity, "recording.download", f"recording:{listing.recording.id}"
            )
        # Named in the reader's time zone, like the entries of a month's ZIP.
        name = records.recording_file_name(listing, await presentation_for(request))
    except BaseException:
        source.close()
        raise
    return await serve_recording(
        request,
        source,
        {
            "Content-Type": media_type(listing.recording),
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@routes.get(f"{API}/exports")
async def get_exports(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    exports = await context_of(request).store.list_exports(org_of(identity))
    return web.json_response({"items": [export_json(export) for export in exports]})


@routes.post(f"{API}/exports")
async def post_export(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    data = await json_body(request)
    export_id = await order_export(context, request, identity, data.get("month"))
    export = await context.store.get_export(org_of(identity), export_id)
    body = export_json(export) if export is not None else {"id": export_id, "status": "queued"}
    return web.json_response(body, status=202)


@routes.get(f"{API}/exports/{{id}}")
async def get_export(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    export_id = parse_id(request)
    export = await context_of(request).store.get_export(org_of(identity), export_id)
    if export is None:
        raise ApiError(404, f"no export {export_id}")
    return web.json_response(export_json(export))


@routes.get(f"{API}/tokens")
async def get_tokens(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    tokens = await context_of(request).store.list_api_tokens(org_of(identity))
    return web.json_response(
        {
            "items": [
                {
                    "id": token.id,
                    "name": token.name,
                    "actor": token.actor,
                    "created_at": format_timestamp(token.created_at),
                    "revoked_at": format_timestamp(token.revoked_at),
                }
                for token in tokens
            ]
        }
    )


@routes.post(f"{API}/tokens")
async def post_token(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    name = _field_text(await json_body(request), "name", required=True)
    assert name is not None
    if len(name) > 100:
        raise ApiError(422, "name must have 1 to 100 characters", "name")
    token_id, token = await context.store.create_api_token(
        org_of(identity), name, identity.actor, ROLE_ADMIN
    )
    await context.audit(request, identity, "token.create", f"token:{token_id}", name)
    return web.json_response({"id": token_id, "name": name, "token": token}, status=201)


@routes.delete(f"{API}/tokens/{{id}}")
async def delete_token(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    token_id = parse_id(request)
    if not await context.store.revoke_api_token(org_of(identity), token_id):
        raise ApiError(404, f"no active token {token_id}")
    await context.audit(request, identity, "token.revoke", f"token:{token_id}")
    return web.Response(status=204)


@routes.get(f"{API}/audit")
async def get_audit(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    org = org_of(identity)
    paging = Paging(
        page=_parse_int(request.query, "page", 1, 1, 1_000_000),
        page_size=_parse_int(request.query, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )
    entries = await context.store.list_audit(org, paging.page_size, paging.offset)
    total = await context.store.audit_total(org)
    return web.json_response(page_json([audit_json(e) for e in entries], paging, total))
