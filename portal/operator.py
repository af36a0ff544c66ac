"""The operator's part of the portal: organisations, their SIP domains, the numbers the
trunk delivers to each, their first admins, and their usage for billing.

An operator (a platform admin, `Identity.is_operator`) sees organisations and their
usage, never their calls, recordings or users; every route here refuses anyone else
(403). The REST routes live under /api/v1/orgs and /api/v1/usage, the pages under
/operator. Every change is audited in the platform's log (and, for an organisation's
first admin, in that organisation's too).

Removing an organisation (`/operator/orgs/{slug}/remove`) shows what it holds first and
takes two explicit choices: the removal itself, and, while recordings are still under
retention, that they are to be deleted (`storage.organisations.remove_organisation`
says what goes and what is refused).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aiohttp import web

from callrec.policy import LANGUAGES
from callrec.services.export import parse_month
from callrec.services.presentation import LANGUAGE_NAMES, N_, Text
from callrec.services.records import (
    USAGE_FIELDS,
    did_json,
    organisation_json,
    usage_json,
)
from portal.api import API, _parse_bool, json_body, require_operator
from portal.auth import Identity, client_address
from portal.context import ApiError, PortalContext, context_of
from portal.pages import _notice, _presentation, checked_form, operator_page, render
from portal.recording_settings import load_settings
from storage.errors import Conflict, InvalidValue, NotFound, StorageError
from storage.models import Organisation
from storage.notices import NoticeFiles
from storage.organisations import OrgHoldings, remove_organisation

routes = web.RouteTableDef()


# -- shared operations ---------------------------------------------------------------------


def _text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(422, N_("{field} must be text", field=field), field)
    return value.strip()


async def _organisation(context: PortalContext, slug: str) -> Organisation:
    org = await context.store.get_organisation(slug)
    if org is None:
        raise ApiError(404, N_("no organisation {slug}", slug=slug))
    return org


async def create_organisation(
    context: PortalContext, request: web.Request, identity: Any, data: Mapping[str, Any]
) -> Organisation:
    """A new organisation (its language and time zone: the server's defaults unless
    given), with its first admin if `admin_name` and `admin_password` are given."""
    defaults = context.services.defaults
    slug, name, domain = _text(data, "slug"), _text(data, "name"), _text(data, "domain")
    for field, value in (("slug", slug), ("name", name), ("domain", domain)):
        if value is None:
            raise ApiError(422, N_("{field} is required", field=field), field)
    assert slug is not None and name is not None and domain is not None
    admin_name, admin_password = _text(data, "admin_name"), _text(data, "admin_password")
    if (admin_name is None) != (admin_password is None):
        raise ApiError(422, N_("give the first admin both a name and a password"), "admin_password")
    if admin_name is not None and await context.store.get_admin(admin_name) is not None:
        raise ApiError(409, N_("admin {name} already exists", name=admin_name), "admin_name")
    org = await context.store.add_organisation(
        slug,
        name,
        domain,
        language=_text(data, "language") or defaults.language,
        timezone=_text(data, "timezone") or defaults.timezone,
    )
    await context.audit(request, identity, "org.add", f"org:{org.slug}", org.domain)
    if admin_name is not None and admin_password is not None:
        await add_org_admin(
            context, request, identity, org, admin_name, admin_password, _text(data, "admin_email")
        )
    return org


async def add_org_admin(
    context: PortalContext,
    request: web.Request,
    identity: Any,
    org: Organisation,
    name: str,
    password: str,
    email: str | None,
) -> None:
    admin = await context.store.add_admin(org.scope, name, password, email=email)
    await context.audit(request, identity, "admin.add", f"org:{org.slug}", f"admin:{admin.name}")
    await context.store.audit(org.scope, identity.actor, "admin.add", f"admin:{admin.name}")


async def change_organisation(
    context: PortalContext,
    request: web.Request,
    identity: Any,
    org: Organisation,
    data: Mapping[str, Any],
) -> Organisation:
    updated = await context.store.update_organisation(
        org.scope,
        name=_text(data, "name"),
        domain=_text(data, "domain"),
        language=_text(data, "language"),
        timezone=_text(data, "timezone"),
    )
    await context.audit(
        request,
        identity,
        "org.change",
        f"org:{org.slug}",
        json.dumps(organisation_json(updated), sort_keys=True),
    )
    return updated


async def usage_rows(context: PortalContext, month: str) -> list[dict[str, Any]]:
    """Each organisation's usage in `month` (its own time zone's month)."""
    rows = []
    for org in await context.store.list_organisations():
        settings = await load_settings(context.store, context.services, org.scope)
        zone = context.services.presentations.for_settings(settings)
        since, until = parse_month(month, zone)
        usage = await context.store.usage(org.scope, since, until, settings.retention_days)
        rows.append(usage_json(org, month, usage))
    return rows


def _month(query: Mapping[str, str], context: PortalContext) -> str:
    month = query.get("month", "").strip()
    if not month:
        return context.services.presentations.get("en", "UTC").this_month(context.now())
    try:
        parse_month(month)
    except InvalidValue as exc:
        raise ApiError(422, N_("month must be YYYY-MM"), "month") from exc
    return month


# -- REST --------------------------------------------------------------------------------


@routes.get(f"{API}/orgs")
async def get_orgs(request: web.Request) -> web.Response:
    require_operator(request)
    orgs = await context_of(request).store.list_organisations()
    return web.json_response({"items": [organisation_json(org) for org in orgs]})


@routes.post(f"{API}/orgs")
async def post_org(request: web.Request) -> web.Response:
    identity = require_operator(request)
    context = context_of(request)
    org = await create_organisation(context, request, identity, await json_body(request))
    return web.json_response(organisation_json(org), status=201)


@routes.get(f"{API}/orgs/{{slug}}")
async def get_org(request: web.Request) -> web.Response:
    require_operator(request)
    org = await _organisation(context_of(request), request.match_info["slug"])
    return web.json_response(organisation_json(org))


@routes.patch(f"{API}/orgs/{{slug}}")
async def patch_org(request: web.Request) -> web.Response:
    identity = require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    data = await json_body(request)
    updated = await change_organisation(context, request, identity, org, data)
    return web.json_response(organisation_json(updated))


@routes.post(f"{API}/orgs/{{slug}}/admins")
async def post_org_admin(request: web.Request) -> web.Response:
    identity = require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    data = await json_body(request)
    name, password = _text(data, "name"), _text(data, "password")
    if name is None or password is None:
        raise ApiError(422, N_("{field} is required", field="name, password"), "name")
    if await context.store.get_admin(name) is not None:
        raise ApiError(409, N_("admin {name} already exists", name=name), "name")
    await add_org_admin(context, request, identity, org, name, password, _text(data, "email"))
    return web.json_response({"name": name, "organisation": org.slug}, status=201)


@routes.get(f"{API}/orgs/{{slug}}/dids")
async def get_org_dids(request: web.Request) -> web.Response:
    require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    dids = await context.store.list_dids(org.scope)
    return web.json_response({"items": [did_json(did) for did in dids]})


@routes.post(f"{API}/orgs/{{slug}}/dids")
async def post_org_did(request: web.Request) -> web.Response:
    identity = require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    data = await json_body(request)
    first = _text(data, "first")
    if first is None:
        raise ApiError(422, N_("{field} is required", field="first"), "first")
    did = await context.store.add_did(
        org.scope, first, _text(data, "last"), _text(data, "extension")
    )
    await context.audit(request, identity, "did.add", f"org:{org.slug}", f"{did.first}..{did.last}")
    return web.json_response(did_json(did), status=201)


@routes.delete(f"{API}/orgs/{{slug}}/dids/{{id}}")
async def delete_org_did(request: web.Request) -> web.Response:
    identity = require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 19:
        raise ApiError(404, "no such number range")
    await context.store.remove_did(org.scope, int(text))
    await context.audit(request, identity, "did.remove", f"org:{org.slug}", text)
    return web.Response(status=204)


@routes.delete(f"{API}/orgs/{{slug}}")
async def delete_org(request: web.Request) -> web.Response:
    """Remove an organisation with everything it holds and answer what went. As the
    page's box and the CLI's question, `confirm` must name the organisation (422
    otherwise); 409 while one of its calls is in progress, and while a recording is
    under retention unless `purge_recordings=true`
    (storage.organisations.remove_organisation)."""
    identity = require_operator(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    purge = _parse_bool(request.query, "purge_recordings")
    if request.query.get("confirm") != org.slug:
        raise ApiError(422, N_("confirm with confirm={slug}", slug=org.slug), "confirm")
    removed = await _remove(context, request, identity, org, purge_recordings=purge)
    return web.json_response({"organisation": org.slug, "removed": asdict(removed)})


@routes.get(f"{API}/usage")
async def get_usage(request: web.Request) -> web.Response:
    """Every organisation's usage in `month` (default: this one), as JSON or, with
    `format=csv`, CSV."""
    require_operator(request)
    context = context_of(request)
    rows = await usage_rows(context, _month(request.query, context))
    if request.query.get("format") == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(USAGE_FIELDS), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        return web.Response(text=buffer.getvalue(), content_type="text/csv")
    return web.json_response({"items": rows})


# -- pages -------------------------------------------------------------------------------


@routes.get("/operator")
async def get_operator(request: web.Request) -> web.Response:
    identity = operator_page(request)
    context = context_of(request)
    operator = await context.store.get_admin(identity.name)
    month = _month(request.query, context)
    usage = {row["organisation"]: row for row in await usage_rows(context, month)}
    return render(
        request,
        "operator.html",
        title=_presentation(request).gettext("Organisations"),
        orgs=await context.store.list_organisations(),
        usage=usage,
        month=month,
        defaults=context.services.defaults,
        languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES],
        own_language=operator.language if operator is not None else None,
    )


@routes.post("/operator/language")
async def post_operator_language(request: web.Request) -> web.Response:
    """The operator's own language for these pages ("": the browser's, else the
    server's), audited in the platform's log."""
    identity = operator_page(request)
    context = context_of(request)
    form = await checked_form(request)
    value = form.get("language")
    language = value.strip() or None if isinstance(value, str) else None
    try:
        await context.store.set_operator_language(identity.name, language)
    except StorageError as error:
        raise ApiError.from_storage(error) from error
    await context.audit(
        request, identity, "language.change", f"operator:{identity.name}", language or "browser"
    )
    raise web.HTTPSeeOther("/operator")


@routes.post("/operator")
async def post_operator(request: web.Request) -> web.Response:
    identity = operator_page(request)
    context = context_of(request)
    form = await checked_form(request)
    data = {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        org = await create_organisation(context, request, identity, data)
    except StorageError as error:
        raise ApiError.from_storage(error) from error
    raise web.HTTPSeeOther(f"/operator/orgs/{org.slug}")


@routes.get("/operator/orgs/{slug}")
async def get_operator_org(request: web.Request) -> web.Response:
    operator_page(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    return render(
        request,
        "operator_org.html",
        title=org.name,
        org=org,
        dids=await context.store.list_dids(org.scope),
        admins=await context.store.list_admins(org.scope),
    )


@routes.post("/operator/orgs/{slug}")
async def post_operator_org(request: web.Request) -> web.Response:
    identity = operator_page(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    form = await checked_form(request)
    data = {key: value for key, value in form.items() if isinstance(value, str)}
    action = data.pop("action", "")
    if action == "did.add":
        first = _text(data, "first")
        if first is None:
            raise ApiError(422, N_("{field} is required", field="first"), "first")
        await context.store.add_did(org.scope, first, _text(data, "last"), _text(data, "extension"))
        await context.audit(request, identity, "did.add", f"org:{org.slug}", first)
    elif action == "did.remove":
        did_id = data.get("id", "")
        if not did_id.isdigit():
            raise NotFound("no such number range")
        await context.store.remove_did(org.scope, int(did_id))
        await context.audit(request, identity, "did.remove", f"org:{org.slug}", did_id)
    elif action == "admin.add":
        name, password = _text(data, "name"), _text(data, "password")
        if name is None or password is None:
            raise ApiError(422, N_("{field} is required", field="name, password"), "name")
        if await context.store.get_admin(name) is not None:
            raise ApiError(409, N_("admin {name} already exists", name=name), "name")
        await add_org_admin(context, request, identity, org, name, password, _text(data, "email"))
    else:
        await change_organisation(context, request, identity, org, data)
    raise web.HTTPSeeOther(f"/operator/orgs/{org.slug}")


# Why a removal was refused, by the refusing field (`OrgHoldings.refusal`).
_REFUSALS = {
    "calls": N_("Calls of this organisation are in progress; remove it once they have ended."),
    "purge_recordings": N_(
        "This organisation has recordings still under retention. Tick the box to delete"
        " them and their files, or export them first."
    ),
}


async def _removal_page(
    request: web.Request, org: Organisation, *, status: int = 200, error: Any = None
) -> web.Response:
    context = context_of(request)
    holdings = await context.store.organisation_holdings(org.scope, context.now())
    return render(
        request,
        "operator_org_remove.html",
        status=status,
        title=_presentation(request).gettext("Remove organisation"),
        org=org,
        holdings=holdings,
        error=error,
    )


async def _remove(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    org: Organisation,
    *,
    purge_recordings: bool,
) -> OrgHoldings:
    """Remove `org` with its files, audited in the platform's log; what it held."""
    return await remove_organisation(
        context.store,
        context.services.files,
        NoticeFiles(context.services.storage_dir),
        org.scope,
        now=context.now(),
        purge_recordings=purge_recordings,
        actor=identity.actor,
        address=client_address(request),
    )


@routes.get("/operator/orgs/{slug}/remove")
async def get_operator_org_remove(request: web.Request) -> web.Response:
    """What removing the organisation takes with it, and the two boxes to tick."""
    operator_page(request)
    org = await _organisation(context_of(request), request.match_info["slug"])
    return await _removal_page(request, org)


@routes.post("/operator/orgs/{slug}/remove")
async def post_operator_org_remove(request: web.Request) -> web.Response:
    """Remove the organisation once the operator ticked the removal box (and the
    recordings box while it has recordings under retention); a refusal shows the page
    again, saying why."""
    identity = operator_page(request)
    context = context_of(request)
    org = await _organisation(context, request.match_info["slug"])
    form = await checked_form(request)
    if form.get("confirm") != "yes":
        error = N_("Tick the box to confirm the removal.")
        return await _removal_page(request, org, status=422, error=error)
    try:
        purge = form.get("purge_recordings") == "yes"
        await _remove(context, request, identity, org, purge_recordings=purge)
    except Conflict as refused:
        refusal: Text | str = _REFUSALS.get(refused.field or "") or refused.message
        return await _removal_page(request, org, status=409, error=refusal)
    _notice(request, N_("Removed organisation {name} ({slug}).", name=org.name, slug=org.slug))
    raise web.HTTPSeeOther("/operator")
