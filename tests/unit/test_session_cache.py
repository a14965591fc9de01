"""The messaging service's memory of sessions, with a hand-written fake of the store."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from services.messaging.domain import SessionState
from services.messaging.sessions import SessionCache


class FakeStore:
    """Sessions as stored; counts the reads."""

    def __init__(self, *session_ids: uuid.UUID):
        self.rows = {sid: SessionState(sid, "alice", 0, {"alice": "owner"})
                     for sid in session_ids}
        self.reads: list[list[uuid.UUID]] = []

    @asynccontextmanager
    async def acquire(self):
        yield "conn"

    async def load(self, _conn, session_ids):
        self.reads.append(list(session_ids))
        return {sid: SessionState(sid, s.created_by, s.last_seq, dict(s.participants))
                for sid, s in self.rows.items() if sid in session_ids}


async def test_known_sessions_are_not_read_again_and_keep_the_seqs_decided():
    a, b = uuid.uuid4(), uuid.uuid4()
    store = FakeStore(a, b)
    cache = SessionCache(10, load=store.load)
    first = await cache.states(store, [a])
    first[a].last_seq = 7  # a batch was decided on it
    again = await cache.states(store, [a, b])
    assert again[a].last_seq == 7 and again[b].last_seq == 0
    assert store.reads == [[a], [b]]


async def test_unknown_sessions_are_not_remembered():
    store = FakeStore()
    cache = SessionCache(10, load=store.load)
    assert await cache.states(store, [uuid.uuid4()]) == {}
    assert len(cache) == 0


async def test_forgotten_sessions_are_read_again():
    a = uuid.uuid4()
    store = FakeStore(a)
    cache = SessionCache(10, load=store.load)
    (await cache.states(store, [a]))[a].last_seq = 3
    cache.forget([a])
    assert (await cache.states(store, [a]))[a].last_seq == 0
    assert store.reads == [[a], [a]]


async def test_the_least_recently_used_session_goes_first():
    ids = [uuid.uuid4() for _ in range(3)]
    store = FakeStore(*ids)
    cache = SessionCache(2, load=store.load)
    await cache.states(store, ids[:2])
    await cache.states(store, [ids[0]])      # ids[1] is now the oldest
    await cache.states(store, [ids[2]])
    assert len(cache) == 2
    store.reads.clear()
    await cache.states(store, ids)
    assert store.reads == [[ids[1]]]
