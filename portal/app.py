"""The portal's aiohttp application and its start/stop inside `callrec serve`.

`start_portal(config, store, services=...)` listens on `[portal] listen` and returns a
`PortalHandle`; `await handle.stop()` closes it. Tests call `start_portal_at` with port 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from callrec.config import Config
from callrec.services.export import Spawn
from callrec.services.presentation import N_, Text
from portal import api, operator, pages
from portal.auth import (
    CSRF_HEADER,
    ROLE_OPERATOR,
    SESSION_COOKIE,
    Identity,
    LoginThrottle,
    SessionStore,
    admin_identity,
    csrf_matches,
    operator_identity,
    parse_bearer,
)
from portal.context import (
    CONTEXT,
    IDENTITY,
    RETRY_AFTER_S,
    SESSION,
    ApiError,
    PortalContext,
    context_of,
)
from portal.health import Check, health_route, store_check
from portal.i18n import presentation_for
from portal.metrics import MetricsSource, metrics_route
from portal.services import PortalServices
from storage.database import Store
from storage.errors import StorageError
from storage.models import ApiToken

log = logging.getLogger("callrec.portal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
        " media-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
}


def _is_api(request: web.Request) -> bool:
    return request.path.startswith(api.API + "/") or request.path == api.API


def _error_response(
    request: web.Request, status: int, message: str | Text, field: str | None = None
) -> web.StreamResponse:
    if status == 503:
        response = _error_body(request, status, message, field)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return _error_body(request, status, message, field)


def _error_body(
    request: web.Request, status: int, message: str | Text, field: str | None
) -> web.StreamResponse:
    if _is_api(request):
        # The API answers in English; pages translate a marked message.
        body: dict[str, object] = {"error": str(message), "status": status}
        if field is not None:
            body["field"] = field
        return web.json_response(body, status=status)
    return pages.render_error(request, status, message)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a short JSON (API) or HTML (pages) answer, never a traceback."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(request, exc.status, exc.text, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        explained = exc.text and not exc.text.startswith(f"{exc.status}:")
        message: str | Text = exc.text if explained and exc.text else exc.reason
        if not explained and not _is_api(request):
            message = pages.ERROR_TITLES.get(exc.status, pages.SOMETHING_WENT_WRONG)
        response = _error_response(request, exc.status, message)
        for header in ("Allow", "Retry-After", "Content-Range"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
    except StorageError as exc:
        error = ApiError.from_storage(exc)
        if error.status >= 500:
            log.error("portal %s %s: storage: %s", request.method, request.path, exc)
        response = _error_response(request, error.status, error.message, error.field)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("portal error on %s %s", request.method, request.path)
        response = _error_response(request, 500, N_("internal error; see the server log"))
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the identity from a bearer token or the session cookie; check the CSRF
    header on the API's writes made with a cookie."""
    context = context_of(request)
    bearer = parse_bearer(request.headers.get("Authorization"))
    if bearer is not None:
        token = await context.store.verify_api_token(bearer)
        if token is None:
            raise ApiError(401, "invalid or revoked API token")
        request[IDENTITY] = await _token_identity(context, token)
    else:
        session_id = request.cookies.get(SESSION_COOKIE)
        session = await context.sessions.get(session_id, context.now()) if session_id else None
        if session is not None:
            request[SESSION] = session
            request[IDENTITY] = session.identity
            if (
                _is_api(request)
                and request.method not in _SAFE_METHODS
                and not csrf_matches(session.csrf_token, request.headers.get(CSRF_HEADER))
            ):
                raise ApiError(403, f"send the session's CSRF token in {CSRF_HEADER}")
            try:
                return await handler(request)
            finally:
                # Notices added before a redirect, or shown by this page, are stored
                # (a handler that redirects does so by raising).
                await context.sessions.save(session)
    return await handler(request)


async def _token_identity(context: PortalContext, token: ApiToken) -> Identity:
    """Who a bearer token acts as: an operator, or an admin of its organisation."""
    if token.role == ROLE_OPERATOR and token.org_id is None:
        return operator_identity(token.name, via="token")
    org = await context.store.organisation_by_id(token.org_id) if token.org_id else None
    if org is None:
        raise ApiError(401, "invalid or revoked API token")
    return admin_identity(token.name, org.scope, via="token")


@web.middleware
async def presentation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decide the language and time zone of a page once, before its handler runs (the
    API reads them only where it needs the time zone)."""
    if not _is_api(request):
        try:
            await presentation_for(request)
        except StorageError as exc:
            # The page itself will meet the same store; its error page falls back to the
            # browser's language.
            log.warning("portal %s: no presentation settings: %s", request.path, exc)
    return await handler(request)


def build_app(
    store: Store,
    services: PortalServices,
    metrics: MetricsSource | None = None,
    health: Mapping[str, Check] | None = None,
) -> web.Application:
    """The portal application (pages and API) on one store; GET /metrics if `metrics`;
    GET /healthz over the store and the `health` checks given (the object store's)."""
    app = web.Application(
        middlewares=[error_middleware, identity_middleware, presentation_middleware],
        client_max_size=1024 * 1024,
    )
    app[CONTEXT] = PortalContext(
        store=store,
        services=services,
        sessions=SessionStore(store),
        throttle=LoginThrottle(),
        templates=pages.make_templates(),
    )
    app.add_routes(api.routes)
    app.add_routes(operator.routes)
    app.add_routes(pages.routes)
    if metrics is not None:
        app.add_routes([metrics_route(metrics)])
    app.add_routes([health_route({"store": store_check(store), **(health or {})})])
    return app


@dataclass
class PortalHandle:
    """A running portal; `url` is where it listens."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_portal_at(
    store: Store,
    services: PortalServices,
    host: str,
    port: int,
    *,
    metrics: MetricsSource | None = None,
    health: Mapping[str, Check] | None = None,
) -> PortalHandle:
    """Serve the portal on host:port (0 picks a free port); GET /metrics if `metrics`."""
    runner = web.AppRunner(
        build_app(store, services, metrics, health),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    log.info("portal listening on http://%s:%d", host, bound)
    return PortalHandle(runner, host, bound)


async def start_portal(
    config: Config,
    store: Store,
    *,
    services: PortalServices | None = None,
    spawn: Spawn | None = None,
    metrics: MetricsSource | None = None,
    health: Mapping[str, Check] | None = None,
) -> PortalHandle:
    """Start the portal on the config's `[portal] listen` (from `callrec serve`, which
    hands in `spawn`, its task group's way to start the background export builds, and
    the figures of `metrics`, served when `[portal] metrics` is on)."""
    if services is None:
        services = PortalServices.from_config(config, store, spawn=spawn)
    listen = config.portal.listen
    served = metrics if config.portal.metrics else None
    return await start_portal_at(
        store, services, listen.host, listen.port, metrics=served, health=health
    )
