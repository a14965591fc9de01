"""Publishes media's events from its outbox table: the rows are written in the same transaction
as the change they record, and deleted in the transaction that published them (after the
broker's confirm), so nothing committed is lost and nothing uncommitted goes out. Rows are taken
with ``FOR UPDATE SKIP LOCKED``: several replicas may run this at once."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from shared.broker import Broker
from shared.contracts.errors import ServiceError
from shared.logging import get_logger
from shared.topology import EVENTS

from . import store

log = get_logger(__name__)


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, *, batch_size: int = 200,
                 idle_poll_s: float = 1.0):
        self.pool = pool
        self.broker = broker
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self._wakeup = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                published = await self.publish_once()
            except (ServiceError, OSError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("outbox_publish_failed", error=repr(exc))
                published = 0
                await asyncio.sleep(0.5)
            if self._stopping and published < self.batch_size:
                return
            if published < self.batch_size:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.idle_poll_s)
                except TimeoutError:
                    pass
                self._wakeup.clear()

    async def publish_once(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.take_outbox(conn, self.batch_size)
            if not rows:
                return 0
            keys = list(dict.fromkeys(r["routing_key"] for r in rows))
            body = orjson.dumps([r["envelope"] for r in rows])
            await self.broker.publish(EVENTS, keys, body, message_type="events",
                                      mandatory=False)
            await store.drop_outbox(conn, [r["position"] for r in rows])
        return len(rows)
