"""The transactional outbox relay: publishes committed events from the event store.

It tails ``events`` by ``position`` from the checkpoint, publishes each run of events as one AMQP
message on ``chat.events`` (routing keys ``session.<id>.<type>``, the extra ones in ``BCC``),
waits for the broker's confirm, and only then moves the checkpoint. A crash between confirm and
checkpoint republishes the same events (consumers de-duplicate by seq and event id); nothing
committed is skipped, and nothing uncommitted is ever published.

Exactly one relay is active across replicas: it holds a session-level advisory lock on a
dedicated connection; the others wait for it.

The handlers of the active relay's own process hand it what they commit (``committed``): the
position the events follow and the events. When that position is where the relay stands, it
publishes them as they are, without reading them back, and those appends need not wake it
through Postgres (``pg_notify``). Anything else (another replica's appends, a hand-over that
does not fit) is read from the table as above, so the hand-over only saves work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import asyncpg
import orjson

from shared.broker import Broker
from shared.contracts.errors import ServiceError
from shared.contracts.fields import rfc3339
from shared.db import connect
from shared.logging import get_logger
from shared.topology import EVENTS, session_key, user_key

from .store import SCHEMA_VERSIONS, NewEvent

log = get_logger(__name__)
RELAY_LOCK = 0x72656c79  # "rely"
MAX_HANDED_OVER = 1000  # hand-overs kept waiting for their turn; past it, read them back


class OutboxRelay:
    def __init__(self, database_url: str, broker: Broker, *, batch_size: int = 500,
                 idle_poll_s: float = 1.0, checkpoint_every_s: float = 0.5):
        self.database_url = database_url
        self.broker = broker
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.checkpoint_every_s = checkpoint_every_s
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.published_position = 0
        self.active = False  # holds the relay lock
        self._handed_over: dict[int, list[NewEvent]] = {}  # position they follow -> events

    def wake(self) -> None:
        self._wakeup.set()

    def committed(self, before: int, events: list[NewEvent]) -> None:
        """This process committed ``events`` (positions set), which directly follow position
        ``before`` in the store."""
        if not self.active:
            return  # the active relay is elsewhere: pg_notify told it
        if len(self._handed_over) >= MAX_HANDED_OVER:
            self._handed_over.clear()
        self._handed_over[before] = events
        self._wakeup.set()

    def needs_notify(self) -> bool:
        return not self.active

    def _take_handed_over(self, position: int) -> list[Mapping] | None:
        """The committed events that follow ``position`` without a gap, if they were handed
        over (several hand-overs in a row travel together, up to a batch)."""
        for stale in [p for p in self._handed_over if p < position]:
            del self._handed_over[stale]
        rows: list[Mapping] = []
        while position in self._handed_over and len(rows) < self.batch_size:
            events = self._handed_over.pop(position)
            rows += [_row(e) for e in events]
            position = events[-1].position
        return rows or None

    def stop(self) -> None:
        """Publish what is committed, then return from ``run``."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._run_while_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay_interrupted", error=repr(exc))
                await asyncio.sleep(1.0)

    async def _run_while_connected(self) -> None:
        conn = await connect(self.database_url)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                await asyncio.sleep(2.0)  # another replica relays; stand by
            log.info("relay_active")
            await conn.add_listener("events_appended", lambda *_: self.wake())
            self.active = True
            position = await conn.fetchval(
                "SELECT position FROM outbox_checkpoint WHERE name = 'events'")
            saved, saved_at = position, time.monotonic()
            while True:
                published, position = await self._publish_once(conn, position)
                # The checkpoint is written at most every ``checkpoint_every_s``: after a crash
                # the relay republishes a little (consumers de-duplicate), and in exchange no
                # publish waits for a checkpoint commit.
                if position != saved and (
                        self._stopping or time.monotonic() - saved_at >= self.checkpoint_every_s):
                    await self._save(conn, position)
                    saved, saved_at = position, time.monotonic()
                if self._stopping and published < self.batch_size:
                    return
                # Hand-overs that arrived while this batch was published are due now.
                if published < self.batch_size and not (published and self._handed_over):
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), self.idle_poll_s)
                    except TimeoutError:
                        if position != saved:  # quiet: a good moment to record progress
                            await self._save(conn, position)
                            saved, saved_at = position, time.monotonic()
                    self._wakeup.clear()
        finally:
            self.active = False
            self._handed_over.clear()
            await conn.close(timeout=2)

    async def _save(self, conn: asyncpg.Connection, position: int) -> None:
        await conn.execute("UPDATE outbox_checkpoint SET position = $1 WHERE name = 'events'",
                           position)

    async def _publish_once(self, conn: asyncpg.Connection, checkpoint: int) -> tuple[int, int]:
        rows = self._take_handed_over(checkpoint)
        if rows is None:
            rows = await self._read(conn, checkpoint)
        if not rows:
            return 0, checkpoint
        envelopes, keys, seen = [], [], set()
        for row in rows:
            envelopes.append(event_envelope(row))
            for key in routing_keys(row):
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
        body = orjson.dumps(envelopes)
        while True:
            try:
                await self.broker.publish(EVENTS, keys, body, message_type="events",
                                          mandatory=False)
                break
            except ServiceError:
                await asyncio.sleep(0.5)  # broker away: keep the events, try again
        last = rows[-1]["position"]
        self.published_position = last
        return len(rows), last

    async def _read(self, conn: asyncpg.Connection, checkpoint: int) -> list[Mapping]:
        return await conn.fetch(
            """SELECT position, event_id, stream_id, version, type, schema_version, payload,
                      actor_id, actor_role, correlation_id, causation_id, occurred_at,
                      recipients
               FROM events WHERE position > $1 ORDER BY position LIMIT $2""",
            checkpoint, self.batch_size)


def _row(event: NewEvent) -> dict:
    """A handed-over event as the relay's read would have given it."""
    return {
        "position": event.position, "event_id": event.event_id, "stream_id": event.stream_id,
        "version": event.version, "type": event.type,
        "schema_version": SCHEMA_VERSIONS[event.type], "payload": event.payload,
        "actor_id": event.actor.user_id if event.actor else None,
        "actor_role": event.actor.role if event.actor else None,
        "correlation_id": event.correlation_id, "causation_id": event.causation_id,
        "occurred_at": event.occurred_at, "recipients": event.recipients,
    }


def routing_keys(row) -> list[str]:
    """``session.<id>.<type>``, and ``user.<id>.<type>`` for each recipient."""
    keys = [session_key(row["stream_id"], row["type"])]
    for user_id in row["recipients"] or ():
        keys.append(user_key(user_id, row["type"]))
    return keys


def event_envelope(row) -> dict:
    """An event as it travels (an ``Envelope`` in JSON); ``seq`` is in the payload."""
    actor = ({"user_id": row["actor_id"], "role": row["actor_role"]}
             if row["actor_id"] else None)
    return {
        "message_id": str(row["event_id"]), "type": row["type"],
        "version": row["schema_version"], "occurred_at": rfc3339(row["occurred_at"]),
        "correlation_id": row["correlation_id"], "causation_id": row["causation_id"],
        "actor": actor, "payload": row["payload"], "recipients": row["recipients"],
    }
