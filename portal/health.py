"""GET /healthz: whether this node can do its work, for a load balancer or a supervisor.

Each check is a coroutine function that returns when its dependency answers and raises
when it does not: the store (a trivial query) and, when recordings go to an object
store, that store (a HEAD on the bucket). They run together, each within
`CHECK_TIMEOUT_S`. The answer is JSON, 200 when every check passed and 503 otherwise:

    {"status": "ok", "checks": {"store": {"ok": true, "ms": 0.4},
                                "objects": {"ok": false, "error": "TimeoutError"}}}

No login is asked (a prober has no session). An error is named by its type only: the
message could name a server path or an address; it goes to the log instead, once per
change of a check's state, since a prober calls every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from storage.database import Store

__all__ = ["CHECK_TIMEOUT_S", "HEALTH_PATH", "Check", "health_route", "run_checks", "store_check"]

log = logging.getLogger("callrec.health")

HEALTH_PATH = "/healthz"
CHECK_TIMEOUT_S = 2.0

# Returns once the dependency answered; raises (anything) when it did not.
Check = Callable[[], Awaitable[object]]


def store_check(store: Store) -> Check:
    """The store's check: one trivial query through its read door."""

    async def check() -> None:
        async with store.database.read() as session:
            await session.one("SELECT 1")

    return check


async def run_checks(
    checks: Mapping[str, Check], timeout: float = CHECK_TIMEOUT_S
) -> dict[str, dict[str, object]]:
    """Run every check at once, each bounded by `timeout`; their results by name."""

    async def one(check: Check) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
        return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


def health_route(checks: Mapping[str, Check]) -> web.RouteDef:
    """The GET /healthz route over `checks`."""
    last_ok: dict[str, bool] = {}

    async def healthz(request: web.Request) -> web.Response:
        results = await run_checks(checks)
        for name, result in results.items():
            ok = bool(result["ok"])
            if last_ok.get(name, True) != ok:
                if ok:
                    log.warning("health: %s answers again", name)
                else:
                    log.warning("health: %s fails: %s", name, result.get("detail"))
            last_ok[name] = ok
            result.pop("detail", None)
        healthy = all(result["ok"] for result in results.values())
        body = {"status": "ok" if healthy else "failing", "checks": results}
        response = web.json_response(body, status=200 if healthy else 503)
        response.headers["Cache-Control"] = "no-store"
        return response

    return web.get(HEALTH_PATH, healthz)
