"""One connection's messages leave the gateway in the order they were sent: a send waits while
an earlier one of the connection is in a request batch on its way (two batches in flight may
reach two messaging replicas, which could commit them the other way round). Real request
coalescing (``shared.requests``) over a hand-written publish."""

from __future__ import annotations

import asyncio

import orjson

from services.gateway import ws
from services.gateway.auth import Principal
from shared.contracts.envelope import Actor
from shared.contracts.frames import SendMessageFrame
from shared.requests import Requests

from ..support.requests import Published, published

SID = "5b0c3e52-3f4a-4d0e-9a51-0a3c9e8f7d21"


class Broker:
    def __init__(self, requests: Requests):
        self.requests = requests

    def submit(self, envelope, answer, *, routing_key, timeout=None, event_key=None):
        return self.requests.submit(envelope, answer, routing_key, timeout, event_key)


class Conn:
    def __init__(self):
        self.id, self.user_id, self.closed = "c1", "alice", False
        self.principal = Principal(Actor(user_id="alice", role="client"), expires_at=0)
        self.last_send, self.held_sends = None, []
        self.sent: list[dict] = []

    def send(self, frame):
        self.sent.append(frame)


class Hub:
    def receives(self, session_id):
        return False  # answered by the reply


class NoLimit:
    def take(self, _key):
        return 0.0


class Presence:
    def stop_typing_now(self, conn, session_id):
        pass


class Ctx:
    def __init__(self, requests):
        self.conn, self.hub, self.broker = Conn(), Hub(), Broker(requests)
        self.rate_messages, self.presence = NoLimit(), Presence()


def frame(n: int) -> SendMessageFrame:
    return SendMessageFrame(type="send_message", session_id=SID, client_msg_id=f"m{n}",
                            body=f"body {n}", ref=str(n))


def reply_to(requests: Requests, port: Published, index: int) -> None:
    correlation_id, envelopes = port.batches[index]
    requests.on_reply(correlation_id, orjson.dumps([
        {"ok": True, "result": {"message": {"client_msg_id": e["payload"]["client_msg_id"]}}}
        for e in envelopes]))


def bodies(port: Published, index: int) -> list[str]:
    return [e["payload"]["body"] for e in port.batches[index][1]]


async def test_a_send_waits_while_the_connections_previous_batch_is_on_its_way():
    port = Published()
    requests = Requests(port, rpc_timeout_s=5, coalesce_window_s=0.01, max_request_batch=256,
                        max_in_flight=2)
    ctx = Ctx(requests)
    ws.send_message(frame(1), ctx, "{}")
    await published(port, 1)
    ws.send_message(frame(2), ctx, "{}")   # m1 is on its way: m2 and m3 wait for its answer
    ws.send_message(frame(3), ctx, "{}")
    await asyncio.sleep(0)
    assert len(port.batches) == 1 and len(ctx.conn.held_sends) == 2
    reply_to(requests, port, 0)
    await published(port, 2)
    assert bodies(port, 0) == ["body 1"] and bodies(port, 1) == ["body 2", "body 3"]
    reply_to(requests, port, 1)
    assert [f["message"]["client_msg_id"] for f in ctx.conn.sent] == ["m1", "m2", "m3"]
    assert ctx.conn.held_sends == []


async def test_sends_of_one_moment_travel_together_and_other_connections_never_wait():
    port = Published()
    requests = Requests(port, rpc_timeout_s=5, coalesce_window_s=0.01, max_request_batch=256,
                        max_in_flight=2)
    ctx, other = Ctx(requests), Ctx(requests)
    ws.send_message(frame(1), ctx, "{}")
    ws.send_message(frame(2), ctx, "{}")   # still being coalesced with m1: no wait
    await published(port, 1)
    ws.send_message(frame(9), other, "{}")  # another connection: its own order only
    await published(port, 2)
    assert bodies(port, 0) == ["body 1", "body 2"] and bodies(port, 1) == ["body 9"]
    assert ctx.conn.held_sends == [] and other.conn.held_sends == []
