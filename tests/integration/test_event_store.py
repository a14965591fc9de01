"""The messaging event store and its outbox relay against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from prometheus_client import REGISTRY

from services.messaging.handlers import Deps, handle_batch
from services.messaging.relay import OutboxRelay
from shared.contracts.commands import (
    AddParticipant,
    CreateSession,
    MarkReceipt,
    RemoveParticipant,
    SendMessage,
)
from shared.contracts.envelope import Actor, new_envelope
from shared.topology import EVENTS, session_binding

pytestmark = pytest.mark.integration


def envelope(command, user: str, role: str = "client"):
    return new_envelope(command.TYPE, command.VERSION, command.model_dump(mode="json"),
                        actor=Actor(user_id=user, role=role), correlation_id=uuid.uuid4().hex)


async def new_session(deps: Deps, owner: str, *others: str) -> str:
    sid = uuid.uuid4()
    [reply] = await handle_batch([envelope(CreateSession(session_id=sid,
                                                         participant_ids=list(others)), owner)],
                                 deps)
    assert reply["ok"], reply
    return str(sid)


def send(sid: str, user: str, body: str, client_msg_id: str | None = None):
    return envelope(SendMessage(session_id=sid, message_id=uuid.uuid4(),
                                client_msg_id=client_msg_id or uuid.uuid4().hex, body=body), user)


@pytest.fixture
def deps(messaging_pool):
    return Deps(pool=messaging_pool)


async def test_one_batch_across_sessions_gives_each_session_consecutive_seqs(deps):
    s1 = await new_session(deps, "alice", "bob")
    s2 = await new_session(deps, "carol", "dave")
    batch = [send(s1, "alice", "a1"), send(s2, "carol", "c1"), send(s1, "bob", "b1"),
             send(s2, "dave", "d1"), send(s1, "alice", "a2")]
    replies = await handle_batch(batch, deps)
    seqs = [(r["result"]["message"]["session_id"], r["result"]["message"]["seq"])
            for r in replies]
    assert seqs == [(s1, 1), (s2, 1), (s1, 2), (s2, 2), (s1, 3)]


async def test_duplicates_inside_and_across_batches_create_one_message(deps, messaging_pool):
    sid = await new_session(deps, "alice", "bob")
    batch = [send(sid, "alice", "same", "dup"), send(sid, "alice", "same", "dup"),
             send(sid, "alice", "other", "dup")]
    replies = await handle_batch(batch, deps)
    assert replies[0]["result"]["created"] is True
    assert replies[1]["result"] == {"message": replies[0]["result"]["message"], "created": False}
    assert replies[2]["ok"] is False and replies[2]["error"]["code"] == "conflict"
    # Retried in a later batch: the stored message comes back exactly as first answered.
    [again] = await handle_batch([send(sid, "alice", "same", "dup")], deps)
    assert again["result"] == {"message": replies[0]["result"]["message"], "created": False}
    [clash] = await handle_batch([send(sid, "alice", "other", "dup")], deps)
    assert clash["ok"] is False and clash["error"]["code"] == "conflict"
    async with messaging_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE session_id = $1",
                                   uuid.UUID(sid)) == 1
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1",
                                   uuid.UUID(sid)) == 2  # created + one message


async def test_concurrent_writers_never_collide_and_leave_no_gaps(deps, messaging_pool):
    """Eight batches at once from two "replicas" (each Deps writes optimistically on its own):
    writes that lose the race are refused and redone under the lock, and nothing collides."""
    sid = await new_session(deps, "alice", "bob")
    replicas = [deps, Deps(pool=messaging_pool)]
    # Each replica knows the session, the first one a seq behind: its next write is refused.
    for replica in replicas:
        await handle_batch([send(sid, "alice", "warm-up")], replica)
    batches = [[send(sid, "alice" if i % 2 else "bob", f"{w}-{i}") for i in range(20)]
               for w in range(8)]
    refused = REGISTRY.get_sample_value("chat_optimistic_writes_total",
                                        {"outcome": "refused"}) or 0
    results = await asyncio.gather(*(handle_batch(b, replicas[w % 2])
                                     for w, b in enumerate(batches)))
    assert all(r["ok"] for replies in results for r in replies)
    assert REGISTRY.get_sample_value("chat_optimistic_writes_total",
                                     {"outcome": "refused"}) > refused
    async with messaging_pool.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", uuid.UUID(sid))]
        versions = [r["version"] for r in await conn.fetch(
            "SELECT version FROM events WHERE stream_id = $1 ORDER BY position",
            uuid.UUID(sid))]
    assert seqs == list(range(1, 163))
    assert versions == list(range(0, 163))  # position order is seq order



async def test_a_redelivered_command_gets_its_first_answer_and_changes_nothing(
        deps, messaging_pool):
    """The broker redelivers a command whose handler committed but died before its ack: the
    inbox answers it as the first time (not 409 "already a participant" or 404; a session
    answer shows the session as it is now), and no second event is appended. The inbox keeps
    no message text."""
    sid = await new_session(deps, "alice", "bob")
    [hello] = await handle_batch([send(sid, "alice", "inbox must not keep this text")], deps)
    add = envelope(AddParticipant(session_id=sid, user_id="carol"), "alice")
    remove = envelope(RemoveParticipant(session_id=sid, user_id="bob"), "alice")
    read = envelope(MarkReceipt(session_id=sid, marker="read", up_to_seq=1), "bob")
    first = await handle_batch([add, read], deps)
    [removed] = await handle_batch([remove], deps)
    assert all(r["ok"] for r in [*first, removed]), [*first, removed]
    again = await handle_batch([add, read, remove], deps)
    assert again[1:] == [first[1], removed]
    assert again[0]["ok"] and again[0]["result"]["id"] == sid
    assert [p["user_id"] for p in again[0]["result"]["participants"]] == ["alice", "carol"]
    assert again[0]["result"]["last_message"]["body"] == "inbox must not keep this text"
    async with messaging_pool.acquire() as conn:
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM events WHERE stream_id = $1 ORDER BY position", uuid.UUID(sid))]
        inbox = await conn.fetch("SELECT type, answer::text AS answer FROM inbox "
                                 "WHERE message_id = ANY($1)",
                                 [add.message_id, remove.message_id, read.message_id,
                                  uuid.UUID(hello["result"]["message"]["id"])])
    assert types == ["session_created", "message_sent", "messages_read", "participant_added",
                     "participant_removed"]
    assert sorted(r["type"] for r in inbox) == ["messaging.add_participant",
                                               "messaging.mark_receipt",
                                               "messaging.remove_participant"]
    assert not any("inbox must not keep" in r["answer"] for r in inbox)


def refused() -> float:
    return REGISTRY.get_sample_value("chat_optimistic_writes_total", {"outcome": "refused"}) or 0


async def test_a_session_that_moved_on_elsewhere_refuses_the_write_decided_on_what_was_known(
        deps, messaging_pool):
    """Replica A knows the session at seq 1; replica B writes seq 2. A's next message, decided
    on seq 1, is refused by the store and written under the lock instead: seq 3."""
    sid = await new_session(deps, "alice", "bob")
    other = Deps(pool=messaging_pool)
    [first] = await handle_batch([send(sid, "alice", "a1")], deps)
    [second] = await handle_batch([send(sid, "bob", "b1")], other)
    before = refused()
    [third] = await handle_batch([send(sid, "alice", "a2")], deps)
    assert [r["result"]["message"]["seq"] for r in (first, second, third)] == [1, 2, 3]
    assert refused() == before + 1



async def test_a_participant_added_elsewhere_can_post_at_once_through_any_replica(
        deps, messaging_pool):
    """Replica A remembers the session without carol; replica B adds her. Her first message
    through A is refused on A's memory, so it is decided again under the lock: it is stored."""
    sid = await new_session(deps, "alice", "bob")
    other = Deps(pool=messaging_pool)
    [first] = await handle_batch([send(sid, "alice", "a1")], deps)
    [added] = await handle_batch([envelope(AddParticipant(session_id=sid, user_id="carol"),
                                           "alice")], other)
    assert first["ok"] and added["ok"]
    [hello] = await handle_batch([send(sid, "carol", "hi")], deps)  # nothing else to refuse
    assert hello["ok"], hello
    assert hello["result"]["message"]["seq"] == 3
    [outsider] = await handle_batch([send(sid, "mallory", "let me in")], deps)
    assert outsider["error"]["code"] == "not_found"


async def test_a_participant_removed_elsewhere_cannot_post_on_what_was_known(
        deps, messaging_pool):
    """The removal moves the session's seq on, so a message decided on the old membership
    (bob still a participant, in replica A's memory) is refused, and decided again: 404."""
    sid = await new_session(deps, "alice", "bob", "carol")
    other = Deps(pool=messaging_pool)
    [ok_reply] = await handle_batch([send(sid, "bob", "hello")], deps)
    assert ok_reply["ok"]
    [removed] = await handle_batch([envelope(RemoveParticipant(session_id=sid, user_id="bob"),
                                             "alice")], other)
    assert removed["ok"], removed
    [late] = await handle_batch([send(sid, "bob", "still here?")], deps)
    assert late["ok"] is False and late["error"]["code"] == "not_found"
    async with messaging_pool.acquire() as conn:
        bodies = [r["body"] for r in await conn.fetch(
            "SELECT body FROM messages WHERE session_id = $1 ORDER BY seq", uuid.UUID(sid))]
    assert bodies == ["hello"]


async def test_batches_decided_after_a_refused_one_are_written_after_it(deps, messaging_pool):
    """Four batches of one sender in flight at once, the first decided on a stale seq: it is
    refused, and the batches decided after it (continuing its seqs) are written after it, so
    the sender's messages keep their order and the stream has no gap."""
    sid = await new_session(deps, "alice", "bob")
    await handle_batch([send(sid, "alice", "known")], deps)
    await handle_batch([send(sid, "bob", "elsewhere")], Deps(pool=messaging_pool))
    before = refused()
    batches = [[send(sid, "alice", f"{b}-{i}") for i in range(5)] for b in range(4)]
    results = await asyncio.gather(*(handle_batch(b, deps) for b in batches))
    assert all(r["ok"] for replies in results for r in replies)
    assert refused() > before
    async with messaging_pool.acquire() as conn:
        rows = await conn.fetch("SELECT seq, body FROM messages WHERE session_id = $1 "
                                "ORDER BY seq", uuid.UUID(sid))
    assert [r["seq"] for r in rows] == list(range(1, 23))
    assert [r["body"] for r in rows][2:] == [f"{b}-{i}" for b in range(4) for i in range(5)]


async def test_the_relay_publishes_every_committed_event_once_in_order(deps, broker,
                                                                       messaging_db):
    sid = await new_session(deps, "alice", "bob")
    queue = await broker.declare_exclusive(f"test.{uuid.uuid4().hex}")
    await queue.bind(broker.exchanges[EVENTS], session_binding(sid))
    relay = OutboxRelay(messaging_db, broker)
    task = asyncio.create_task(relay.run())
    try:
        for i in range(3):
            await handle_batch([send(sid, "alice", f"m{i}-{j}") for j in range(10)], deps)
            relay.wake()
        seen = await _collect(queue, sid, 30)
        assert seen == list(range(1, 31))
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
    # A new relay resumes from the checkpoint: it publishes only what came after.
    await handle_batch([send(sid, "bob", "after restart")], deps)
    relay = OutboxRelay(messaging_db, broker)
    task = asyncio.create_task(relay.run())
    try:
        assert await _collect(queue, sid, 1) == [31]
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_events_handed_over_by_this_process_and_appended_elsewhere_interleave(
        deps, broker, messaging_db, messaging_pool):
    """The relay publishes its own process's commits as handed over (without reading them
    back) and reads what another replica appended, and together they reach the broker once
    each, in order, exactly as stored."""
    sid = await new_session(deps, "alice", "bob")
    queue = await broker.declare_exclusive(f"test.{uuid.uuid4().hex}")
    await queue.bind(broker.exchanges[EVENTS], session_binding(sid))
    relay = OutboxRelay(messaging_db, broker)
    task = asyncio.create_task(relay.run())
    local = Deps(pool=messaging_pool, on_commit=relay.committed,
                 notify_relays=relay.needs_notify)
    try:
        async with asyncio.timeout(10):
            while not relay.active:
                await asyncio.sleep(0.01)
        assert relay.needs_notify() is False
        for i in range(6):
            # Every third batch comes from "another replica": no hand-over, pg_notify instead.
            writer = deps if i % 3 == 2 else local
            await handle_batch([send(sid, "alice", f"m{i}-{j}") for j in range(5)], writer)
        envelopes = await _collect_envelopes(queue, sid, 30)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
    assert [e["payload"]["seq"] for e in envelopes] == list(range(1, 31))
    async with messaging_pool.acquire() as conn:
        stored = await conn.fetch(
            """SELECT event_id, payload, recipients, correlation_id FROM events
               WHERE stream_id = $1 AND type = 'message_sent' ORDER BY version""",
            uuid.UUID(sid))
    assert [(e["message_id"], e["payload"], e["recipients"], e["correlation_id"])
            for e in envelopes] == [(str(r["event_id"]), r["payload"], r["recipients"],
                                     r["correlation_id"]) for r in stored]


async def _collect(queue, sid: str, count: int, timeout: float = 15.0) -> list[int]:
    return [e["payload"]["seq"] for e in await _collect_envelopes(queue, sid, count, timeout)]


async def _collect_envelopes(queue, sid: str, count: int, timeout: float = 15.0) -> list[dict]:
    found: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found) < count and loop.time() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        for event in orjson.loads(message.body):
            if event["payload"]["session_id"] == sid and event["type"] == "message_sent":
                found.append(event)
    return found
