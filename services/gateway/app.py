"""Wiring of the gateway: ``create_app(settings)``, and the commands ``run`` and ``token``."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from aiohttp import web

from shared import service
from shared.broker import Broker
from shared.logging import configure_logging, get_logger
from shared.ops import add_ops_routes
from shared.settings import load_settings

from . import api, api_audit, api_media, audit_events, heartbeat, presence, ws
from .appkeys import AUTH, BROKER, HUB, RATE_MESSAGES, SETTINGS
from .auth import Authenticator, mint_token
from .errors import errors_middleware
from .hub import Hub
from .openapi import build_openapi
from .ratelimit import PerKeyBuckets
from .settings import GatewaySettings

log = get_logger(__name__)


async def _broker_ctx(app: web.Application):
    settings = app[SETTINGS]
    broker = Broker(settings, "gateway", coalesce_window_s=settings.coalesce_window_ms / 1000,
                    max_in_flight=settings.coalesce_max_in_flight)
    await broker.start()
    hub = Hub(broker, settings.instance_id)
    await hub.start(lambda conn, sid, after: ws.fetch_events(app, conn, sid, after))
    app[BROKER], app[HUB] = broker, hub
    yield
    for conn in tuple(hub.connections):  # any left (see _tell_clients_to_reconnect)
        conn.close(1012, "server restarting")
    await hub.close()
    await broker.close()


async def _tell_clients_to_reconnect(app: web.Application) -> None:
    """Shutdown, before the server waits for its handlers (a WebSocket's lasts until it
    closes): every client is told to reconnect, elsewhere, with 1012; each resumes from its
    last seq. Requests already sent still complete (the broker closes last)."""
    for conn in tuple(app[HUB].connections):
        conn.close(1012, "server restarting")


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, audit_events.audit_middleware],
                          client_max_size=11 * 1024 * 1024)
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings)
    app[RATE_MESSAGES] = PerKeyBuckets(settings.rate_messages_per_s, settings.rate_messages_burst)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(heartbeat.heartbeat_ctx)  # after the broker's: needs the hub
    app.cleanup_ctx.append(presence.presence_ctx)  # after the broker's: closes before it
    app.cleanup_ctx.append(audit_events.facts_ctx)  # after the broker's: flushed before it closes
    app.cleanup_ctx.append(api_media.media_ctx)
    app.on_shutdown.append(_tell_clients_to_reconnect)
    for method, path, handler in (*api.ROUTES, *api_audit.ROUTES, *api_media.ROUTES):
        app.router.add_route(method, path, handler)
    openapi = orjson.dumps(build_openapi())
    app.router.add_get("/api/openapi.json", lambda _: web.Response(
        body=openapi, content_type="application/json"))
    app.router.add_get("/ws", ws.websocket)

    async def broker_ready() -> bool:
        return app[BROKER].is_connected

    add_ops_routes(app, {"rabbitmq": broker_ready})
    return app


async def serve(settings: GatewaySettings, stop: asyncio.Event) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port, backlog=2048)
    await site.start()
    log.info("gateway_started", url=f"http://{settings.gateway_host}:{settings.gateway_port}")
    await stop.wait()
    log.info("gateway_stopping")
    await runner.cleanup()
    log.info("gateway_stopped")


def token_command(settings: GatewaySettings, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway token",
                                     description="Mint a development token (HS256).")
    parser.add_argument("user_id")
    parser.add_argument("--role", default="client", choices=["client", "reader", "admin"])
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default: a day)")
    args = parser.parse_args(argv)
    print(mint_token(settings.jwt_secret, args.user_id, args.role,
                     audience=settings.jwt_audience, ttl_s=args.ttl))


def main() -> None:
    settings = load_settings(GatewaySettings)
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "token":
        token_command(settings, sys.argv[2:])
        return
    configure_logging("gateway", settings.log_level, settings.log_format)
    if command == "run":
        service.run(lambda stop: serve(settings, stop))
    else:
        print("usage: python -m services.gateway [run|token USER --role ROLE]", file=sys.stderr)
        raise SystemExit(2)
