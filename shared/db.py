"""Postgres helpers every service with a database uses: create the database, apply migrations
in order (``migrations/NNN_name.sql``, each once, under an advisory lock so replicas starting
together do not race), and open a pool that speaks JSON as orjson."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from .logging import get_logger

log = get_logger(__name__)
MIGRATION_LOCK = 0x63686174  # "chat"
# Postgres unreachable, restarting or out of connections: worth retrying, never a poison
# message (see ``shared.broker.retry_when``).
UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
               asyncpg.OperatorInterventionError, asyncpg.TooManyConnectionsError,
               asyncpg.ConnectionDoesNotExistError)


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (needs CREATEDB)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
            log.info("database_created", database=name)
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


async def apply_migrations(url: str, directory: Path) -> list[str]:
    """Apply every not-yet-applied ``*.sql`` file of ``directory`` in name order."""
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in sorted(directory.glob("*.sql")):  # noqa: ASYNC240 - a few small files at start
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied.append(path.name)
            log.info("migration_applied", migration=path.name)
    finally:
        await conn.close()
    return applied


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, schema="pg_catalog",
                                  encoder=lambda v: orjson.dumps(v).decode(),
                                  decoder=orjson.loads, format="text")


async def connect(url: str) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's."""
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn


async def _no_session_state_to_reset(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset query (a round trip on every release). The pool itself still
    rolls back a transaction left open; pooled connections never take session-level state
    (LISTEN, session advisory locks, SET): what needs it opens a connection of its own."""


# Prepared statements are planned for every execution. A generic plan, cached once, keeps the
# table sizes of the moment it was made: made while a table was small, it seq-scans the table
# long after it has grown (seen: the idempotency lookup of every send, 1 ms and growing).
# Custom plans see the current size of each table, at a planning cost of tens of microseconds
# (and of half a millisecond for a statement of many parts). A pool made for statements
# whose every access is by key may ask for generic plans (``plans="force_generic_plan"``).
POOL_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10,
                      plans: str = POOL_SERVER_SETTINGS["plan_cache_mode"],
                      server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """``server_settings``: more settings of every connection (``role``, say)."""
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                     init=_init_connection, reset=_no_session_state_to_reset,
                                     server_settings={**POOL_SERVER_SETTINGS,
                                                      "plan_cache_mode": plans,
                                                      **(server_settings or {})},
                                     command_timeout=30)


def readiness(pool: asyncpg.Pool):
    """A ``/readyz`` check: the pool hands out a connection that answers."""
    async def database_ready() -> bool:
        async with pool.acquire(timeout=1) as conn:
            return await conn.fetchval("SELECT true")
    return database_ready
