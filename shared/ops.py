"""``/healthz``, ``/readyz`` and ``/metrics``, the same for every service.

``/healthz`` answers 200 while the process runs its event loop. ``/readyz`` answers 200 only
when every named check passes (broker connected, stores reachable), else 503 with the failing
checks, so Kubernetes stops routing to a replica that cannot do its work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS = web.AppKey("readiness_checks", dict)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, ReadinessCheck] = request.app[READINESS]
    results: dict[str, bool] = {}
    for name, check in checks.items():
        try:
            results[name] = bool(await asyncio.wait_for(check(), 2.0))
        except Exception:
            results[name] = False
    status = 200 if all(results.values()) else 503
    return web.json_response({"status": "ready" if status == 200 else "not_ready",
                              "checks": results}, status=status)


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_ops_routes(app: web.Application, checks: dict[str, ReadinessCheck]) -> None:
    app[READINESS] = checks
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def start_ops_server(checks: dict[str, ReadinessCheck], host: str, port: int
                           ) -> web.AppRunner:
    """A small HTTP server for services that have no public API of their own."""
    app = web.Application()
    add_ops_routes(app, checks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
