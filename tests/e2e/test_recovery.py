"""The delivery promises under faults: nothing acknowledged is lost, nothing arrives twice,
every participant sees each session in the same seq order.

Each test runs its own stack (own vhost and databases) and a load of reconnecting clients
(``support/loadcheck.py``), injects one fault while they chat, and checks everything after.
Every fault targets loopback processes and each test is bounded in time.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

import orjson
import pytest

from ..support.backends import restart_postgres_immediately, start_broker, stop_broker
from ..support.client import Api
from ..support.loadcheck import LoadCheck

pytestmark = pytest.mark.e2e


def load(stack, http, ws_urls, pairs=8, rate=4.0) -> LoadCheck:
    return LoadCheck(api_for=lambda u: Api(http, stack.url, stack.token(u)),
                     token_for=stack.token, ws_urls=ws_urls, pairs=pairs, rate=rate)


async def finish(check: LoadCheck, stack, http) -> dict:
    api = Api(http, stack.url, None)
    try:
        await check.settle(api)
        return await check.verify(api)
    finally:
        await check.close()


async def test_gateway_killed_mid_load_clients_resume_on_another(isolated_stack, http):
    stack = await isolated_stack()
    await stack.start_service("messaging")
    doomed = await stack.start_gateway()
    survivor_port = (await stack.start_gateway()).ops_url.rsplit(":", 1)[1]
    survivor_ws = f"ws://127.0.0.1:{survivor_port}/ws"
    check = load(stack, http, [stack.ws_url, survivor_ws])
    await check.start(http, f"gk{uuid.uuid4().hex[:6]}")
    sending = asyncio.create_task(check.send_for(6))
    await asyncio.sleep(2)  # let the load run before the fault
    doomed.kill(signal.SIGKILL)
    stack.gateway_port = int(survivor_port)  # HTTP checks go to the one still standing
    await sending
    report = await finish(check, stack, http)
    assert report["reconnects"] >= len(check.clients) // 2
    assert report["acked"] > 0


async def test_messaging_killed_between_commit_and_ack_repeatedly(isolated_stack, http):
    stack = await isolated_stack()
    steady = await stack.start_service("messaging")
    await stack.start_gateway()
    check = load(stack, http, [stack.ws_url])
    await check.start(http, f"mk{uuid.uuid4().hex[:6]}")
    # Sessions exist; now the only replica is one that dies in the window, again and again.
    flaky = await stack.start_service("messaging", CHAT_FAULTS="crash_after_commit=0.3")
    await steady.stop()
    sending = asyncio.create_task(check.send_for(10))
    crashes = 0
    while not sending.done():
        await asyncio.sleep(0.1)
        if flaky.proc.poll() is not None:   # it died in the window: start it again
            crashes += 1
            flaky.start()
    await sending
    # From here on, a steady replica finishes the job.
    await flaky.stop()
    await stack.start_service("messaging")
    report = await finish(check, stack, http)
    assert crashes >= 2, "the fault never fired"
    assert report["acked"] == report["sent"]


async def test_two_messaging_replicas_keep_per_session_order(isolated_stack, http):
    stack = await isolated_stack()
    await stack.start_service("messaging")
    await stack.start_service("messaging")
    await stack.start_gateway()
    check = load(stack, http, [stack.ws_url], pairs=10, rate=8.0)
    await check.start(http, f"rr{uuid.uuid4().hex[:6]}")
    await check.send_for(5)
    report = await finish(check, stack, http)
    assert report["acked"] == report["sent"] > 0


async def test_a_poison_command_is_dead_lettered_and_the_session_keeps_flowing(
        isolated_stack, http):
    stack = await isolated_stack()
    await stack.start_service("messaging", CHAT_FAULTS="poison=POISON",
                              CHAT_DELIVERY_LIMIT="3")
    await stack.start_gateway()
    alice, bob = f"p{uuid.uuid4().hex[:6]}a", f"p{uuid.uuid4().hex[:6]}b"
    api = Api(http, stack.url, stack.token(alice))
    sid = (await api.create_session(bob))["id"]
    status, body = await api.send(sid, "this is POISON")
    assert status == 503 and body["error"]["code"] == "unavailable"
    for i in range(5):
        status, message = await api.send(sid, f"fine {i}")
        assert status == 201 and message["seq"] == i + 1
    # The poison command itself sits in the dead-letter queue for an operator to inspect.
    dead = await dead_letters(stack, "messaging.commands.dlq")
    assert any("POISON" in str(orjson.loads(m)) for m in dead)
    _, page = await api.request("GET", f"/api/chat/sessions/{sid}/messages")
    assert [m["body"] for m in page["messages"]] == [f"fine {i}" for i in range(5)]


async def dead_letters(stack, queue_name: str, timeout: float = 30.0) -> list[bytes]:
    import aio_pika
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                return [message.body]
            await asyncio.sleep(0.2)
        return []
    finally:
        await connection.close()


async def test_broker_stopped_for_20_seconds_under_load(isolated_stack, http, backends):
    """Sends during the outage get a retryable error within the request timeout, never a
    false ack; everything committed is published after it; every consumer re-attaches."""
    stack = await isolated_stack()
    await stack.start_service("messaging")
    await stack.start_gateway()
    check = load(stack, http, [stack.ws_url])
    await check.start(http, f"mq{uuid.uuid4().hex[:6]}")
    alice = check.clients[0]
    api = Api(http, stack.url, alice.token)
    sending = asyncio.create_task(check.send_for(30))
    await asyncio.sleep(2)
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(stop_broker, backends)
    try:
        # The timeout is 5 s (stack.base_env); the answer must be a retryable error.
        status, body = await asyncio.wait_for(api.send(alice.session_id, "during outage"), 15)
        assert status == 503 and body["error"]["code"] == "unavailable"
        stopped_at = loop.time()
        while loop.time() - stopped_at < 18:
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(start_broker, backends)
    await sending
    report = await finish(check, stack, http)
    assert report["acked"] == report["sent"]
    assert report["errors"].get("unavailable", 0) > 0 or report["reconnects"] > 0
    # The HTTP send that failed was never stored.
    history = [m["body"] for c in check.clients[:1]
               for m in (await Api(http, stack.url, c.token).request(
                   "GET", f"/api/chat/sessions/{c.session_id}/messages",
                   params={"limit": "100"}))[1]["messages"]]
    assert "during outage" not in history


async def test_postgres_restarts_immediately_under_load(isolated_stack, http, backends):
    stack = await isolated_stack()
    await stack.start_service("messaging")
    await stack.start_gateway()
    check = load(stack, http, [stack.ws_url])
    await check.start(http, f"pg{uuid.uuid4().hex[:6]}")
    sending = asyncio.create_task(check.send_for(10))
    await asyncio.sleep(2)
    await asyncio.to_thread(restart_postgres_immediately, backends)
    await sending
    report = await finish(check, stack, http)
    assert report["acked"] == report["sent"] > 0
