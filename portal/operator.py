"""The operator's part of the portal: organisations, their SIP domains, the numbers the
trunk delivers to each, their first admins, and their usage for billing.

An operator (a platform admin, `Identity.is_operator`) sees organisations and their
usage, never their calls, recordings or users; every route here refuses anyone else
(403). The REST routes live under /api/v1/orgs and /api/v1/usage, the pages under
/operator. Every change is audited in the platform's log (and, for an organisation's
first admin, in that organisation's too).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from callrec.services.export import parse_month
from callrec.services.presentation import N_
from callrec.services.records import (
    USAGE_FIELDS,
    did_json,
    organisation_json,
    usage_json,
)
from portal.api import API, json_body, require_operator
from portal.context import ApiError, PortalContext, context_of
from portal.pages import _presentation, checked_form, operator_page, render
from portal.recording_settings import load_settings
from storage.errors import InvalidValue, NotFound, StorageError
from storage.models import Organisation

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
    operator_page(request)
    context = context_of(request)
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
    )


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
