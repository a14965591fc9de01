"""How many audit entries per second the audit service appends, sustained.

Makes a fresh RabbitMQ vhost and a fresh audit database on the local servers, declares the
audit's event queue and fills it with ``--events`` events (``session_created``, as messaging's
outbox publishes them, ``--per-message`` envelopes to an AMQP message), then starts
``--replicas`` audit processes and times how long they take to append every event to the
chain (from the first entry to the last, sampled every 0.25 s), and finally runs ``verify``.
With ``--live`` the events are published while the audit runs instead (the rate is then
bounded by the publisher too). Everything is removed at the end.

    .venv/bin/python -m tests.load.audit_bench --events 100000
    .venv/bin/python -m tests.load.audit_bench --events 50000 --replicas 2 --live
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from services.audit.app import events_queue
from shared.broker import Broker
from shared.contracts.envelope import Actor, encode_batch, new_envelope
from shared.settings import CommonSettings
from shared.topology import EVENTS, session_key
from tests.support.backends import create_vhost, delete_vhost, drop_databases, local_servers
from tests.support.stack import ROOT, Stack


async def publish_all(broker: Broker, total: int, per_message: int, concurrency: int = 8
                      ) -> None:
    actor = Actor(user_id="bench", role="client")

    async def worker(share: int) -> None:
        for _ in range(0, share, per_message):
            batch = [new_envelope("session_created", 1,
                                  {"session_id": str(uuid.uuid4()), "created_by": "bench"},
                                  actor=actor, correlation_id=uuid.uuid4().hex)
                     for _ in range(per_message)]
            keys = [session_key(batch[0].payload["session_id"], "session_created")]
            await broker.publish(EVENTS, keys, encode_batch(batch), mandatory=False)

    share = total // concurrency
    await asyncio.gather(*(worker(share) for _ in range(concurrency)))


async def run(args) -> None:
    backends = local_servers()
    create_vhost(backends)
    workdir = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    stack = Stack(backends, workdir)
    broker = Broker(CommonSettings(amqp_url=backends.amqp_url), "audit-bench")
    total = (args.events // (8 * args.per_message)) * 8 * args.per_message
    try:
        await broker.start()
        await broker.declare_durable(events_queue())
        if not args.live:
            started = time.perf_counter()
            await publish_all(broker, total, args.per_message)
            print(f"queued {total} events in {time.perf_counter() - started:.1f}s")
        for _ in range(args.replicas):
            await stack.start_service("audit", CHAT_LOG_LEVEL="warning")
        publishing = (asyncio.create_task(publish_all(broker, total, args.per_message))
                      if args.live else None)
        conn = await asyncpg.connect(backends.database_url("audit"))
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + args.timeout
        while True:
            n = await conn.fetchval("SELECT count(*) FROM audit_log")
            samples.append((time.perf_counter(), n))
            if n >= total or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        await conn.close()
        if publishing:
            await publishing
        first = next(i for i, (_, n) in enumerate(samples) if n > 0)
        (t0, n0), (t1, n1) = samples[first], samples[-1]
        print(f"appended {n1} of {total} entries with {args.replicas} replica(s), "
              f"{args.per_message} events per AMQP message")
        print(f"sustained: {(n1 - n0) / (t1 - t0):,.0f} entries/s "
              f"({n1 - n0} entries in {t1 - t0:.2f}s after the first was appended)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env["CHAT_AUDIT_DATABASE_URL"] = backends.database_url("audit")
        started = time.perf_counter()
        verified = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.audit", "verify"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"verify: {verified.stdout.strip()} in {time.perf_counter() - started:.1f}s")
    finally:
        await stack.stop()
        await broker.close()
        await drop_databases(backends)
        delete_vhost(backends)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.load.audit_bench")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--live", action="store_true", help="publish while the audit runs")
    parser.add_argument("--timeout", type=float, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
