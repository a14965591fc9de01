"""Presence under load, measured on this machine.

    python -m tests.load.presence_bench                      # both measurements
    python -m tests.load.presence_bench --skip-idle --events-duration 20
    python -m tests.load.presence_bench --skip-events --connections 1000 --window 60

It runs messaging, presence and a gateway as real processes on a fresh vhost, with a Redis of
its own (``redis-server`` on a free port, no persistence) so that nobody else's commands are
counted, and measures:

1. **Presence events per second sustained.** Commands go to ``presence.commands`` the way
   gateways send them (batches of envelopes in one AMQP message): ``typing_start`` /
   ``typing_stop`` toggles over many sessions, each causing exactly one event, with a bounded
   number in flight. Events are counted on a queue bound to every session's presence events.
2. **Redis operations per connection per minute at steady state.** N WebSockets (N/2 pairs of
   users, each pair sharing a joined session) stay open and idle; after they settle,
   ``INFO stats`` ``total_commands_processed`` is read at the start and end of the window, and
   ``INFO commandstats`` tells which commands they were.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import orjson
import redis.asyncio as aioredis

from shared.contracts.envelope import Actor, encode_batch, new_envelope
from shared.topology import COMMANDS, EVENTS
from tests.support.backends import create_vhost, delete_vhost, drop_databases, local_servers
from tests.support.client import Api, Ws
from tests.support.ports import free_port
from tests.support.stack import Stack

from . import procstat


def log(text: str) -> None:
    print(f"[presence-bench] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def private_redis(port: int, workdir: Path):
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def wait_redis(redis: aioredis.Redis) -> None:
    for _ in range(100):
        with contextlib.suppress(Exception):
            if await redis.ping():
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("private redis did not start")


# ---- 1. events per second --------------------------------------------------------------------

async def measure_events(stack: Stack, amqp_url: str, duration: float, sessions: int,
                         batch: int, in_flight: int) -> dict:
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    commands = await channel.get_exchange(COMMANDS)
    events = await channel.get_exchange(EVENTS)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for kind in ("typing_start", "typing_stop", "session_created"):
        await queue.bind(events, f"session.*.{kind}")
    received = {"events": 0, "created": 0}
    progress = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        for env in orjson.loads(message.body):
            if env["type"] == "session_created":
                received["created"] += 1
            else:
                received["events"] += 1
        progress.set()

    await queue.consume(on_message, no_ack=True)
    # Sessions through messaging (presence learns membership from its events).
    users = [(f"bench-a-{i}", f"bench-b-{i}") for i in range(sessions)]
    sids = []
    async with aiohttp.ClientSession() as http:
        for a, b in users:
            api = Api(http, stack.url, stack.token(a))
            sids.append((await api.create_session(b))["id"])
    while received["created"] < sessions:
        progress.clear()
        await asyncio.wait_for(progress.wait(), 30)
    await asyncio.sleep(1.0)  # presence's projection consumer has applied them
    log(f"{sessions} sessions projected; driving typing toggles for {duration}s")

    typing = [False] * sessions
    actors = [Actor(user_id=a, role="client") for a, _ in users]
    sent = 0
    cursor = 0
    started = time.monotonic()
    deadline = started + duration
    while time.monotonic() < deadline:
        if sent - received["events"] >= in_flight:
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 1.0)
            continue
        envs = []
        for _ in range(batch):
            i = cursor % sessions
            cursor += 1
            kind = "presence.typing_stop" if typing[i] else "presence.typing_start"
            typing[i] = not typing[i]
            envs.append(new_envelope(kind, 1, {"session_id": sids[i]}, actor=actors[i]))
        await commands.publish(aio_pika.Message(encode_batch(envs),
                                                content_type="application/json"),
                               "presence.updates")
        sent += len(envs)
    elapsed_send = time.monotonic() - started
    drain_deadline = time.monotonic() + 30
    while received["events"] < sent and time.monotonic() < drain_deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1.0)
    elapsed = time.monotonic() - started
    await connection.close()
    return {"commands_sent": sent, "events_received": received["events"],
            "send_window_s": round(elapsed_send, 2), "until_all_received_s": round(elapsed, 2),
            "events_per_s": round(received["events"] / elapsed, 1)}


# ---- 2. Redis operations per connection per minute -------------------------------------------

async def measure_idle(stack: Stack, redis: aioredis.Redis, connections: int, window: float,
                       settle: float) -> dict:
    pairs = connections // 2
    sockets: list[Ws] = []
    # No connector limit: each WebSocket holds a connection of the pool.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for i in range(pairs):
            a, b = f"idle-a-{i}-{uuid.uuid4().hex[:4]}", f"idle-b-{i}"
            sid = (await Api(http, stack.url, stack.token(a)).create_session(b))["id"]
            for who in (a, b):
                ws = await Ws.connect(http, stack.ws_url, stack.token(who))
                await ws.join(sid)
                sockets.append(ws)
        # Idle clients still read: aiohttp answers the gateway's protocol pings while reading.
        readers = [asyncio.create_task(_drain(ws)) for ws in sockets]
        log(f"{len(sockets)} connections open and joined; settling {settle}s")
        await asyncio.sleep(settle)
        await redis.config_resetstat()
        before = (await redis.info("stats"))["total_commands_processed"]
        started = time.monotonic()
        await asyncio.sleep(window)
        after = (await redis.info("stats"))["total_commands_processed"]
        elapsed = time.monotonic() - started
        stats = await redis.info("commandstats")
        alive = sum(1 for task in readers if not task.done())
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
    # Our own INFO calls are counted too (3 commands); leave them out.
    ops = after - before - 2
    per_min = ops / (elapsed / 60)
    top = sorted(((k.removeprefix("cmdstat_"), v["calls"]) for k, v in stats.items()),
                 key=lambda kv: -kv[1])
    return {"connections": len(sockets), "still_open_at_end": alive, "window_s": round(elapsed, 1),
            "redis_commands": ops, "redis_commands_per_min": round(per_min, 1),
            "redis_ops_per_connection_per_min": round(per_min / len(sockets), 4),
            "commands_by_type": dict(top)}


async def _drain(ws: Ws) -> None:
    while True:
        await ws.next(timeout=3600)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-duration", type=float, default=15.0)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--skip-events", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    procstat.raise_fd_limit()

    backends = local_servers()
    port = free_port()
    backends.redis_url = f"redis://127.0.0.1:{port}/0"
    workdir = Path(tempfile.mkdtemp(prefix="presence-bench-"))
    create_vhost(backends)
    results: dict = {}
    with private_redis(port, workdir):
        redis = aioredis.from_url(backends.redis_url, decode_responses=True)
        await wait_redis(redis)
        stack = Stack(backends, workdir)
        env = {"CHAT_LOG_LEVEL": "warning", "CHAT_RATE_FRAMES_BURST": "100000"}
        try:
            await stack.start_messaging(**env)
            presence = await stack.start_service("presence", **env)
            await stack.start_gateway(**env)
            if not args.skip_events:
                cpu0 = procstat.cpu_seconds(presence.proc.pid)
                t0 = time.monotonic()
                results["events"] = await measure_events(
                    stack, backends.amqp_url, args.events_duration, args.sessions, args.batch,
                    args.in_flight)
                results["events"]["presence_cpu_pct"] = round(
                    100 * (procstat.cpu_seconds(presence.proc.pid) - cpu0)
                    / (time.monotonic() - t0), 1)
                log(f"events: {results['events']}")
            if not args.skip_idle:
                results["idle"] = await measure_idle(stack, redis, args.connections,
                                                     args.window, args.settle)
                log(f"idle: {results['idle']}")
        finally:
            await stack.stop()
            await redis.aclose()
            await drop_databases(backends)
            delete_vhost(backends)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    asyncio.run(main())
