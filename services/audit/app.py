"""Wiring of the audit service: settings, pool, broker, consumers, shutdown.

Commands: ``python -m services.audit`` (run), ``... migrate``, ``... verify`` (walk the hash
chain: prints ``all N entries verify`` and exits 0, or names the first entry that does not
match and exits 1).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from shared import service
from shared.broker import Broker, retry_when
from shared.db import UNREACHABLE, apply_migrations, create_pool, ensure_database, readiness
from shared.logging import configure_logging, get_logger
from shared.ops import start_ops_server
from shared.settings import load_settings
from shared.topology import event_queue, request_queue

from . import domain, store
from .handlers import Deps, append_events, handle_commands
from .settings import AuditSettings

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# Everything that may be audited: the session streams (messaging), media's events
# (``attachment.<id>.<event>``) and AuditFacts (``audit.<source>.<action>``). Not ``user.#``:
# presence changes are not state worth an audit entry.
EVENT_BINDINGS = ("session.#", "attachment.#", "audit.#")


def events_queue():
    return event_queue("audit", EVENT_BINDINGS)


async def migrate(settings: AuditSettings) -> None:
    await ensure_database(settings.audit_database_url)
    await apply_migrations(settings.audit_database_url, MIGRATIONS)


async def open_pool(settings: AuditSettings, *, max_size: int | None = None) -> asyncpg.Pool:
    """Every connection works as the restricted role (INSERT and SELECT on the log). Its
    statements are planned with the log's current size (``shared.db``): a plan cached while
    the log was empty would scan the whole log for every batch's duplicate check."""
    server_settings = {"role": settings.audit_db_role} if settings.audit_db_role else None
    return await create_pool(settings.audit_database_url, min_size=1,
                             max_size=max_size or settings.audit_db_pool_size,
                             server_settings=server_settings)


def _transient(handler):
    return retry_when(UNREACHABLE, handler)


async def serve(settings: AuditSettings, stop: asyncio.Event) -> None:
    await migrate(settings)
    pool = await open_pool(settings)
    broker = Broker(settings, "audit")
    await broker.start()
    deps = Deps(pool=pool)

    async def broker_ready() -> bool:
        return broker.is_connected

    ops = await start_ops_server({"postgres": readiness(pool), "rabbitmq": broker_ready},
                                 settings.audit_ops_host, settings.audit_ops_port)
    events = await broker.serve(events_queue(), _transient(lambda e: append_events(e, deps)),
                                prefetch=settings.audit_prefetch,
                                max_batch=settings.audit_prefetch)
    commands = await broker.serve(request_queue("audit", settings.request_queue_type),
                                  _transient(lambda e: handle_commands(e, deps)), prefetch=64)
    service.watch(events.task, stop, "event_consumer")
    service.watch(commands.task, stop, "command_consumer")
    log.info("audit_started", ops_port=settings.audit_ops_port)
    await stop.wait()
    log.info("audit_stopping")
    await asyncio.gather(events.stop(settings.shutdown_grace_s),
                         commands.stop(settings.shutdown_grace_s))
    await ops.cleanup()
    await broker.close()
    await pool.close()
    log.info("audit_stopped")


async def verify(settings: AuditSettings) -> int:
    """Walk the chain in seq order; 0 when every entry verifies, 1 at the first that does not."""
    pool = await open_pool(settings, max_size=2)
    verifier = domain.ChainVerifier()
    try:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
            async for entry in store.walk(conn):
                if not verifier.feed(entry):
                    break
    finally:
        await pool.close()
    if verifier.problem is not None:
        print(f"audit chain broken at {verifier.problem} "
              f"({verifier.count} entries before it verify)")
        return 1
    print(f"all {verifier.count} entries verify")
    return 0


def main() -> None:
    settings = load_settings(AuditSettings)
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "verify":
        configure_logging("audit", "warning", settings.log_format)
        raise SystemExit(asyncio.run(verify(settings)))
    configure_logging("audit", settings.log_level, settings.log_format)
    if command == "migrate":
        service.run(lambda _stop: migrate(settings))
    elif command == "run":
        service.run(lambda stop: serve(settings, stop))
    else:
        print("usage: python -m services.audit [run|migrate|verify]", file=sys.stderr)
        raise SystemExit(2)
