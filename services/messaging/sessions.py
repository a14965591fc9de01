"""What this process knows of the sessions it writes to, so that a batch of messages is decided
without reading the sessions first.

Each entry is the session as of the last batch this process decided for it, committed or still
on its way to Postgres: a batch decided while the previous one is being written continues the
seqs that one assigned. An entry may be stale (another replica wrote to the session, or a batch
decided on it was refused). That is safe because the optimistic append states, for every
session, the seq it expects the session to be at, and refuses to commit when the session is
elsewhere (``store.append_events`` with ``expect_seqs``); the entries of a refused batch are
dropped, and the next batch reads them again.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

import asyncpg

from . import store
from .domain import SessionState


class SessionCache:
    def __init__(self, max_size: int = 100_000, load=store.load_sessions):
        self.max_size = max_size
        self._load = load  # (conn, session_ids) -> {session_id: SessionState}
        self._states: OrderedDict[uuid.UUID, SessionState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    async def states(self, pool: asyncpg.Pool, session_ids: list[uuid.UUID]
                     ) -> dict[uuid.UUID, SessionState]:
        """The sessions that exist among ``session_ids``: known ones from memory, the others
        read (without a lock). The objects are shared: deciding a batch moves their
        ``last_seq`` on, and the next batch continues from there."""
        found: dict[uuid.UUID, SessionState] = {}
        missing = []
        for session_id in session_ids:
            state = self._states.get(session_id)
            if state is None:
                missing.append(session_id)
            else:
                self._states.move_to_end(session_id)
                found[session_id] = state
        if missing:
            async with pool.acquire() as conn:
                loaded = await self._load(conn, missing)
            for session_id, state in loaded.items():
                # Another batch may have read and moved it on meanwhile: keep that one.
                found[session_id] = self._states.setdefault(session_id, state)
            while len(self._states) > self.max_size:
                self._states.popitem(last=False)
        return found

    def forget(self, session_ids) -> None:
        """Drop what is known of these sessions (a batch on them was refused, or they were
        written under the lock): the next batch reads them."""
        for session_id in session_ids:
            self._states.pop(session_id, None)
