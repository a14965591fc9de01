"""Wiring of the presence service: settings, Redis, broker, consumers, scheduler, shutdown.

Presence is ephemeral: its state lives in Redis with TTLs and deadlines, and is rebuilt from
the gateways' lease renewals when Redis loses it. Command: ``python -m services.presence``.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import service
from shared.broker import Broker, TransientError
from shared.logging import configure_logging, get_logger
from shared.ops import start_ops_server
from shared.settings import load_settings
from shared.topology import command_queue, event_queue

from .handlers import EVENT_BINDINGS, Deps, Outbox, handle_commands, handle_events, publish_events
from .heal import MembershipHealer
from .scheduler import Scheduler
from .settings import PresenceSettings
from .store import PresenceStore

log = get_logger(__name__)
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def connect_redis(url: str) -> aioredis.Redis:
    """A bounded pool: callers wait for a connection (at most 5 s) rather than fail."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=5, decode_responses=True, socket_timeout=2,
        socket_connect_timeout=2, health_check_interval=10)
    return aioredis.Redis(connection_pool=pool)


async def serve(settings: PresenceSettings, stop: asyncio.Event) -> None:
    redis = connect_redis(settings.redis_url)
    deps = Deps(store=PresenceStore(redis, settings.presence_key_prefix), rules=settings.rules)
    broker = Broker(settings, "presence")
    await broker.start()
    # Commands, events and the scheduler change the same state: one at a time per process.
    lock = asyncio.Lock()
    healer = MembershipHealer.over(broker, deps.store, lock, settings.rpc_timeout_s)
    deps.check_memberships = healer.check

    def batch_handler(handle):
        async def run(envelopes):
            out = Outbox()
            try:
                async with lock:
                    results = await handle(envelopes, deps, out)
            except TRANSIENT as exc:
                raise TransientError(str(exc)) from exc
            await publish_events(broker, out)
            return results
        return run

    async def redis_ready() -> bool:
        return await redis.ping()

    async def broker_ready() -> bool:
        return broker.is_connected

    ops = await start_ops_server({"redis": redis_ready, "rabbitmq": broker_ready},
                                 settings.presence_ops_host, settings.presence_ops_port)
    commands = await broker.serve(command_queue("presence"), batch_handler(handle_commands),
                                  prefetch=settings.presence_prefetch)
    # Membership events are applied in order by one replica at a time.
    events = await broker.serve(event_queue("presence", EVENT_BINDINGS,
                                            single_active_consumer=True),
                                batch_handler(handle_events), prefetch=settings.presence_prefetch)
    scheduler = Scheduler(deps, lambda out: publish_events(broker, out), lock,
                          settings.presence_tick_s, settings.instance_id)
    scheduler_task = service.watch(asyncio.create_task(scheduler.run()), stop, "scheduler")
    service.watch(commands.task, stop, "command_consumer")
    service.watch(events.task, stop, "event_consumer")
    log.info("presence_started", ops_port=settings.presence_ops_port,
             lease_ttl_s=settings.presence_lease_ttl_s)
    await stop.wait()
    log.info("presence_stopping")
    scheduler.stop()
    await commands.stop(settings.shutdown_grace_s)
    await events.stop(settings.shutdown_grace_s)
    await asyncio.gather(scheduler_task, return_exceptions=True)
    await healer.close()
    await ops.cleanup()
    await broker.close()
    await redis.aclose()
    await redis.connection_pool.disconnect()
    log.info("presence_stopped")


def main() -> None:
    settings = load_settings(PresenceSettings)
    configure_logging("presence", settings.log_level, settings.log_format)
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "run":
        service.run(lambda stop: serve(settings, stop))
    else:
        print("usage: python -m services.presence [run]", file=sys.stderr)
        raise SystemExit(2)
