"""The scheduler: every tick, publish what expired (lapsed leases, away deadlines, offline
graces, typing not refreshed). The deadlines live in Redis sorted sets, so a tick costs a few
range queries whatever the number of connections, and any replica can take over; one tick runs
at a time across replicas (a short lock key)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.logging import get_logger

from .handlers import Deps, Outbox, expire

log = get_logger(__name__)


class Scheduler:
    def __init__(self, deps: Deps, publish: Callable[[Outbox], Awaitable[None]],
                 lock: asyncio.Lock, tick_s: float, owner: str):
        self.deps = deps
        self.publish = publish
        self.lock = lock
        self.tick_s = tick_s
        self.owner = owner
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the broker away: try again next tick
                log.warning("scheduler_tick_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._stopping.wait(), self.tick_s)
            except TimeoutError:
                pass

    async def tick(self) -> int:
        if not await self.deps.store.take_tick(self.owner, self.tick_s * 0.9):
            return 0
        out = Outbox()
        async with self.lock:
            handled = await expire(self.deps, out)
        await self.publish(out)
        return handled
