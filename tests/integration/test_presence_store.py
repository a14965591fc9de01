"""Presence against the real Redis and RabbitMQ: the projections, the expiries, the events.

Time is a fake clock the test moves (the rules are pure functions of ``now``); the state is in
Redis under a prefix of its own; events are published on the run's vhost and read back from a
queue bound the way a gateway binds.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis

from services.presence import handlers
from services.presence.domain import Rules
from services.presence.handlers import Deps, Outbox
from services.presence.store import PresenceStore
from shared.contracts.envelope import Actor, new_envelope
from shared.contracts.errors import ErrorCode
from shared.topology import EVENTS, session_binding, user_binding

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
RULES = Rules(away_after_s=300, offline_grace_s=3, lease_ttl_s=25, typing_ttl_s=6)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def deps(backends):
    redis = aioredis.from_url(backends.redis_url, decode_responses=True)
    store = PresenceStore(redis, f"t{backends.run_id}:it-{uuid.uuid4().hex[:8]}:")
    yield Deps(store=store, rules=RULES, clock=Clock())
    await store.forget_all()
    await redis.aclose()


def command(type_, payload, user=None):
    actor = Actor(user_id=user, role="client") if user else None
    return new_envelope(type_, 1, payload, actor=actor)


def event(type_, payload):
    return new_envelope(type_, 1, payload)


async def run(deps, *envelopes):
    out = Outbox()
    results = await handlers.handle_commands(list(envelopes), deps, out)
    return results, [(env.type, env.payload, env.recipients) for _, env in out.items]


async def created(deps, sid, *users):
    await handlers.handle_events([event("session_created", {
        "session_id": sid, "title": None, "created_by": users[0], "created_at": "x",
        "participants": [{"user_id": u, "role": "member"} for u in users]})], deps, Outbox())


async def test_membership_projection_applies_each_event_once_and_in_order(deps):
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob")
    added = event("participant_added", {"session_id": sid, "seq": 2, "user_id": "carol",
                                        "by": "alice", "role": "member"})
    removed = event("participant_removed", {"session_id": sid, "seq": 3, "user_id": "bob",
                                            "by": "alice"})
    for batch in ([added], [removed], [added]):  # the last one is a redelivery: ignored
        await handlers.handle_events(batch, deps, Outbox())
    assert await deps.store.members(sid) == ["alice", "carol"]
    assert await deps.store.sessions_of("bob") == []
    assert await deps.store.co_participants("alice") == ["carol"]
    assert await deps.store.is_member(sid, "bob") is False
    assert await deps.store.is_member(str(uuid.uuid4()), "bob") is None


async def test_online_then_offline_after_the_grace_only_to_co_participants(deps):
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob")
    await created(deps, str(uuid.uuid4()), "carol", "dan")
    _, events = await run(deps, command("presence.connection_opened",
                                        {"connection_id": "c1", "gateway_id": "g1"}, "alice"))
    assert [(t, p["status"], r) for t, p, r in events] == [("presence_changed", "online",
                                                           ["bob"])]
    _, events = await run(deps, command("presence.connection_closed", {"connection_id": "c1"},
                                        "alice"))
    assert events == []  # the grace: nothing yet
    deps.clock.now += 2.9
    out = Outbox()
    await handlers.expire(deps, out)
    assert out.items == []
    deps.clock.now += 0.2
    await handlers.expire(deps, out)
    [(_, env)] = out.items
    assert env.type == "presence_changed" and env.recipients == ["bob"]
    assert env.payload["status"] == "offline"
    assert env.payload["last_seen"].startswith("2023-11-14T22:13:20")  # when it closed


async def test_lapsed_lease_goes_offline_and_a_renewal_keeps_it_alive(deps):
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob")
    await run(deps, command("presence.connection_opened",
                            {"connection_id": "c1", "gateway_id": "g1"}, "alice"))
    await run(deps, command("presence.open_session", {"session_id": sid, "connection_id": "c1",
                                                      "participants": []}, "alice"))
    deps.clock.now += 20
    renewal = {"gateway_id": "g1", "connections": [
        {"connection_id": "c1", "user_id": "alice", "idle_s": 1, "active": True,
         "sessions": [sid]}]}
    (result,), _ = await run(deps, command("presence.renew_leases", renewal))
    assert result["result"] == {"renewed": 1, "recreated": 0}
    deps.clock.now += 24  # 44 s after opening, 24 s after the renewal
    out = Outbox()
    await handlers.expire(deps, out)
    assert out.items == []
    deps.clock.now += 1.5  # the gateway died after its renewal: the lease lapses
    await handlers.expire(deps, out)
    kinds = {env.type: env for _, env in out.items}
    assert kinds["presence_changed"].payload["status"] == "offline"
    assert kinds["user_left"].payload == {"session_id": sid, "user_id": "alice",
                                          "exclude_user_id": "alice"}
    assert kinds["online_users"].payload["online"] == []
    assert await deps.store.lapsed_leases(deps.clock.now) == []


async def test_away_after_idle_and_online_again_on_activity(deps):
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob")
    await run(deps, command("presence.connection_opened",
                            {"connection_id": "c1", "gateway_id": "g1"}, "alice"))
    out = Outbox()
    for _ in range(31):  # renewals every 10 s without activity, for 310 s
        deps.clock.now += 10
        await run(deps, command("presence.renew_leases", {"gateway_id": "g1", "connections": [
            {"connection_id": "c1", "user_id": "alice", "idle_s": 0, "active": False}]}))
        await handlers.expire(deps, out)
    assert [env.payload["status"] for _, env in out.items] == ["away"]
    _, events = await run(deps, command("presence.connection_active", {"connection_id": "c1"},
                                        "alice"))
    assert [p["status"] for _, p, _ in events] == ["online"]


async def test_typing_refresh_stop_expiry_and_membership_check(deps):
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob")
    start = command("presence.typing_start", {"session_id": sid}, "alice")
    (ok,), events = await run(deps, start)
    assert ok["ok"] and [t for t, _, _ in events] == ["typing_start"]
    deps.clock.now += 4
    _, events = await run(deps, start)  # a refresh: no new event
    assert events == []
    deps.clock.now += 5.9  # 9.9 s after the first start, 5.9 after the refresh
    out = Outbox()
    await handlers.expire(deps, out)
    assert out.items == []
    deps.clock.now += 0.2
    await handlers.expire(deps, out)
    assert [(env.type, env.payload["user_id"]) for _, env in out.items] == [
        ("typing_stop", "alice")]
    (refused,), events = await run(deps, command("presence.typing_start", {"session_id": sid},
                                                 "eve"))
    assert refused["error"]["code"] == ErrorCode.NOT_FOUND and events == []
    _, events = await run(deps, command("presence.typing_stop", {"session_id": sid}, "alice"))
    assert events == []  # not typing any more: nothing to announce


async def test_lost_redis_data_is_rebuilt_from_the_next_renewal(deps):
    sid = str(uuid.uuid4())
    await run(deps, command("presence.connection_opened",
                            {"connection_id": "c1", "gateway_id": "g1"}, "alice"))
    await run(deps, command("presence.open_session", {
        "session_id": sid, "connection_id": "c1", "participants": ["alice", "bob"]}, "alice"))
    assert await deps.store.forget_all() > 0  # what FLUSHALL does to presence
    renewal = {"gateway_id": "g1", "connections": [
        {"connection_id": "c1", "user_id": "alice", "idle_s": 3, "sessions": [sid]}]}
    (result,), _ = await run(deps, command("presence.renew_leases", renewal))
    assert result["result"] == {"renewed": 1, "recreated": 1}
    (answer,), _ = await run(deps, command("presence.open_session", {
        "session_id": sid, "connection_id": "c2", "participants": ["alice", "bob"]}, "bob"))
    assert answer["result"]["online_users"] == ["alice", "bob"]


async def test_events_are_published_as_one_message_reaching_each_bound_queue(deps, broker):
    """What a gateway with bob connected and a session joined receives."""
    sid = str(uuid.uuid4())
    await created(deps, sid, "alice", "bob.b")  # a dot in a user id
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    exchange = await channel.get_exchange(EVENTS)
    await queue.bind(exchange, user_binding("bob.b"))
    await queue.bind(exchange, session_binding(sid))
    out = Outbox()
    await handlers.handle_commands([
        command("presence.connection_opened", {"connection_id": "c1", "gateway_id": "g"},
                "alice"),
        command("presence.typing_start", {"session_id": sid}, "alice")], deps, out)
    await handlers.publish_events(broker, out)
    message = await _get(queue)
    body = orjson.loads(message.body)
    assert [e["type"] for e in body] == ["presence_changed", "typing_start"]
    assert body[0]["recipients"] == ["bob.b"]
    await channel.close()


async def _get(queue) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(100):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError("no event message arrived")
