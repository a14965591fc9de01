"""Rebuilding presence's membership projection from messaging (``messaging.memberships``)
after Redis lost its data: the query against real Postgres, the rebuild against real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from services.messaging.handlers import Deps as MessagingDeps
from services.messaging.handlers import handle_batch
from services.presence import handlers
from services.presence.domain import Rules
from services.presence.handlers import Deps, Outbox
from services.presence.heal import SERVICE_ACTOR, MembershipHealer
from services.presence.store import PresenceStore
from shared.contracts.commands import AddParticipant, CreateSession, ListMemberships
from shared.contracts.envelope import Actor, new_envelope

pytestmark = pytest.mark.integration


def envelope(command, actor: Actor):
    return new_envelope(command.TYPE, command.VERSION, command.model_dump(mode="json"),
                        actor=actor, correlation_id=uuid.uuid4().hex)


def client(user: str, role: str = "client") -> Actor:
    return Actor(user_id=user, role=role)


@pytest.fixture
def messaging(messaging_pool):
    return MessagingDeps(pool=messaging_pool)


@pytest.fixture
async def store(backends):
    redis = aioredis.from_url(backends.redis_url, decode_responses=True)
    store = PresenceStore(redis, f"t{backends.run_id}:mb-{uuid.uuid4().hex[:8]}:")
    yield store
    await store.forget_all()
    await redis.aclose()


async def create(messaging, owner: str, *others: str) -> str:
    sid = uuid.uuid4()
    [reply] = await handle_batch([envelope(CreateSession(session_id=sid,
                                                         participant_ids=list(others)),
                                           client(owner))], messaging)
    assert reply["ok"], reply
    return str(sid)


async def test_memberships_lists_every_session_of_the_users_and_only_to_services(messaging):
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol, dan = (f"{n}-{tag}" for n in ("alice", "bob", "carol", "dan"))
    s1 = await create(messaging, alice, bob)
    s2 = await create(messaging, carol, alice)
    await create(messaging, carol, dan)  # none of alice's
    [added] = await handle_batch([envelope(AddParticipant(session_id=s1, user_id=dan),
                                           client(alice))], messaging)
    assert added["ok"], added
    query = ListMemberships(user_ids=[alice, alice])
    [answer] = await handle_batch([envelope(query, SERVICE_ACTOR)], messaging)
    assert answer["ok"], answer
    assert answer["result"]["sessions"] == {s1: sorted([alice, bob, dan]),
                                            s2: sorted([alice, carol])}
    assert answer["result"]["seqs"][s1] >= 1 and answer["result"]["seqs"][s2] == 0

    refused = await handle_batch([envelope(query, client(alice)),
                                  envelope(query, client(alice, "admin")),
                                  envelope(query, client("service:x", "reader"))], messaging)
    assert [r["error"]["code"] for r in refused] == ["forbidden"] * 3


async def test_rebuild_replaces_partial_state_keeps_newer_events_and_is_idempotent(store):
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    # After the loss, one event arrived first (a partial view of s1), and s2 is newer than
    # the snapshot that will come (seq 7 applied; the snapshot is at seq 5).
    await store.apply_membership(s1, 3, ["carol"], [])
    await store.apply_membership(s2, 7, ["erin"], [])
    assert await store.membership_unknown(["alice", "bob"]) == ["alice", "bob"]
    snapshot = {s1: (4, ["alice", "bob", "carol"]), s2: (5, ["alice", "dan"])}
    skipped = await store.load_memberships(["alice"], snapshot)
    assert skipped == [s2]
    assert await store.members(s1) == ["alice", "bob", "carol"]
    assert await store.members(s2) == ["erin"]  # not rolled back to an older snapshot
    assert await store.membership_unknown(["alice"]) == ["alice"]  # asked again later
    # A newer snapshot covers s2; twice is the same as once.
    snapshot[s2] = (7, ["alice", "erin"])
    for _ in range(2):
        assert await store.load_memberships(["alice"], snapshot) == []
    assert await store.members(s2) == ["alice", "erin"]
    assert await store.sessions_of("alice") == sorted([s1, s2])
    assert await store.membership_unknown(["alice", "bob"]) == ["bob"]
    # Events up to the snapshot are ignored; later ones apply on top.
    assert not await store.apply_membership(s1, 4, [], ["bob"])
    assert await store.apply_membership(s1, 5, [], ["bob"])
    assert await store.members(s1) == ["alice", "carol"]
    assert await store.sessions_of("bob") == []
    assert await store.co_participants("alice") == ["carol", "erin"]


async def test_a_renewal_after_a_loss_heals_memberships_without_waiting_for_messaging(store):
    sid = str(uuid.uuid4())
    asked: list[list[str]] = []
    answer_now = asyncio.Event()

    async def request(payload: dict, timeout: float):
        asked.append(payload["user_ids"])
        await answer_now.wait()  # messaging slow: the renewal must not wait for it
        return {"sessions": {sid: ["alice", "bob"]}, "seqs": {sid: 2}}

    lock = asyncio.Lock()
    healer = MembershipHealer(store, request, lock, timeout_s=5)
    deps = Deps(store=store, rules=Rules(), check_memberships=healer.check)
    renewal = new_envelope("presence.renew_leases", 1, {"gateway_id": "g1", "connections": [
        {"connection_id": "c1", "user_id": "alice", "idle_s": 1}]})
    async with lock:
        [result] = await handlers.handle_commands([renewal], deps, Outbox())
    assert result["result"] == {"renewed": 1, "recreated": 1}
    async with lock:  # a second renewal while the first lookup is pending asks nothing more
        await handlers.handle_commands([renewal], deps, Outbox())
    await eventually(lambda: asked == [["alice"]])
    assert await store.co_participants("alice") == []
    answer_now.set()

    async def healed():
        return await store.co_participants("alice") == ["bob"]
    await eventually(healed)
    assert asked == [["alice"]]
    assert await store.membership_unknown(["alice"]) == []
    await healer.close()


async def eventually(condition, within_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
