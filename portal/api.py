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
    context_of,
    identity_of,
    org_of,
    parse_id,
    session_of,
)
from portal.i18n import presentation_for
from portal.openapi import openapi_schema
from portal.recording_settings import (
    load_settings,
    save_settings,
    settings_json,
    validate_settings_patch,
)
from storage.errors import StorageError
from storage.models import (
    PLAYABLE_STATUSES,
    OrgScope,
    Recording,
    RecordingListing,
    User,
    format_timestamp,
)
from storage.portal_queries import CallQuery, CallRow

API = "/api/v1"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
_EXTENSION = re.compile(r"[0-9]{2,15}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
RETENTION_NOTE = "Changes to retention affect new recordings only."

# -- access ----------------------------------------------------------------------------


def require(request: web.Request, *, admin: bool = False) -> Identity:
    """The asker, who must belong to an organisation (and be its admin if `admin`)."""
    identity = identity_of(request)
    if identity is None:
        raise ApiError(401, "log in or send an API bearer token")
    org_of(identity)
    if admin and not identity.is_admin:
        raise ApiError(403, "this needs an administrator")
    return identity


def require_operator(request: web.Request) -> Identity:
    identity = identity_of(request)
    if identity is None:
        raise ApiError(401, "log in or send an API bearer token")
    if not identity.is_operator:
        raise ApiError(403, "this needs a platform operator")
    return identity


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


def parse_call_filters(
    query: Mapping[str, str], identity: Identity, zone: Presentation
) -> tuple[CallQuery, Paging]:
    """Filters of GET /calls and the Reports page: from, to (days in `zone`'s time zone),
    extension, recorded_only, page, page_size."""
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


def recording_json(recording: Recording) -> dict[str, Any]:
    """The recording's one JSON shape, with links to its audio."""
    return {**records.recording_json(recording), **_links(recording)}


def call_json(row: CallRow) -> dict[str, Any]:
    """The call's one JSON shape, with the recordings the caller may see."""
    return {
        **records.call_json(row.call),
        "recorded": bool(row.recordings) or row.call.recorded,
        "recordings": [recording_json(recording) for recording in row.recordings],
    }


def listing_json(listing: RecordingListing) -> dict[str, Any]:
    """A recording and its call, with links to its audio."""
    return {**records.listing_json(listing), **_links(listing.recording)}


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


async def add_user(
    context: PortalContext, request: web.Request, identity: Identity, data: Mapping[str, Any]
) -> User:
    extension = _field_text(data, "extension", required=True)
    assert extension is not None
    if not _EXTENSION.fullmatch(extension):
        raise ApiError(422, N_("extension must be 2 to 15 digits"), "extension")
    name = _field_text(data, "name", required=True)
    assert name is not None
    if not 1 <= len(name) <= 200:
        raise ApiError(422, N_("name must have 1 to 200 characters"), "name")
    email = _field_text(data, "email", required=False)
    if email is not None and not _EMAIL.fullmatch(email):
        raise ApiError(422, N_("email must look like name@example.org"), "email")
    mode = validate_mode(data.get("mode", DEFAULT_RECORDING_MODE))
    password = _field_text(data, "password", required=False)
    portal_password = _field_text(data, "portal_password", required=False)
    if portal_password is not None and len(portal_password) < 8:
        raise ApiError(
            422, N_("portal_password must have at least 8 characters"), "portal_password"
        )
    devices = data.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise ApiError(422, N_("devices must be a list of SIP URIs"), "devices")
    org = org_of(identity)
    if await context.store.get_user(org, extension) is not None:
        raise ApiError(409, N_("user {extension} already exists", extension=extension), "extension")
    # A refused value (InvalidValue) or a username already taken (Conflict) names its
    # field; the error middleware answers it.
    user = await context.store.add_user(
        org, extension, name, email=email, mode=mode, password=password, devices=devices
    )
    if portal_password is not None:
        await context.repository.set_portal_password(org, extension, portal_password)
    await context.audit(request, identity, "user.add", f"user:{extension}", f"mode {mode}")
    return user


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
    user = await add_user(context, request, identity, await json_body(request))
    return web.json_response(user_json(user), status=201)


def _visible_extension(request: web.Request, identity: Identity) -> str:
    extension = request.match_info["extension"]
    if not identity.is_admin and extension != identity.extension:
        raise ApiError(404, f"no user with extension {extension}")
    return extension


@routes.get(f"{API}/users/{{extension}}")
async def get_user(request: web.Request) -> web.Response:
    identity = require(request)
    extension = _visible_extension(request, identity)
    user = await known_user(context_of(request), org_of(identity), extension)
    return web.json_response(user_json(user))


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
    password = _field_text(await json_body(request), "password", required=True)
    assert password is not None
    if len(password) < 8:
        raise ApiError(422, "password must have at least 8 characters", "password")
    await context.repository.set_portal_password(org, extension, password)
    await context.audit(request, identity, "portal_password.set", f"user:{extension}")
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
    org = org_of(identity)
    extension = request.match_info["extension"]
    await known_user(context, org, extension)
    data = await json_body(request)
    uri = _field_text(data, "uri", required=True)
    assert uri is not None
    kind = _field_text(data, "kind", required=False) or "phone"
    password = _field_text(data, "password", required=False)
    device = await context.store.add_device(org, extension, uri, kind, password)
    await context.audit(request, identity, "device.add", f"user:{extension}", uri)
    return web.json_response(device_json(device), status=201)


@routes.get(f"{API}/settings")
async def get_settings(request: web.Request) -> web.Response:
    identity = require(request)
    context = context_of(request)
    settings = await load_settings(context.store, context.services, org_of(identity))
    return web.json_response({**settings_json(settings), "note": RETENTION_NOTE})


async def _patch_settings(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    org = org_of(identity)
    data = await json_body(request)
    try:
        changes = validate_settings_patch(data, context.services.defaults)
        before = await load_settings(context.store, context.services, org)
        check_settings(before.with_stored(changes))
    except PolicyError as exc:
        raise ApiError(422, exc.message, exc.field) from exc
    await save_settings(context.store, org, changes)
    await context.audit(
        request, identity, "settings.change", "settings", json.dumps(changes, sort_keys=True)
    )
    settings = await load_settings(context.store, context.services, org)
    return web.json_response({**settings_json(settings), "note": RETENTION_NOTE})


routes.put(f"{API}/settings")(_patch_settings)
routes.patch(f"{API}/settings")(_patch_settings)


@routes.get(f"{API}/calls")
async def get_calls(request: web.Request) -> web.Response:
    identity = require(request)
    call_query, paging = parse_call_filters(
        request.query, identity, await presentation_for(request)
    )
    rows, total = await context_of(request).repository.calls_page(
        org_of(identity), call_query, paging.page_size, paging.offset
    )
    return web.json_response(page_json([call_json(row) for row in rows], paging, total))


@routes.get(f"{API}/calls/{{id}}")
async def get_call(request: web.Request) -> web.Response:
    identity = require(request)
    call_id = parse_id(request)
    row = await context_of(request).repository.get_call(
        org_of(identity), call_id, identity.scope_ext
    )
    if row is None:
        raise ApiError(404, f"no call {call_id}")
    return web.json_response(call_json(row))


@routes.get(f"{API}/recordings")
async def get_recordings(request: web.Request) -> web.Response:
    identity = require(request)
    call_query, paging = parse_call_filters(
        request.query, identity, await presentation_for(request)
    )
    listings, total = await context_of(request).repository.recordings_page(
        org_of(identity),
        since=call_query.since,
        until=call_query.until,
        extension=call_query.extension,
        scope_ext=identity.scope_ext,
        limit=paging.page_size,
        offset=paging.offset,
    )
    return web.json_response(page_json([listing_json(x) for x in listings], paging, total))


async def visible_recording(request: web.Request, identity: Identity) -> RecordingListing:
    recording_id = parse_id(request)
    listing = await context_of(request).repository.get_recording(
        org_of(identity), recording_id, identity.scope_ext
    )
    if listing is None:
        raise ApiError(404, f"no recording {recording_id}")
    return listing


@routes.get(f"{API}/recordings/{{id}}")
async def get_recording(request: web.Request) -> web.Response:
    identity = require(request)
    return web.json_response(listing_json(await visible_recording(request, identity)))


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
    path = context.recording_file(listing.recording)
    if _is_first_range(request):
        await context.audit(
            request, identity, "recording.play", f"recording:{listing.recording.id}"
        )
    return web.FileResponse(
        path,
        headers={
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
    path = context.recording_file(listing.recording)
    if request.method != "HEAD":
        await context.audit(
            request, identity, "recording.download", f"recording:{listing.recording.id}"
        )
    # Named in the reader's time zone, like the entries of a month's ZIP.
    name = records.recording_file_name(listing, await presentation_for(request))
    return web.FileResponse(
        path,
        headers={
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
    tokens = await context_of(request).repository.list_api_tokens(org_of(identity))
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
    token_id, token = await context.repository.create_api_token(
        org_of(identity), name, identity.actor, ROLE_ADMIN
    )
    await context.audit(request, identity, "token.create", f"token:{token_id}", name)
    return web.json_response({"id": token_id, "name": name, "token": token}, status=201)


@routes.delete(f"{API}/tokens/{{id}}")
async def delete_token(request: web.Request) -> web.Response:
    identity = require(request, admin=True)
    context = context_of(request)
    token_id = parse_id(request)
    if not await context.repository.revoke_api_token(org_of(identity), token_id):
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
    total = await context.repository.audit_total(org)
    return web.json_response(page_json([audit_json(e) for e in entries], paging, total))
