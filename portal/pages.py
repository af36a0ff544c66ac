"""The server-rendered portal pages: login, recording settings, users, reports, bulk
download and audit, each inside the logged-in person's organisation; and the operator's
pages for organisations (`/operator`). Every form carries the session's CSRF token; each
change goes through the same operations as the API and is audited.

Logging in: an admin or an operator by name (unique on the platform); a user as
`extension@domain` (their organisation's SIP domain, or its slug), or by the extension
alone when the platform has one organisation."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from callrec.policy import (
    ANNOUNCEMENT_FILE,
    ANNOUNCEMENT_UPLOADED,
    ANNOUNCEMENTS,
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    CHANNELS,
    DEFAULT_RECORDING_MODE,
    EXPORT_LINK_LIFETIME_S,
    FEATURE_CODE_PATTERN,
    LANGUAGES,
    RECORDING_MODES,
    RETENTION_SLIDER_DAYS,
    RecordingMode,
    RecordingSettings,
    SettingKey,
    bulk_download_allowed,
    check_settings,
)
from callrec.services.presentation import LANGUAGE_NAMES, N_, Presentation, Text
from media.announce import MAX_ANNOUNCEMENT_S
from media.notice_upload import MAX_NOTICE_BYTES, NoticeRejected
from portal.api import (
    DEFAULT_PAGE_SIZE,
    Generated,
    add_device,
    add_user,
    change_device_password,
    change_language,
    change_mode,
    change_portal_login,
    change_sip_password,
    change_user,
    known_user,
    order_export,
    parse_call_filters,
    parse_portal_password,
    remove_device,
    remove_user,
)
from portal.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Identity,
    admin_identity,
    client_address,
    csrf_matches,
    operator_identity,
    user_identity,
)
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
from portal.i18n import (
    PRESENTATION,
    fallback_presentation,
    install_gettext,
    template_gettext,
)
from portal.notice import (
    NOTICE_FIELD,
    check_uploaded_choice,
    current_notice,
    notice_file,
    read_notice_form,
    rejection_text,
    save_notice,
)
from portal.recording_settings import (
    FieldError,
    changed_settings,
    load_settings,
    retention_from_slider,
    save_settings,
    slider_description,
    slider_position,
    validate_settings_patch,
)
from storage.models import OrgScope, User
from storage.notices import UploadedNotice
from storage.search import MAX_SEARCH_LENGTH

MODE_LABELS: dict[str, Text] = {
    RecordingMode.NEVER: N_("Never"),
    RecordingMode.ALWAYS: N_("Always"),
    RecordingMode.ON_DEMAND: N_("On demand"),
}
# Labels for the choices of `callrec.policy`; a choice without one shows its value.
ANNOUNCEMENT_LABELS: dict[str, Text] = {
    "default": N_("Spoken notice, in the language chosen below"),
    "beep": N_("Beep"),
    "none": N_("None"),
}
CHANNEL_LABELS: dict[str, Text] = {
    "mono": N_("Mono (both parties mixed)"),
    "stereo": N_("Stereo (one party per channel)"),
}
# What a refused settings field says (the product rules' own messages are English).
FIELD_ERRORS: dict[str, Text] = {
    SettingKey.FEATURE_CODE: N_("the feature code must be * followed by one digit 0-9 (e.g. *1)"),
    SettingKey.RETENTION_DAYS: N_("pick a retention on the slider"),
    SettingKey.ANNOUNCEMENT: N_("choose one of the announcements"),
    SettingKey.CHANNELS: N_("choose mono or stereo"),
    SettingKey.LANGUAGE: N_("choose one of the languages"),
    SettingKey.TIMEZONE: N_("enter a time zone such as Europe/Amsterdam or UTC"),
    SettingKey.BULK_DOWNLOAD: N_(
        "bulk download needs a retention of 180 days or more; raise the retention first"
    ),
}
STATUS_LABELS: dict[str, Text] = {
    "recording": N_("recording"),
    "complete": N_("complete"),
    "recovered": N_("recovered"),
    "failed": N_("failed"),
    "purged": N_("purged"),
    "queued": N_("queued"),
    "building": N_("building"),
    "ready": N_("ready"),
    "expired": N_("expired"),
}
NAV = (
    ("/settings", N_("Recording settings"), True),
    ("/users", N_("Users"), True),
    ("/reports", N_("Reports"), False),
    ("/bulk", N_("Bulk download"), True),
    ("/audit", N_("Audit"), True),
)
OPERATOR_NAV = (("/operator", N_("Organisations"), False),)
ERROR_TITLES: dict[int, Text] = {
    400: N_("Bad request"),
    401: N_("Not logged in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    405: N_("Not allowed"),
    409: N_("Refused"),
    410: N_("Gone"),
    413: N_("Too large"),
    422: N_("Invalid input"),
    429: N_("Too many attempts"),
    503: N_("Try again shortly"),
}
SOMETHING_WENT_WRONG = N_("Something went wrong")

routes = web.RouteTableDef()


# -- template environment ---------------------------------------------------------------


@jinja2.pass_context
def _when(context: jinja2.runtime.Context, timestamp: float | None) -> str:
    presentation: Presentation = context["presentation"]
    return presentation.when(timestamp)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = round(seconds)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@jinja2.pass_context
def _clock(context: jinja2.runtime.Context, timestamp: float | None) -> str:
    presentation: Presentation = context["presentation"]
    return presentation.time_of_day(timestamp)


@jinja2.pass_context
def _size(context: jinja2.runtime.Context, count: int | None) -> str:
    presentation: Presentation = context["presentation"]
    return presentation.size(count)


@jinja2.pass_context
def _number(context: jinja2.runtime.Context, value: float | None) -> str:
    presentation: Presentation = context["presentation"]
    return "" if value is None else presentation.number(value)


@jinja2.pass_context
def _status(context: jinja2.runtime.Context, status: str) -> str:
    presentation: Presentation = context["presentation"]
    label = STATUS_LABELS.get(status)
    return presentation.text(label) if label is not None else status


def make_templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("portal", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
    )
    install_gettext(environment)
    environment.filters["when"] = _when
    environment.filters["clock"] = _clock
    environment.filters["hms"] = _hms
    environment.filters["size"] = _size
    environment.filters["number"] = _number
    environment.filters["status"] = _status
    return environment


def _presentation(request: web.Request) -> Presentation:
    # Set for every page by the presentation middleware; an error raised before it ran
    # (a broken store) is shown in the browser's language.
    return request.get(PRESENTATION) or fallback_presentation(request)


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    context = context_of(request)
    session = session_of(request)
    presentation = _presentation(request)
    notices: list[str | Text] = []
    if session is not None:
        notices = session.take_notices()
    error = values.pop("error", None)
    identity = identity_of(request)
    menu = OPERATOR_NAV if identity is not None and identity.is_operator else NAV
    page = context.templates.get_template(template).render(
        identity=identity,
        organisation_name=identity.org.slug if identity is not None and identity.org else None,
        csrf_token=session.csrf_token if session is not None else "",
        nav=[(href, presentation.text(label), admin) for href, label, admin in menu],
        current=request.path,
        notices=[presentation.text(notice) for notice in notices],
        error=presentation.text(error) if error is not None else None,
        mode_labels={mode: presentation.text(label) for mode, label in MODE_LABELS.items()},
        language=presentation.language,
        **template_gettext(presentation),
        **values,
    )
    response = web.Response(text=page, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = presentation.language
    return response


def render_error(request: web.Request, status: int, message: str | Text) -> web.Response:
    presentation = _presentation(request)
    title = presentation.text(ERROR_TITLES.get(status, SOMETHING_WENT_WRONG))
    return render(
        request,
        "error.html",
        status=status,
        title=title,
        message=presentation.text(message),
    )


# -- access ---------------------------------------------------------------------------


def _logged_in(request: web.Request) -> Identity:
    identity = identity_of(request)
    if identity is None or session_of(request) is None:
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    return identity


def page_identity(request: web.Request, *, admin: bool = False) -> Identity:
    """The logged-in admin or user of an organisation (an operator is refused: 403)."""
    return page_scope(request, admin=admin)[0]


def page_scope(request: web.Request, *, admin: bool = False) -> tuple[Identity, OrgScope]:
    """The logged-in admin or user and their organisation (`check_role`)."""
    identity = _logged_in(request)
    return identity, check_role(identity, admin=admin)


def operator_page(request: web.Request) -> Identity:
    """The logged-in platform operator (`check_operator`)."""
    return check_operator(_logged_in(request))


async def checked_form(request: web.Request) -> MultiDictProxy[str | bytes | Any]:
    """The posted form, after checking its CSRF token against the session's."""
    form = await request.post()
    session = session_of(request)
    supplied = form.get(CSRF_FIELD)
    if session is None or not csrf_matches(
        session.csrf_token, supplied if isinstance(supplied, str) else None
    ):
        raise ApiError(403, N_("The form has expired or did not come from this portal; reload it."))
    return form


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _notice(request: web.Request, text: str | Text) -> None:
    """A message shown once on the next page (translated when shown)."""
    session = session_of(request)
    if session is not None:
        session.add_notice(text)


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
    request: web.Request,
    *,
    status: int = 200,
    error: Text | None = None,
    name: str = "",
    next_target: str | None = None,
) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status=status,
        title=_presentation(request).gettext("Log in"),
        login_csrf=token,
        # A refused login keeps where the person was going (the form's `next`).
        next=_safe_next(next_target or request.query.get("next", "/")),
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
            request, status=403, error=N_("The login form expired; try again."), name=name
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
            error=N_(
                "Too many failed logins. Try again in {minutes} minute(s).",
                minutes=math.ceil(wait / 60),
            ),
        )
    identity: Identity | None = None
    if name and password:
        identity = await _verify_login(context, name, password)
    if identity is None:
        context.throttle.failed(address, name, now)
        await context.audit(request, name or "-", "login.failed", None)
        return _login_page(
            request,
            status=401,
            error=N_("Wrong name or password."),
            name=name,
            next_target=_text(form, "next"),
        )
    context.throttle.succeeded(address, name)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await context.sessions.delete(old)
    session = await context.sessions.create(identity, now)
    await context.audit(request, identity, "login", None)
    default = _home(identity)
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


async def _verify_login(context: PortalContext, name: str, password: str) -> Identity | None:
    """Who `name` and `password` log in as: an admin or operator by name, or a user as
    "extension@domain-or-slug" (the extension alone with a single organisation)."""
    extension, at, where = name.partition("@")
    if not at:
        admin = await context.store.verify_admin(name, password)
        if admin is not None:
            if admin.is_operator:
                return operator_identity(admin.name)
            org = await context.store.organisation_by_id(admin.org_id) if admin.org_id else None
            return admin_identity(admin.name, org.scope) if org is not None else None
    if not extension.isdigit():
        return None
    org = None
    if at:
        org = await context.store.organisation_by_domain(where)
        org = org or await context.store.get_organisation(where.lower())
    else:
        orgs = await context.store.list_organisations()
        org = orgs[0] if len(orgs) == 1 else None
    if org is None:
        # The same argon2 work as a wrong password: timing does not tell what exists.
        await context.store.passwords.verify(None, password)
        return None
    user = await context.store.verify_user_password(org.scope, extension, password)
    return user_identity(org.scope, user.extension, user.name) if user is not None else None


def _home(identity: Identity) -> str:
    if identity.is_operator:
        return "/operator"
    return "/settings" if identity.is_admin else "/reports"


@routes.post("/logout")
async def post_logout(request: web.Request) -> web.Response:
    identity = page_identity(request)
    await checked_form(request)
    context = context_of(request)
    session = session_of(request)
    if session is not None:
        await context.sessions.delete(session.id)
    await context.audit(request, identity, "logout", None)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@routes.get("/")
async def get_root(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(_home(_logged_in(request)))


# -- recording settings -----------------------------------------------------------------


def _announcement_choices(
    presentation: Presentation, defaults: RecordingSettings, notice: UploadedNotice | None
) -> list[tuple[str, str]]:
    """The announcement radio buttons: the keywords, the config's WAV file if it names
    one (shown by its file name: it is what callers hear until an admin picks something
    else), and the organisation's uploaded notice if it has one."""
    choices = [
        (value, presentation.text(ANNOUNCEMENT_LABELS.get(value, N_(value))))
        for value in ANNOUNCEMENTS
    ]
    if defaults.announcement_file is not None:
        label = presentation.gettext("The notice set in the server's config: {file}")
        choices.insert(0, (ANNOUNCEMENT_FILE, label.format(file=defaults.announcement_file)))
    if notice is not None:
        label = presentation.gettext("Your own notice: {file} ({seconds} s)")
        seconds = presentation.number(notice.seconds, 1)
        choices.insert(0, (ANNOUNCEMENT_UPLOADED, label.format(file=notice.name, seconds=seconds)))
    return choices


async def _settings_page(
    request: web.Request,
    *,
    status: int = 200,
    form: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> web.Response:
    context = context_of(request)
    presentation = _presentation(request)
    org = org_of(page_identity(request, admin=True))
    users = await context.store.list_users(org)
    settings = await load_settings(context.store, context.services, org)
    notice = await current_notice(context, org)
    values: dict[str, object] = dict(settings.settable())
    if form is not None:
        values.update(form)
    days = presentation.gettext("{days} days")
    return render(
        request,
        "settings.html",
        status=status,
        title=presentation.gettext("Recording settings"),
        recording_users=[u for u in users if u.recording_mode != RecordingMode.NEVER],
        other_users=[u for u in users if u.recording_mode == RecordingMode.NEVER],
        form=values,
        errors=errors or {},
        slider_days=RETENTION_SLIDER_DAYS,
        slider_position=slider_position(settings.retention_days),
        slider_description=slider_description(presentation),
        days_text=days,
        feature_code_pattern=FEATURE_CODE_PATTERN,
        announcements=_announcement_choices(presentation, context.services.defaults, notice),
        notice=notice,
        notice_field=NOTICE_FIELD,
        notice_limits=presentation.gettext(
            "A WAV file (PCM, A-law or µ-law) of at most {seconds} seconds and {megabytes} MB."
            " It is converted to telephone sound (8 kHz, mono): what you hear here is what"
            " callers hear."
        ).format(seconds=round(MAX_ANNOUNCEMENT_S), megabytes=MAX_NOTICE_BYTES // (1024 * 1024)),
        channels=[
            (value, presentation.text(CHANNEL_LABELS.get(value, N_(value)))) for value in CHANNELS
        ],
        languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES],
        bulk_minimum=BULK_DOWNLOAD_MIN_RETENTION_DAYS,
        error=N_("Please correct the marked fields.") if errors else None,
    )


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    page_identity(request, admin=True)
    return await _settings_page(request)


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    identity, org = page_scope(request, admin=True)
    context = context_of(request)
    presentation = _presentation(request)
    form = await checked_form(request)
    submitted: dict[str, object] = {}
    errors: dict[str, str] = {}

    def refuse(exc: FieldError) -> None:
        errors[exc.field] = presentation.text(FIELD_ERRORS.get(exc.field, N_(exc.message)))

    # The retention comes from the slider, below.
    for key in SettingKey:
        if key != SettingKey.RETENTION_DAYS and key in form:
            submitted[key.value] = _text(form, key)
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
        refuse(exc)
    changes: dict[str, str] = {}
    # Validate field by field so every wrong field is marked at once.
    for name, value in submitted.items():
        try:
            changes.update(validate_settings_patch({name: value}, context.services.defaults))
        except FieldError as exc:
            refuse(exc)
    if errors:
        shown = {k: v for k, v in submitted.items() if k != SettingKey.RETENTION_DAYS}
        return await _settings_page(request, status=422, form=shown, errors=errors)
    # Only what the admin changed is stored: the form sends every field, and storing the
    # others would put today's values (the config's announcement file, say) out of the
    # config's reach for good.
    before = await load_settings(context.store, context.services, org)
    changed = changed_settings(before, changes)
    try:
        check_settings(before.with_stored(changed))
        await check_uploaded_choice(context, org, changed)
    except FieldError as exc:
        refuse(exc)
        shown = {k: v for k, v in submitted.items() if k != SettingKey.RETENTION_DAYS}
        return await _settings_page(request, status=422, form=shown, errors=errors)
    await save_settings(context.store, org, changed)
    if changed:
        await context.audit(
            request, identity, "settings.change", "settings", json.dumps(changed, sort_keys=True)
        )
    if SettingKey.RETENTION_DAYS in changed:
        _notice(request, N_("Settings saved. Retention changes affect new recordings only."))
    else:
        _notice(request, N_("Settings saved."))
    raise web.HTTPSeeOther("/settings")


@routes.post("/settings/notice")
async def post_notice(request: web.Request) -> web.Response:
    """Upload the organisation's own notice (multipart form): checked, converted to
    8 kHz mono and made the announcement; a refused file is named on the page (422)."""
    identity, org = page_scope(request, admin=True)
    context = context_of(request)
    presentation = _presentation(request)
    try:
        form = await read_notice_form(request)
    except ValueError as exc:
        raise ApiError(400, N_("Send the notice with the upload form.")) from exc
    except NoticeRejected as exc:
        # Refused before the token could be read (the file came first, or was too big):
        # nothing was kept, so there is nothing the token would protect.
        return await _settings_page(
            request, status=422, errors={NOTICE_FIELD: rejection_text(exc, presentation)}
        )
    session = session_of(request)
    if session is None or not csrf_matches(session.csrf_token, form.csrf_token):
        raise ApiError(403, N_("The form has expired or did not come from this portal; reload it."))
    try:
        notice = await save_notice(context, request, identity, org, form)
    except NoticeRejected as exc:
        return await _settings_page(
            request, status=422, errors={NOTICE_FIELD: rejection_text(exc, presentation)}
        )
    _notice(
        request,
        N_(
            "Your notice {file} is saved; callers hear it from the next call on.",
            file=notice.name,
        ),
    )
    raise web.HTTPSeeOther("/settings")


@routes.get("/settings/notice/audio")
async def get_notice_audio(request: web.Request) -> web.StreamResponse:
    """The organisation's uploaded notice as callers hear it (the converted file)."""
    _, org = page_scope(request, admin=True)
    context = context_of(request)
    notice = await current_notice(context, org)
    path = notice_file(context, org, notice) if notice is not None else None
    if path is None:
        raise ApiError(404, N_("No notice has been uploaded."))
    return web.FileResponse(
        path, headers={"Content-Type": "audio/wav", "Cache-Control": "private, no-store"}
    )


@routes.post("/settings/recording-users")
async def post_recording_user(request: web.Request) -> web.Response:
    identity, org = page_scope(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = _text(form, "extension")
    user = await known_user(context, org, extension)
    await change_mode(context, request, identity, extension, RecordingMode.ON_DEMAND)
    _notice(
        request,
        N_("{name} ({extension}) is now recorded on demand.", name=user.name, extension=extension),
    )
    raise web.HTTPSeeOther("/settings")


def _mode_saved(user: User) -> Text:
    values = {"name": user.name, "extension": user.extension}
    if user.recording_mode == RecordingMode.ALWAYS:
        return N_("Saved: {name} ({extension}) call recording always.", **values)
    if user.recording_mode == RecordingMode.ON_DEMAND:
        return N_("Saved: {name} ({extension}) call recording on demand.", **values)
    return N_("Saved: {name} ({extension}) call recording never.", **values)


@routes.post("/settings/recording-users/{extension}/mode")
async def post_recording_mode(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    mode = _text(form, "mode")
    if mode not in (RecordingMode.ALWAYS, RecordingMode.ON_DEMAND):
        raise ApiError(422, N_("Choose always or on demand."), "mode")
    user = await change_mode(context, request, identity, request.match_info["extension"], mode)
    _notice(request, _mode_saved(user))
    raise web.HTTPSeeOther("/settings")


@routes.get("/settings/recording-users/{extension}/remove")
async def get_recording_remove(request: web.Request) -> web.Response:
    """The confirmation step before a user comes off recording (a page with a form, so
    it works without JavaScript)."""
    _, org = page_scope(request, admin=True)
    presentation = _presentation(request)
    user = await known_user(context_of(request), org, request.match_info["extension"])
    return render(
        request,
        "confirm.html",
        title=presentation.gettext("Remove from recording"),
        question=presentation.text(
            N_(
                "Stop recording the calls of {name} ({extension})?",
                name=user.name,
                extension=user.extension,
            )
        ),
        detail=presentation.gettext(
            "Their recordings made so far are kept until their retention ends."
            " You can add them to recording again at any time."
        ),
        action=f"/settings/recording-users/{user.extension}/remove",
        confirm_label=presentation.gettext("Remove from recording"),
        cancel_href="/settings",
    )


@routes.post("/settings/recording-users/{extension}/remove")
async def post_recording_remove(request: web.Request) -> web.Response:
    """Take a user off recording once confirmed; a post without `confirm=yes` (an old
    form, a forged button) is sent to the confirmation page instead."""
    identity, org = page_scope(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    known = await known_user(context, org, extension)
    if _text(form, "confirm") != "yes":
        raise web.HTTPSeeOther(f"/settings/recording-users/{known.extension}/remove")
    user = await change_mode(context, request, identity, extension, RecordingMode.NEVER)
    _notice(
        request,
        N_(
            "{name} ({extension}) is no longer recorded; their recordings are kept.",
            name=user.name,
            extension=user.extension,
        ),
    )
    raise web.HTTPSeeOther("/settings")


# -- users --------------------------------------------------------------------------------


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    return await _users_page(request)


async def _users_page(
    request: web.Request, *, status: int = 200, generated: dict[str, Any] | None = None
) -> web.Response:
    _, org = page_scope(request, admin=True)
    store = context_of(request).store
    entries = [
        {"user": user, "devices": await store.list_devices(org, user.extension)}
        for user in await store.list_users(org)
    ]
    return render(
        request,
        "users.html",
        status=status,
        title=_presentation(request).gettext("Users"),
        users=entries,
        recording_modes=RECORDING_MODES,
        default_mode=DEFAULT_RECORDING_MODE,
        languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES],
        generated=generated,
    )


def _shown_once(made: Generated, username: str) -> dict[str, Any]:
    """What the password box shows of a password callrec generated (`no-store` page)."""
    return {
        "user": made.user,
        "device": made.device,
        "username": username,
        "domain": made.user.realm,
        "password": made.password,
    }


def _password_page(
    request: web.Request, made: Generated, *, username: str, back: str, status: int = 200
) -> web.Response:
    """The page that shows a password callrec generated: this once (no-store), never
    again; only its HA1 is kept."""
    assert made.password is not None
    return render(
        request,
        "users_password.html",
        status=status,
        title=_presentation(request).gettext("New SIP password"),
        generated=_shown_once(made, username),
        back=back,
    )


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    """Add a user: on demand unless another mode is chosen; a SIP password generated
    (and shown once) unless one is typed; a portal login if a portal password is."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    fields = ("extension", "name", "email", "mode", "password", "portal_password")
    data: dict[str, Any] = {key: _text(form, key) for key in fields}
    data = {key: value for key, value in data.items() if value}
    if "password" not in data:
        data["generate_password"] = True
    device = _text(form, "device")
    if device:
        data["devices"] = [device]
    made = await add_user(context, request, identity, data)
    user = made.user
    _notice(request, N_("Added {name} ({extension}).", name=user.name, extension=user.extension))
    if made.password is not None:
        # The Users page itself, with the password on top: shown this once.
        generated = _shown_once(made, user.extension)
        return await _users_page(request, status=201, generated=generated)
    raise web.HTTPSeeOther("/users")


@routes.get("/users/{extension}")
async def get_user_page(request: web.Request) -> web.Response:
    _, org = page_scope(request, admin=True)
    context = context_of(request)
    user = await known_user(context, org, request.match_info["extension"])
    return render(
        request,
        "users_edit.html",
        title=user.name,
        user=user,
        devices=await context.store.list_devices(org, user.extension),
    )


def _user_page(extension: str) -> str:
    return f"/users/{extension}"


@routes.post("/users/{extension}")
async def post_user_page(request: web.Request) -> web.Response:
    """Change a user's name and e-mail."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    changes = {"name": _text(form, "name"), "email": _text(form, "email") or None}
    user = await change_user(context, request, identity, extension, changes)
    _notice(request, N_("Saved {name} ({extension}).", name=user.name, extension=extension))
    raise web.HTTPSeeOther(_user_page(extension))


@routes.post("/users/{extension}/password")
async def post_user_password(request: web.Request) -> web.Response:
    """A new SIP password: the one typed, or a generated one shown once."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    typed = _text(form, "password")
    data: dict[str, Any] = {"password": typed} if typed else {"generate_password": True}
    made = await change_sip_password(context, request, identity, extension, data)
    if made.password is not None:
        return _password_page(request, made, username=extension, back=_user_page(extension))
    _notice(request, N_("SIP password of {extension} changed.", extension=extension))
    raise web.HTTPSeeOther(_user_page(extension))


@routes.post("/users/{extension}/portal-login")
async def post_user_portal_login(request: web.Request) -> web.Response:
    """Give a user a portal login (with the password typed) or take it away."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    if _text(form, "action") == "remove":
        await change_portal_login(context, request, identity, extension, None)
        _notice(request, N_("{extension} can no longer log in to the portal.", extension=extension))
    else:
        password = parse_portal_password({"portal_password": _text(form, "portal_password")})
        if password is None:
            raise ApiError(422, N_("portal_password is required"), "portal_password")
        await change_portal_login(context, request, identity, extension, password)
        _notice(request, N_("{extension} can log in to the portal.", extension=extension))
    raise web.HTTPSeeOther(_user_page(extension))


@routes.post("/users/{extension}/remove")
async def post_user_remove(request: web.Request) -> web.Response:
    """Remove a user, once the admin has ticked the confirmation."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    confirmed = _text(form, "confirm") == "yes"
    user = await remove_user(context, request, identity, extension, confirmed=confirmed)
    _notice(
        request,
        N_(
            "Removed {name} ({extension}); their calls and recordings are kept.",
            name=user.name,
            extension=extension,
        ),
    )
    raise web.HTTPSeeOther("/users")


@routes.post("/users/{extension}/devices")
async def post_user_device(request: web.Request) -> web.Response:
    """Add a device with its own SIP username and a generated password (shown once)."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    extension = request.match_info["extension"]
    data = {"username": _text(form, "username"), "generate_password": True}
    made = await add_device(context, request, identity, extension, data)
    assert made.device is not None
    username = made.device.username or extension
    if made.device.username is None:
        # The device signs in as the extension: it has no password of its own.
        _notice(request, N_("Device {uri} added.", uri=made.device.uri))
        raise web.HTTPSeeOther(_user_page(extension))
    return _password_page(request, made, username=username, back=_user_page(extension), status=201)


@routes.post("/users/{extension}/devices/{id}/password")
async def post_device_password(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    await checked_form(request)
    extension, device_id = request.match_info["extension"], parse_id(request)
    data = {"generate_password": True}
    made = await change_device_password(context, request, identity, extension, device_id, data)
    assert made.device is not None
    username = made.device.username or extension
    return _password_page(request, made, username=username, back=_user_page(extension))


@routes.post("/users/{extension}/devices/{id}/remove")
async def post_device_remove(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    await checked_form(request)
    extension, device_id = request.match_info["extension"], parse_id(request)
    device = await remove_device(context, request, identity, extension, device_id)
    _notice(request, N_("Device {uri} removed.", uri=device.uri))
    raise web.HTTPSeeOther(_user_page(extension))


@routes.post("/users/{extension}/mode")
async def post_user_mode(request: web.Request) -> web.Response:
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    user = await change_mode(
        context, request, identity, request.match_info["extension"], _text(form, "mode")
    )
    _notice(request, _mode_saved(user))
    raise web.HTTPSeeOther("/users")


@routes.post("/users/{extension}/language")
async def post_user_language(request: web.Request) -> web.Response:
    """A user's own portal language ("": the organisation's)."""
    identity = page_identity(request, admin=True)
    context = context_of(request)
    form = await checked_form(request)
    user = await change_language(
        context, request, identity, request.match_info["extension"], _text(form, "language")
    )
    _notice(
        request,
        N_("Saved: {name} ({extension}) language.", name=user.name, extension=user.extension),
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
    identity, org = page_scope(request)
    context = context_of(request)
    presentation = _presentation(request)
    error: str | Text | None = None
    try:
        call_query, paging = parse_call_filters(request.query, identity, presentation)
    except ApiError as exc:
        error = exc.text
        call_query, paging = parse_call_filters({}, identity, presentation)
    rows, total = await context.store.calls_page(org, call_query, paging.page_size, paging.offset)
    spans = await context.store.recorded_spans(org, [r for row in rows for r in row.recordings])
    settings = await load_settings(context.store, context.services, org)
    pages = max(1, math.ceil(total / paging.page_size))
    prev_url, next_url = _page_links(request, paging.page, pages)
    filters = {
        "q": request.query.get("q", ""),
        "from": request.query.get("from", ""),
        "to": request.query.get("to", ""),
        "extension": request.query.get("extension", ""),
        "recorded_only": call_query.recorded_only,
    }
    return render(
        request,
        "reports.html",
        status=422 if error else 200,
        title=presentation.gettext("Reports"),
        rows=rows,
        spans=spans,
        total=total,
        filters=filters,
        search_max=MAX_SEARCH_LENGTH,
        page=paging.page,
        pages=pages,
        prev_url=prev_url,
        next_url=next_url,
        error=error,
        bulk_download=identity.is_admin and settings.bulk_download_enabled,
    )


# -- bulk download ---------------------------------------------------------------------


async def _bulk_page(
    request: web.Request, *, status: int = 200, error: str | Text | None = None, month: str = ""
) -> web.Response:
    context = context_of(request)
    presentation = _presentation(request)
    org = org_of(page_identity(request, admin=True))
    settings = await load_settings(context.store, context.services, org)
    refused = None
    if not bulk_download_allowed(settings.retention_days):
        refused = presentation.gettext(
            "Bulk download needs a retention of {minimum} days or more; it is {days} days now."
            " Raise it on the Recording settings page (it applies to new recordings only)."
        ).format(minimum=BULK_DOWNLOAD_MIN_RETENTION_DAYS, days=settings.retention_days)
    elif not settings.bulk_download:
        refused = presentation.gettext(
            "Bulk download is switched off. An admin switches it on under Settings."
        )
    if not month:
        month = presentation.this_month(context.now())
    return render(
        request,
        "bulk.html",
        status=status,
        title=presentation.gettext("Bulk download"),
        exports=await context.store.list_exports(org, 50),
        refused=refused,
        month=month,
        error=error,
        link_days=round(EXPORT_LINK_LIFETIME_S / 86400),
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
        return await _bulk_page(request, status=exc.status, error=exc.text, month=month)
    _notice(
        request,
        N_("Export of {month} ordered; you will get an e-mail when it is ready.", month=month),
    )
    raise web.HTTPSeeOther("/bulk")


@routes.get("/exports/download")
async def get_export_download(request: web.Request) -> web.StreamResponse:
    """The signed link from the export e-mail, until it expires, for an admin logged in
    to the export's organisation (a forwarded link is useless to anyone else)."""
    identity, org = page_scope(request, admin=True)
    context = context_of(request)
    token = request.query.get("token", "")
    verify = context.services.verify_export_link
    found = await verify(org, token) if verify is not None and token else None
    if found is None:
        raise ApiError(403, N_("This download link is invalid or has expired."))
    export, path = found
    await context.audit(request, identity, "export.download", f"export {export.id}")
    name = f"callrec-{export.month}.zip"
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
    _, org = page_scope(request, admin=True)
    context = context_of(request)
    text = request.query.get("page", "1")
    page = int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1
    total = await context.store.audit_total(org)
    pages = max(1, math.ceil(total / DEFAULT_PAGE_SIZE))
    entries = await context.store.list_audit(org, DEFAULT_PAGE_SIZE, (page - 1) * DEFAULT_PAGE_SIZE)
    prev_url, next_url = _page_links(request, page, pages)
    return render(
        request,
        "audit.html",
        title=_presentation(request).gettext("Audit log"),
        entries=entries,
        page=page,
        pages=pages,
        prev_url=prev_url,
        next_url=next_url,
    )
