"""Presence across gateways, gateway deaths and Redis losing its data.

Each test builds an isolated stack (its own vhost, databases and presence keys), because it
runs two gateways, kills processes or gives presence a Redis of its own to flush and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time

import pytest
import redis.asyncio as aioredis

from ..support.client import Api, Ws
from ..support.ports import free_port
from ..support.stack import Stack

pytestmark = pytest.mark.e2e


async def start(stack: Stack, gateways: int = 1, **env: str) -> list:
    await stack.start_messaging(**env)
    await stack.start_service("presence", **env)
    return [await stack.start_gateway(**env) for _ in range(gateways)]


def ws_url(process) -> str:
    return process.ops_url.replace("http://", "ws://") + "/ws"


def presence_of(user_id, status=None):
    return lambda f: (f["type"] == "presence_changed" and f["user_id"] == user_id
                      and (status is None or f["status"] == status))


async def session_of(stack, http, owner, *others) -> str:
    return (await Api(http, stack.url, stack.token(owner)).create_session(*others))["id"]


async def test_online_while_any_gateway_holds_a_connection(isolated_stack, http, user):
    stack = await isolated_stack()
    gw_a, gw_b = await start(stack, gateways=2)
    alice, bob = user("alice"), user("bob")
    sid = await session_of(stack, http, alice, bob)
    b = await Ws.connect(http, ws_url(gw_a), stack.token(bob))
    await b.join(sid)
    a1 = await Ws.connect(http, ws_url(gw_a), stack.token(alice))
    a2 = await Ws.connect(http, ws_url(gw_b), stack.token(alice))
    await b.until(presence_of(alice, "online"))

    await a1.close()
    # Past the offline grace (3 s), alice is still online: her socket on B lives.
    await asyncio.sleep(3.5)
    assert (await b.request({"type": "leave_session", "session_id": sid}))["type"] == "ack"
    assert alice in (await b.join(sid))["online_users"]
    assert not [f for f in b.received if presence_of(alice, "offline")(f)]

    await a2.close()
    offline = await b.until(presence_of(alice, "offline"), timeout=10)
    assert offline["last_seen"]
    await b.close()


async def test_a_gateway_killed_with_sigkill_turns_its_users_offline_within_30s(
        isolated_stack, http, user):
    """Default settings: lease 25 s, renewed every 10 s."""
    stack = await isolated_stack()
    gw_a, gw_b = await start(stack, gateways=2)
    alice, bob = user("alice"), user("bob")
    sid = await session_of(stack, http, alice, bob)
    b = await Ws.connect(http, ws_url(gw_a), stack.token(bob))
    await b.join(sid)
    a = await Ws.connect(http, ws_url(gw_b), stack.token(alice))
    await a.join(sid)
    await b.until(presence_of(alice, "online"))

    gw_b.kill()  # SIGKILL: no close, no goodbye
    killed = time.monotonic()
    offline = await b.until(presence_of(alice, "offline"), timeout=35)
    took = time.monotonic() - killed
    assert took <= 30.0, took
    gone = await b.until(lambda f: f["type"] == "user_left")
    assert gone["user_id"] == alice
    assert offline["last_seen"]
    await b.close()


@contextlib.contextmanager
def private_redis(port: int, workdir):
    """A Redis of this test's own (no persistence), to flush and restart at will."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")

    def launch():
        return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    holder = {"proc": launch()}
    try:
        yield holder, launch
    finally:
        holder["proc"].kill()
        holder["proc"].wait()


async def wait_for(predicate, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within_s}s: {what}")


async def test_presence_heals_after_redis_loses_its_data_and_never_blocks_messaging(
        isolated_stack, tmp_path, http, user):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {"CHAT_PRESENCE_LEASE_TTL_S": "6", "CHAT_PRESENCE_HEARTBEAT_S": "1",
           "CHAT_REDIS_URL": url}
    with private_redis(port, tmp_path) as (holder, launch):
        redis = aioredis.from_url(url, decode_responses=True)
        await wait_for(lambda: _pings(redis), 10, "private redis up")
        stack = await isolated_stack()
        (gw,) = await start(stack, **env)
        alice, bob, carol = user("alice"), user("bob"), user("carol")
        sid = await session_of(stack, http, alice, bob)
        # Alice and carol share only a session nobody opens: presence knows it from
        # messaging's membership events, which FLUSHALL loses and nothing replays.
        await session_of(stack, http, alice, carol)
        a = await Ws.connect(http, ws_url(gw), stack.token(alice))
        await a.join(sid)
        b = await Ws.connect(http, ws_url(gw), stack.token(bob))
        assert set((await b.join(sid))["online_users"]) == {alice, bob}
        c = await Ws.connect(http, ws_url(gw), stack.token(carol))

        async def alice_seen_online():
            probe = await Ws.connect(http, ws_url(gw), stack.token(bob))
            try:
                return alice in (await probe.join(sid))["online_users"]
            finally:
                await probe.close()

        # 1. FLUSHALL: messaging does not notice; presence is whole again within a lease.
        await redis.flushall()
        flushed = time.monotonic()
        sent = await a.request({"type": "send_message", "session_id": sid,
                                "client_msg_id": "f1", "body": "after flush"})
        assert sent["type"] == "ack"
        await b.until(lambda f: f["type"] == "new_message")
        await wait_for(alice_seen_online, 6, "alice online again after FLUSHALL")
        assert time.monotonic() - flushed <= 6

        async def carol_hears_alice_away():
            # Each try is a change (online -> away, then back): never a no-op.
            assert (await a.request({"type": "set_presence", "status": "away"}))["type"] \
                == "ack"
            try:
                return await c.until(presence_of(alice, "away"), timeout=1)
            except TimeoutError:
                return None
            finally:
                assert (await a.request({"type": "set_presence", "status": "online"}))[
                    "type"] == "ack"

        # The membership projection is healed too, within the lease (6 s).
        heard = await wait_for(carol_hears_alice_away, 6 - (time.monotonic() - flushed),
                               "carol hears alice's presence after FLUSHALL")
        assert heard["last_seen"]
        assert time.monotonic() - flushed <= 6
        await c.close()

        # 2. Redis down: joins and messages go on (joined answers without presence).
        holder["proc"].kill()
        holder["proc"].wait()
        began = time.monotonic()
        probe = await Ws.connect(http, ws_url(gw), stack.token(bob))
        joined = await probe.join(sid)
        assert time.monotonic() - began < 3
        assert joined["online_users"] == [bob]  # what the gateway knows by itself
        sent = await a.request({"type": "send_message", "session_id": sid,
                                "client_msg_id": "f2", "body": "redis is down"})
        assert sent["type"] == "ack"
        await probe.until(lambda f: f["type"] == "new_message")
        await probe.close()

        # 3. Redis restarted empty: healed from the live connections again.
        holder["proc"] = launch()
        await wait_for(lambda: _pings(redis), 10, "private redis back")
        await wait_for(alice_seen_online, 12, "alice online again after a Redis restart")
        await a.close()
        await b.close()
        await redis.aclose()


async def _pings(redis) -> bool:
    try:
        return await redis.ping()
    except Exception:
        return False
