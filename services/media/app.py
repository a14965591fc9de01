"""Wiring of the media service: settings, pool, object store, broker, consumers, outbox relay,
sweeper, shutdown.

Queues: ``media.ingest`` (uploads; prefetch = ``media_ingest_concurrency``), ``media.queries``
(signed URLs, kept apart so a download never waits behind a batch of uploads) and
``media.events`` (messaging's membership and deletion events).

Commands: ``python -m services.media`` (run), ``... migrate``.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from shared import service
from shared.broker import Broker
from shared.db import apply_migrations, create_pool, ensure_database, readiness
from shared.logging import configure_logging, get_logger
from shared.ops import start_ops_server
from shared.s3 import ObjectStore
from shared.settings import load_settings
from shared.topology import event_queue, request_queue

from .deps import Deps
from .handlers import EVENT_HANDLERS, handle_commands, handle_events, sweep
from .outbox import OutboxRelay
from .probe import Limits
from .settings import MediaSettings

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
EVENT_QUEUE = event_queue("media", tuple(f"session.*.{t}" for t in EVENT_HANDLERS))


async def migrate(settings: MediaSettings) -> None:
    await ensure_database(settings.media_database_url)
    await apply_migrations(settings.media_database_url, MIGRATIONS)


async def serve(settings: MediaSettings, stop: asyncio.Event) -> None:
    await migrate(settings)
    pool = await create_pool(settings.media_database_url, max_size=settings.media_db_pool_size)
    objects = ObjectStore(settings)
    await objects.ensure_bucket()
    broker = Broker(settings, "media")
    await broker.start()
    relay = OutboxRelay(pool, broker)
    probe_pool = ThreadPoolExecutor(max_workers=settings.media_ingest_concurrency,
                                    thread_name_prefix="probe")
    deps = Deps(
        pool=pool, objects=objects, broker=broker, probe_pool=probe_pool,
        limits=Limits(max_audio_ms=settings.media_max_audio_s * 1000,
                      max_image_pixels=settings.media_max_image_pixels,
                      thumbnail_px=settings.media_thumbnail_px),
        max_bytes=settings.upload_max_bytes, url_ttl=timedelta(seconds=settings.media_url_ttl_s),
        wake_outbox=relay.wake, work_dir=settings.media_work_dir)

    async def broker_ready() -> bool:
        return broker.is_connected

    async def storage_ready() -> bool:
        return await objects.bucket_ready()

    ops = await start_ops_server(
        {"postgres": readiness(pool), "rabbitmq": broker_ready, "s3": storage_ready},
        settings.media_ops_host, settings.media_ops_port)
    relay_task = service.watch(asyncio.create_task(relay.run()), stop, "outbox_relay")
    sweeper_task = asyncio.create_task(_sweep_forever(deps, settings))
    queries = request_queue("media", settings.request_queue_type, "queries",
                            ("media.get_attachment_url", "media.erase_message_attachments",
                             "media.forget_participant"))
    ingest = request_queue("media", settings.request_queue_type, "ingest", ("media.ingest",))
    consumers = [
        await broker.serve(EVENT_QUEUE, lambda envs: handle_events(envs, deps), prefetch=256),
        await broker.serve(queries, lambda envs: handle_commands(envs, deps),
                           prefetch=64, max_batch=64),
        await broker.serve(ingest, lambda envs: handle_commands(envs, deps),
                           prefetch=settings.media_ingest_concurrency,
                           max_batch=settings.media_ingest_concurrency),
    ]
    for consumer in consumers:
        service.watch(consumer.task, stop, "consumer")
    log.info("media_started", ops_port=settings.media_ops_port, bucket=settings.s3_bucket)
    await stop.wait()
    log.info("media_stopping")
    await asyncio.gather(*(c.stop(settings.shutdown_grace_s) for c in consumers))
    sweeper_task.cancel()
    relay.stop()
    try:
        await asyncio.wait_for(asyncio.shield(relay_task), settings.shutdown_grace_s)
    except (TimeoutError, Exception):
        relay_task.cancel()
    await ops.cleanup()
    await broker.close()
    await pool.close()
    probe_pool.shutdown(wait=False, cancel_futures=True)
    objects.close()
    log.info("media_stopped")


async def _sweep_forever(deps: Deps, settings: MediaSettings) -> None:
    while True:
        await asyncio.sleep(settings.media_sweep_interval_s)
        try:
            await sweep(deps, settings.media_stale_after_s, settings.media_quarantine_ttl_s)
        except Exception as exc:  # the next round tries again
            log.warning("sweep_failed", error=repr(exc))


def main() -> None:
    settings = load_settings(MediaSettings)
    configure_logging("media", settings.log_level, settings.log_format)
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "migrate":
        service.run(lambda _stop: migrate(settings))
    elif command == "run":
        service.run(lambda stop: serve(settings, stop))
    else:
        print("usage: python -m services.media [run|migrate]", file=sys.stderr)
        raise SystemExit(2)
