"""Wiring of the messaging service: settings, pool, broker, relay, consumer, shutdown.

Commands: ``python -m services.messaging`` (run), ``... migrate``, ``... rebuild-projections``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from shared import service
from shared.broker import Broker, retry_when
from shared.db import (
    UNREACHABLE,
    apply_migrations,
    connect,
    create_pool,
    ensure_database,
    readiness,
)
from shared.logging import configure_logging, get_logger
from shared.ops import start_ops_server
from shared.settings import load_settings
from shared.topology import request_queue

from . import projections
from .handlers import Deps, handle_batch
from .relay import OutboxRelay
from .sessions import SessionCache
from .settings import MessagingSettings

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


async def migrate(settings: MessagingSettings) -> None:
    await ensure_database(settings.messaging_database_url)
    await apply_migrations(settings.messaging_database_url, MIGRATIONS)


async def serve(settings: MessagingSettings, stop: asyncio.Event) -> None:
    await migrate(settings)
    pool = await create_pool(settings.messaging_database_url,
                             max_size=settings.messaging_db_pool_size)
    broker = Broker(settings, "messaging")
    await broker.start()
    # Optimistic writes go one at a time (handlers.write_messages): two connections suffice.
    writer = await create_pool(settings.messaging_database_url, min_size=1, max_size=2,
                               plans="force_generic_plan")
    relay = OutboxRelay(settings.messaging_database_url, broker)
    deps = Deps(pool=pool, writer=writer, on_commit=relay.committed,
                notify_relays=relay.needs_notify,
                sessions=SessionCache(settings.messaging_session_cache))

    handle = retry_when(UNREACHABLE, lambda envelopes: handle_batch(envelopes, deps))

    async def broker_ready() -> bool:
        return broker.is_connected

    ops = await start_ops_server({"postgres": readiness(pool), "rabbitmq": broker_ready},
                                 settings.messaging_ops_host, settings.messaging_ops_port)
    relay_task = service.watch(asyncio.create_task(relay.run()), stop, "outbox_relay")
    consumer = await broker.serve(request_queue("messaging", settings.request_queue_type),
                                  handle,
                                  prefetch=settings.messaging_prefetch,
                                  concurrency=settings.messaging_concurrency)
    service.watch(consumer.task, stop, "command_consumer")
    log.info("messaging_started", ops_port=settings.messaging_ops_port)
    await stop.wait()
    log.info("messaging_stopping")
    await consumer.stop(settings.shutdown_grace_s)
    relay.stop()  # publish what the last batch committed, then stop
    try:
        await asyncio.wait_for(asyncio.shield(relay_task), settings.shutdown_grace_s)
    except (TimeoutError, Exception):
        relay_task.cancel()
    await ops.cleanup()
    await broker.close()
    await writer.close()
    await pool.close()
    log.info("messaging_stopped")


async def rebuild_projections(settings: MessagingSettings) -> None:
    """Replay the event store into fresh projections (while the service may run: the rebuild
    holds the append lock, so writers wait for it)."""
    await migrate(settings)
    conn = await connect(settings.messaging_database_url)
    try:
        count = await projections.rebuild(conn)
    finally:
        await conn.close()
    log.info("projections_rebuilt", events=count)
    print(f"rebuilt projections from {count} events")


def main() -> None:
    settings = load_settings(MessagingSettings)
    configure_logging("messaging", settings.log_level, settings.log_format)
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "migrate":
        service.run(lambda _stop: migrate(settings))
    elif command == "run":
        service.run(lambda stop: serve(settings, stop))
    elif command == "rebuild-projections":
        service.run(lambda _stop: rebuild_projections(settings))
    else:
        print("usage: python -m services.messaging [run|migrate|rebuild-projections]",
              file=sys.stderr)
        raise SystemExit(2)
