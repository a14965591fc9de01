"""The audit log against a real Postgres: exactly-once appends, one chain under concurrent
appenders, an append-only table (role and trigger), and ``verify`` naming a tampered row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.audit import domain, store
from services.audit.app import MIGRATIONS, open_pool
from services.audit.handlers import Deps, append_events
from services.audit.settings import AuditSettings
from shared.contracts.envelope import Actor, new_envelope
from shared.db import apply_migrations, ensure_database

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def audit_url(backends):
    url = backends.database_url(f"audit_it_{uuid.uuid4().hex[:8]}")
    await ensure_database(url)
    await apply_migrations(url, MIGRATIONS)
    return url


@pytest.fixture
async def writer_pool(audit_url):
    """Connections as the service has them: working as the restricted role."""
    pool = await open_pool(AuditSettings(audit_database_url=audit_url), max_size=10)
    yield pool
    await pool.close()


def drafts(n: int, action: str = "message.sent") -> list[domain.Draft]:
    return [domain.Draft(uuid.uuid4(), datetime.now(UTC), f"user{i}", "client", action,
                         uuid.uuid4(), str(uuid.uuid4()), f"req-{i}", "ok") for i in range(n)]


async def append(pool, batch) -> list[domain.Entry]:
    async with pool.acquire() as conn, conn.transaction():
        return await store.append(conn, batch)


async def all_entries(pool) -> list[domain.Entry]:
    async with pool.acquire() as conn:
        return [e async for e in store.walk(conn, chunk=7)]


def verify_chain(entries) -> domain.ChainVerifier:
    verifier = domain.ChainVerifier()
    for entry in entries:
        verifier.feed(entry)
    return verifier


async def test_a_redelivered_event_is_recorded_once(writer_pool):
    envelopes = [new_envelope("session_created", 1, {"session_id": str(uuid.uuid4()),
                                                     "created_by": "alice"},
                              actor=Actor(user_id="alice", role="client")) for _ in range(5)]
    deps = Deps(pool=writer_pool)
    await append_events(envelopes[:3], deps)
    # The broker redelivers the whole batch (the ack was lost), together with new events.
    await append_events(envelopes, deps)
    await append_events(envelopes[::-1], deps)
    entries = await all_entries(writer_pool)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.draft.source_event_id for e in entries] == [e.message_id for e in envelopes]
    assert verify_chain(entries).problem is None


async def test_concurrent_appenders_build_one_linear_chain(writer_pool):
    batches = [drafts(40) for _ in range(8)]
    await asyncio.gather(*(append(writer_pool, batch) for batch in batches))
    entries = await all_entries(writer_pool)
    assert [e.seq for e in entries] == list(range(1, 321))
    assert len({e.draft.source_event_id for e in entries}) == 320
    verifier = verify_chain(entries)
    assert verifier.problem is None and verifier.count == 320


async def test_the_service_role_may_only_insert_and_select(writer_pool):
    await append(writer_pool, drafts(2))
    async with writer_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "chat_audit_writer"
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
        for sql in ("UPDATE audit_log SET outcome = 'denied'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2


async def test_the_trigger_refuses_changes_even_to_the_owner(audit_url, writer_pool):
    await append(writer_pool, drafts(2))
    conn = await asyncpg.connect(audit_url)  # the superuser that owns the table
    try:
        for sql in ("UPDATE audit_log SET actor_id = 'x' WHERE seq = 1",
                    "DELETE FROM audit_log WHERE seq = 2", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 2
    finally:
        await conn.close()


def run_verify(url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_AUDIT_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "services.audit", "verify"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


async def test_verify_names_the_row_edited_in_postgres(audit_url, writer_pool):
    await append(writer_pool, drafts(6))
    await append(writer_pool, drafts(4, "access.denied"))
    ok = await asyncio.to_thread(run_verify, audit_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "all 10 entries verify"

    conn = await asyncpg.connect(audit_url)
    try:
        # A superuser can switch the trigger off; the chain still tells.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE audit_log SET actor_id = 'mallory' WHERE seq = 7")
        tampered_id = await conn.fetchval("SELECT id FROM audit_log WHERE seq = 7")
    finally:
        await conn.close()
    broken = await asyncio.to_thread(run_verify, audit_url)
    assert broken.returncode == 1
    assert f"seq=7 id={tampered_id}" in broken.stdout, broken.stdout
    assert "6 entries before it verify" in broken.stdout


async def test_the_duplicate_check_keeps_using_the_index_as_the_log_grows(audit_url):
    """A plan cached while the log was empty would scan the whole log for the duplicate check
    of every batch (a cost that grows with the log): the service plans with its current size."""
    pool = await open_pool(AuditSettings(audit_database_url=audit_url), max_size=1)
    try:
        for _ in range(8):  # enough executions for Postgres to consider a cached plan
            await append(pool, drafts(1))
        await append(pool, drafts(40_000))
        async with pool.acquire() as conn, conn.transaction():
            assert len(await store.append(conn, drafts(50))) == 50
            scans = await conn.fetchval("SELECT seq_scan FROM pg_stat_xact_user_tables "
                                        "WHERE relname = 'audit_log'")
        assert scans == 0
    finally:
        await pool.close()
