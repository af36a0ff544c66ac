"""The server-rendered portal pages: login, recording settings, users, reports, bulk
download and audit. Every form carries the session's CSRF token; each change goes
through the same operations as the API and is audited."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from callrec.policy import (
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    RETENTION_SLIDER_DAYS,
    RecordingMode,
    SettingKey,
    bulk_download_allowed,
)
from portal.api import (
    DEFAULT_PAGE_SIZE,
    add_user,
    change_mode,
    known_user,
    order_export,
    parse_call_filters,
)
from portal.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Identity,
    admin_identity,
    client_address,
    csrf_matches,
    user_identity,
    verify_admin,
)
from portal.context import ApiError, context_of, identity_of, session_of
from portal.recording_settings import (
    FieldError,
    load_settings,
    retention_from_slider,
    save_settings,
    slider_position,
    validate_settings_patch,
)

MODE_LABELS: dict[str, str] = {
    RecordingMode.NEVER: "Never",
    RecordingMode.ALWAYS: "Always",
    RecordingMode.ON_DEMAND: "On demand",
}
NAV = (
    ("/settings", "Recording settings", True),
    ("/users", "Users", True),
    ("/reports", "Reports", False),
    ("/bulk", "Bulk download", True),
    ("/audit", "Audit", True),
)

routes = web.RouteTableDef()


# -- template environment ---------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = round(seconds)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _size(count: int | None) -> str:
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def make_templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("portal", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _when
    environment.filters["hms"] = _hms
    environment.filters["size"] = _size
    return environment


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    context = context_of(request)
    session = session_of(request)
    notices: list[str] = []
    if session is not None:
        notices, session.notices = session.notices, []
    page = context.templates.get_template(template).render(
        identity=identity_of(request),
        csrf_token=session.csrf_token if session is not None else "",
        nav=NAV,
        current=request.path,
        notices=notices,
        error=values.pop("error", None),
        mode_labels=MODE_LABELS,
        **values,
    )
    response = web.Response(text=page, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def render_error(request: web.Request, status: int, message: str) -> web.Response:
    titles = {
        400: "Bad request",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        409: "Refused",
        410: "Gone",
        422: "Invalid input",
        429: "Too many attempts",
    }
    return render(
        request,
        "error.html",
        status=status,
        title=titles.get(status, "Something went wrong"),
        message=message,
    )


# -- access ---------------------------------------------------------------------------


def page_identity(request: web.Request, *, admin: bool = False) -> Identity:
    identity = identity_of(request)
    if identity is None or session_of(request) is None:
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    if admin and not identity.is_admin:
        raise ApiError(403, "This page is for administrators.")
    return identity


async def checked_form(request: web.Request) -> MultiDictProxy[str | bytes | Any]:
    """The posted form, after checking its CSRF token against the session's."""
    form = await request.post()
    session = session_of(request)
    supplied = form.get(CSRF_FIELD)
    if session is None or not csrf_matches(
        session.csrf_token, supplied if isinstance(supplied, str) else None
    ):
        raise ApiError(403, "The form has expired or did not come from this portal; reload it.")
    return form


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _notice(request: web.Request, text: str) -> None:
    session = session_of(request)
    if session is not None:
        session.notices.append(text)


# Whitespace, C0 controls, DEL and the backslash: never in a redirect target of ours.
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x20\x7f\\]|\s")


def _safe_next(target: str) -> str:
    """`target` if it is a path on this portal, else "/".

    Browsers drop tab, CR and LF from a Location and read "\\" as "/", so "/\t/evil" or
    "/\\evil" leaves the portal. The target must start with one "/" and hold none of
    those, neither as sent nor in its path once percent-decoded (twice-encoded too). A
    scheme ("https:", "javascript:") cannot come before the leading "/".
    """
    if not target.startswith("/") or target.startswith("//") or _UNSAFE_IN_NEXT.search(target):
        return "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    for _ in range(3):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    if path.startswith("//") or _UNSAFE_IN_NEXT.search(path):
        return "/"
    return target


# -- login ------------------------------------------------------------------------------


def _login_page(
    request: web.Request, *, status: int = 200, error: str | None = None, name: str = ""
) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status=status,
        title="Log in",
        login_csrf=token,
        next=_safe_next(request.query.get("next", "/")),
        name=name,
        error=error,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/login",
        secure=request.secure,
    )
    return response


@routes.get("/login")
async def get_login(request: web.Request) -> web.Response:
    return _login_page(request)


@routes.post("/login")
async def post_login(request: web.Request) -> web.Response:
    context = context_of(request)
    form = await request.post()
    name = _text(form, "name")
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    supplied = form.get(CSRF_FIELD)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf_matches(expected, supplied if isinstance(supplied, str) else None):
        return _login_page(
            request, status=403, error="The login form expired; try again.", name=name
        )
    address = client_address(request)
    now = context.now()
    wait = context.throttle.retry_after(address, name, now)
    if wait > 0:
        await context.audit(request, name or "-", "login.throttled", None)
        return _login_page(
            request,
            status=429,
            name=name,
            error=f"Too many failed logins. Try again in {math.ceil(wait / 60)} minute(s).",
        )
    identity: Identity | None = None
    if name and password:
        if await verify_admin(context.store, name, password):
            identity = admin_identity(name)
        elif name.isdigit():
            user = await context.repository.verify_user_password(name, password)
            if user is not None:
                identity = user_identity(user.extension, user.name)
    if identity is None:
        context.throttle.failed(address, name, now)
        await context.audit(request, name or "-", "login.failed", None)
        return _login_page(request, status=401, error="Wrong name or password.", name=name)
    context.throttle.succeeded(address, name)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        context.sessions.delete(old)
    session = context.sessions.create(identity, now)
    await context.audit(request, identity, "login", None)
    default = "/settings" if identity.is_admin else "/reports"
    target = _safe_next(_text(form, "next") or default)
    if target == "/":
        target = default
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=request.secure,
    )
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


@routes.post("/logout")
async def post_logout(request: web.Request) -> web.Response:
    identity = page_identity(request)
    await checked_form(request)
    context = context_of(request)
    session = session_of(request)
    if session is not None:
        context.sessions.delete(session.id)
    await context.audit(request, identity, "logout", None)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@routes.get("/")
async def get_root(request: web.Request) -> web.Response:
    identity = page_identity(request)
    raise web.HTTPSeeOther("/settings" if identity.is_admin else "/reports")


# -- recording settings -----------------------------------------------------------------


async def _settings_page(
    request: web.Request,
    *,
    status: int = 200,
    form: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> web.Response:
    context = context_of(request)
    users = await context.store.list_users()
    settings = await load_settings(context.store, context.services)
    values: dict[str, object] = dict(settings.settable())
    if form is not None:
        values.update(form)
    return render(
        request,
        "settings.html",
        status=status,
        title="Recording settings",
        recording_users=[u for u in users if u.recording_mode != RecordingMode.NEVER],
        other_users=[u for u in users if u.recording_mode == RecordingMode.NEVER],
        form=values,
        errors=errors or {},
        slider_days=RETENTION_SLIDER_DAYS,
        slider_position=slider_position(settings.retention_days),
        error="Please correct the marked fields." if errors else None,
    )


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    page_identity(request, admin=True)
    return await _settings_page(request)


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    submitted: dict[str, object] = {}
    errors: dict[str, str] = {}
    for key in ("feature_code", "announcement", "channels"):
        if key in form:
            submitted[key] = _text(form, key)
    try:
        position = _text(form, "retention_position")
        current = _text(form, "retention_current")
        if position and current.isdigit() and position == str(slider_position(int(current))):
            # The slider was not moved: keep a retention the slider cannot show (say 200
            # days set through the API) instead of rounding it to a slider stop.
            pass
        elif position:
            submitted[SettingKey.RETENTION_DAYS] = retention_from_slider(position)
        elif SettingKey.RETENTION_DAYS in form:
            submitted[SettingKey.RETENTION_DAYS] = _text(form, SettingKey.RETENTION_DAYS)
    except FieldError as exc:
        errors[exc.field] = exc.message
    changes: dict[str, str] = {}
    # Validate field by field so every wrong field is marked at once.
    for key, value in submitted.items():
        try:
            changes.update(validate_settings_patch({key: value}))
        except FieldError as exc:
            errors[exc.field] = exc.message
    if errors:
        shown = {k: v for k, v in submitted.items() if k != SettingKey.RETENTION_DAYS}
        return await _settings_page(request, status=422, form=shown, errors=errors)
    before = await load_settings(context.store, context.services)
    await save_settings(context.store, changes)
    changed = {k: v for k, v in changes.items() if str(before.settable()[k]) != v}
    if changed:
        await context.audit(
            request, identity, "settings.change", "settings", json.dumps(changed, sort_keys=True)
        )
    note = (
        " Retention changes affect new recordings only."
        if SettingKey.RETENTION_DAYS in changed
        else ""
    )
    _notice(request, "Settings saved." + note)
    raise web.HTTPSeeOther("/settings")


@routes.post("/settings/recording-users")
async def post_recording_user(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = _text(form, "extension")
    user = await known_user(context, extension)
    await change_mode(context, request, identity, extension, RecordingMode.ON_DEMAND)
    _notice(request, f"{user.name} ({extension}) is now recorded on demand.")
    raise web.HTTPSeeOther("/settings")


@routes.post("/settings/recording-users/{extension}/mode")
async def post_recording_mode(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    mode = _text(form, "mode")
    if mode not in (RecordingMode.ALWAYS, RecordingMode.ON_DEMAND):
        raise ApiError(422, "Choose always or on demand.", "mode")
    user = await change_mode(context, request, identity, request.match_info["extension"], mode)
    _notice(request, f"{user.name} ({user.extension}): {MODE_LABELS[mode].lower()}.")
    raise web.HTTPSeeOther("/settings")


@routes.post("/settings/recording-users/{extension}/remove")
async def post_recording_remove(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    await checked_form(request)
    extension = request.match_info["extension"]
    user = await change_mode(context, request, identity, extension, RecordingMode.NEVER)
    _notice(
        request, f"{user.name} ({user.extension}) is no longer recorded; their recordings are kept."
    )
    raise web.HTTPSeeOther("/settings")


# -- users --------------------------------------------------------------------------------


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    page_identity(request, admin=True)
    store = context_of(request).store
    entries = [
        {"user": user, "devices": await store.list_devices(user.extension)}
        for user in await store.list_users()
    ]
    return render(request, "users.html", title="Users", users=entries)


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    data = {key: _text(form, key) for key in ("extension", "name", "email", "portal_password")}
    data["mode"] = RecordingMode.NEVER
    user = await add_user(context, request, identity, {k: v for k, v in data.items() if v})
    _notice(request, f"Added {user.name} ({user.extension}).")
    raise web.HTTPSeeOther("/users")


@routes.post("/users/{extension}/mode")
async def post_user_mode(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    user = await change_mode(
        context, request, identity, request.match_info["extension"], _text(form, "mode")
    )
    _notice(
        request,
        f"Saved: {user.name} ({user.extension}) call recording"
        f" {MODE_LABELS[user.recording_mode].lower()}.",
    )
    raise web.HTTPSeeOther("/users")


# -- reports ------------------------------------------------------------------------------


def _page_links(request: web.Request, page: int, pages: int) -> tuple[str | None, str | None]:
    def link(number: int) -> str:
        query = dict(request.query)
        query["page"] = str(number)
        return f"{request.path}?{urlencode(query)}"

    return (link(page - 1) if page > 1 else None, link(page + 1) if page < pages else None)


@routes.get("/reports")
async def get_reports(request: web.Request) -> web.Response:
    identity = page_identity(request)
    context = context_of(request)
    error = None
    try:
        call_query, paging = parse_call_filters(request.query, identity)
    except ApiError as exc:
        error = exc.message
        call_query, paging = parse_call_filters({}, identity)
    rows, total = await context.repository.calls_page(call_query, paging.page_size, paging.offset)
    pages = max(1, math.ceil(total / paging.page_size))
    prev_url, next_url = _page_links(request, paging.page, pages)
    filters = {
        "from": request.query.get("from", ""),
        "to": request.query.get("to", ""),
        "extension": request.query.get("extension", ""),
        "recorded_only": call_query.recorded_only,
    }
    return render(
        request,
        "reports.html",
        status=422 if error else 200,
        title="Reports",
        rows=rows,
        total=total,
        filters=filters,
        page=paging.page,
        pages=pages,
        prev_url=prev_url,
        next_url=next_url,
        error=error,
    )


# -- bulk download ---------------------------------------------------------------------


async def _bulk_page(
    request: web.Request, *, status: int = 200, error: str | None = None, month: str = ""
) -> web.Response:
    context = context_of(request)
    settings = await load_settings(context.store, context.services)
    refused = None
    if not bulk_download_allowed(settings.retention_days):
        refused = (
            f"Bulk download needs a retention of {BULK_DOWNLOAD_MIN_RETENTION_DAYS} days or"
            f" more; it is {settings.retention_days} days now. Raise it on the Recording"
            " settings page (it applies to new recordings only)."
        )
    if not month:
        today = datetime.now(tz=UTC)
        month = f"{today.year:04d}-{today.month:02d}"
    return render(
        request,
        "bulk.html",
        status=status,
        title="Bulk download",
        exports=await context.store.list_exports(50),
        refused=refused,
        month=month,
        error=error,
    )


@routes.get("/bulk")
async def get_bulk(request: web.Request) -> web.Response:
    page_identity(request, admin=True)
    return await _bulk_page(request)


@routes.post("/bulk")
async def post_bulk(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    month = _text(form, "month")
    try:
        await order_export(context, request, identity, month)
    except ApiError as exc:
        return await _bulk_page(request, status=exc.status, error=exc.message, month=month)
    _notice(request, f"Export of {month} ordered; you will get an e-mail when it is ready.")
    raise web.HTTPSeeOther("/bulk")


@routes.get("/exports/download")
async def get_export_download(request: web.Request) -> web.StreamResponse:
    """The signed link from the export e-mail: valid without a session until it expires."""
    context = context_of(request)
    token = request.query.get("token", "")
    verify = context.services.verify_export_link
    path = await verify(token) if verify is not None and token else None
    if path is None:
        raise ApiError(403, "This download link is invalid or has expired.")
    # The link verified, so its first part is the export id.
    export_id = int(token.split(".", 1)[0])
    export = await context.store.get_export(export_id)
    actor = export.requested_by if export is not None else "link"
    await context.audit(request, actor, "export.download", f"export {export_id}")
    name = f"callrec-{export.month if export is not None else export_id}.zip"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


# -- audit ------------------------------------------------------------------------------


@routes.get("/audit")
async def get_audit(request: web.Request) -> web.Response:
    page_identity(request, admin=True)
    context = context_of(request)
    text = request.query.get("page", "1")
    page = int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1
    total = await context.repository.audit_total()
    pages = max(1, math.ceil(total / DEFAULT_PAGE_SIZE))
    entries = await context.store.list_audit(DEFAULT_PAGE_SIZE, (page - 1) * DEFAULT_PAGE_SIZE)
    prev_url, next_url = _page_links(request, page, pages)
    return render(
        request,
        "audit.html",
        title="Audit",
        entries=entries,
        page=page,
        pages=pages,
        prev_url=prev_url,
        next_url=next_url,
    )
