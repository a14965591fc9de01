"""The audit under faults, each test with its own audit processes, database and vhost (so
killing them disturbs nobody): a kill -9 mid-stream and a restart leave no gap and no
duplicate; two replicas appending at once keep one valid chain."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid

import aiohttp
import asyncpg
import pytest

from shared.broker import Broker
from shared.contracts.envelope import Actor, encode_batch, new_envelope
from shared.settings import CommonSettings
from shared.topology import EVENTS, session_key

from ..support.backends import create_vhost, delete_vhost, drop_databases
from ..support.stack import ROOT, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def lone(backends, tmp_path):
    """A Stack on a fresh vhost and fresh databases of its own."""
    own = dataclasses.replace(backends, run_id=uuid.uuid4().hex[:8], vhost="", databases=[])
    await asyncio.to_thread(create_vhost, own)
    stack = Stack(own, tmp_path)
    try:
        yield stack
    finally:
        await stack.stop()
        await drop_databases(own)
        await asyncio.to_thread(delete_vhost, own)


def session_events(n: int) -> list:
    """Events as messaging's outbox publishes them (one session per event)."""
    actor = Actor(user_id="alice", role="client")
    return [new_envelope("session_created", 1, {"session_id": str(sid), "created_by": "alice"},
                         actor=actor, correlation_id=f"req-{i}")
            for i, sid in enumerate(uuid.uuid4() for _ in range(n))]


async def publish(broker: Broker, envelopes: list, per_message: int) -> None:
    for start in range(0, len(envelopes), per_message):
        chunk = envelopes[start:start + per_message]
        keys = [session_key(e.payload["session_id"], e.type) for e in chunk]
        await broker.publish(EVENTS, keys, encode_batch(chunk), mandatory=False)


async def count(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM audit_log")


async def wait_count(conn, at_least: int, within_s: float = 60.0) -> int:
    deadline = time.monotonic() + within_s
    while (n := await count(conn)) < at_least:
        assert time.monotonic() < deadline, f"only {n} of {at_least} entries"
        await asyncio.sleep(0.05)
    return n


async def assert_one_chain(stack: Stack, conn, envelopes) -> None:
    rows = await conn.fetch("SELECT seq, source_event_id FROM audit_log ORDER BY seq")
    assert [r["seq"] for r in rows] == list(range(1, len(envelopes) + 1))  # no gap
    assert {r["source_event_id"] for r in rows} == {e.message_id for e in envelopes}  # no dup
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_AUDIT_DATABASE_URL"] = stack.backends.database_url("audit")
    verified = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.audit", "verify"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == f"all {len(envelopes)} entries verify"


async def test_kill_mid_stream_and_restart_leaves_no_gap_and_no_duplicate(lone):
    first = await lone.start_service("audit")
    broker = Broker(CommonSettings(amqp_url=lone.backends.amqp_url), "audit-test")
    await broker.start()
    conn = await asyncpg.connect(lone.backends.database_url("audit"))
    envelopes = session_events(6000)
    publishing = asyncio.create_task(publish(broker, envelopes, per_message=20))
    try:
        await wait_count(conn, 300)
        first.kill()  # SIGKILL: prefetched and in-flight batches are redelivered
        first.proc.wait(10)
        at_kill = await count(conn)
        await publishing
        assert at_kill < len(envelopes), "the stream ended before the kill"
        await lone.start_service("audit")
        # Redeliver some events again, as a relay that lost its checkpoint would.
        await publish(broker, envelopes[:500], per_message=100)
        await wait_count(conn, len(envelopes))
        await assert_one_chain(lone, conn, envelopes)
    finally:
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        await conn.close()
        await broker.close()


async def appended_by(process) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{process.ops_url}/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^chat_audit_entries_appended_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_two_replicas_keep_one_valid_chain(lone):
    replicas = [await lone.start_service("audit"), await lone.start_service("audit")]
    broker = Broker(CommonSettings(amqp_url=lone.backends.amqp_url), "audit-test")
    await broker.start()
    conn = await asyncpg.connect(lone.backends.database_url("audit"))
    try:
        envelopes = session_events(4000)
        await asyncio.gather(*(publish(broker, envelopes[i::4], per_message=10)
                               for i in range(4)))
        await wait_count(conn, len(envelopes))
        await assert_one_chain(lone, conn, envelopes)
        shares = [await appended_by(r) for r in replicas]
        assert sum(shares) == len(envelopes)
        assert all(share > 0 for share in shares), shares  # both appended, interleaved
    finally:
        await conn.close()
        await broker.close()
