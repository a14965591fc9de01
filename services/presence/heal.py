"""Rebuilding the membership projection after Redis lost its data (FLUSHALL, a restart).

Connections, statuses and open sessions come back with the gateways' next lease renewals;
memberships come from messaging's events, which are not replayed. So whenever a user with a
live connection is not in the ``mk`` set (emptied with everything else), presence asks
messaging for that user's sessions (``messaging.memberships``, request/reply) in the
background: a renewal never waits for messaging. A failed or slow answer is dropped; the next
renewal asks again. Events applied after the snapshot stay correct: the snapshot carries each
session's ``last_seq`` and the projection ignores events up to it (``apply_membership``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.broker import Broker
from shared.contracts.commands import ListMemberships
from shared.contracts.envelope import Actor, new_envelope
from shared.logging import get_logger

from .store import PresenceStore

log = get_logger(__name__)
SERVICE_ACTOR = Actor(user_id="service:presence", role="admin")
MAX_USERS = 1000  # per request (the contract's limit)


class MembershipHealer:
    def __init__(self, store: PresenceStore, request: Callable[[dict, float], Awaitable],
                 lock: asyncio.Lock, timeout_s: float = 5.0):
        self.store = store
        self.request = request
        self.lock = lock
        self.timeout_s = timeout_s
        self._asking: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def over(cls, broker: Broker, store: PresenceStore, lock: asyncio.Lock,
             timeout_s: float = 5.0) -> MembershipHealer:
        async def request(payload: dict, timeout: float):
            envelope = new_envelope(ListMemberships.TYPE, 1, payload, actor=SERVICE_ACTOR)
            return await broker.request(envelope, timeout=timeout)
        return cls(store, request, lock, timeout_s)

    async def check(self, user_ids: list[str]) -> None:
        """Called with the users of live connections (one Redis command); starts a background
        lookup for those whose memberships are unknown and not being asked already."""
        wanted = sorted({u for u in user_ids if u not in self._asking})
        unknown = await self.store.membership_unknown(wanted)
        for start in range(0, len(unknown), MAX_USERS):
            chunk = unknown[start:start + MAX_USERS]
            self._asking.update(chunk)
            task = asyncio.create_task(self._heal(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _heal(self, user_ids: list[str]) -> None:
        try:
            answer = await self.request({"user_ids": user_ids}, self.timeout_s)
            snapshot = {sid: (int(answer["seqs"][sid]), list(users))
                        for sid, users in answer["sessions"].items()}
            async with self.lock:
                skipped = await self.store.load_memberships(user_ids, snapshot)
            log.info("memberships_rebuilt", users=len(user_ids), sessions=len(snapshot),
                     skipped=len(skipped))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # messaging slow or away, Redis away: the next renewal asks
            log.warning("memberships_rebuild_failed", users=len(user_ids), error=repr(exc))
        finally:
            self._asking.difference_update(user_ids)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
