"""Publishing ``AuditFact``s (``shared.contracts.audit``) without slowing anyone down.

A service that alone knows a fact worth auditing (the gateway: a refused token, an access
refused; media: a rejected upload) calls ``FactPublisher.record``, which returns at once. Facts
recorded within ``window_s`` travel together as one AMQP message on ``chat.events`` (routing key
``audit.<source>.<action>``, one per action in the batch, the others in ``BCC``), published with
confirms in a background task. A publish that fails is retried a few times, then the batch is
dropped and logged: the client's request never waits for, or fails because of, the audit. The
audit service records each fact once (by its envelope's ``message_id``).
"""

from __future__ import annotations

import asyncio
import uuid

from .broker import Broker
from .contracts.audit import AuditFact
from .contracts.envelope import Actor, Envelope, encode_batch, new_envelope
from .contracts.errors import ServiceError
from .logging import get_logger
from .metrics import BROKER_PUBLISH_FAILURES
from .topology import EVENTS

log = get_logger(__name__)


class FactPublisher:
    def __init__(self, broker: Broker, source: str, *, window_s: float = 0.005,
                 max_pending: int = 10_000, attempts: int = 5, retry_delay_s: float = 0.5):
        self.broker = broker
        self.source = source
        self.window_s = window_s
        self.max_pending = max_pending
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self._pending: list[Envelope] = []
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.dropped = 0

    def record(self, action: str, outcome: str, *, actor: Actor | None = None,
               correlation_id: str | None = None, session_id: uuid.UUID | None = None,
               target_id: str | None = None, reason: str | None = None) -> None:
        """Queue one fact; never raises, never waits."""
        try:
            fact = AuditFact(action=action, outcome=outcome, session_id=session_id,
                             target_id=target_id, reason=(reason or None) and reason[:200])
        except ValueError as exc:  # a programming error: log it, do not break the request
            log.error("audit_fact_invalid", action=action, error=str(exc))
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.error("audit_fact_dropped", action=action, why="too many pending")
            return
        self._pending.append(new_envelope(fact.TYPE, fact.VERSION, fact.model_dump(mode="json"),
                                          actor=actor, correlation_id=correlation_id))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.window_s, self._send_now)

    def _send_now(self) -> None:
        self._flush = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._publish(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, batch: list[Envelope]) -> None:
        keys: list[str] = []
        for envelope in batch:
            key = f"audit.{self.source}.{envelope.payload['action'].replace('.', '_')}"
            if key not in keys:
                keys.append(key)
        body = encode_batch(batch)
        for attempt in range(1, self.attempts + 1):
            try:
                await self.broker.publish(EVENTS, keys, body, message_type="events",
                                          mandatory=False)
                return
            except ServiceError:
                if attempt < self.attempts:
                    await asyncio.sleep(self.retry_delay_s * attempt)
        self.dropped += len(batch)
        BROKER_PUBLISH_FAILURES.labels("audit_facts").inc()
        log.error("audit_facts_dropped", facts=len(batch), why="broker unavailable")

    async def close(self, grace_s: float = 5.0) -> None:
        """Send what is pending and wait (bounded) for the publishes in flight."""
        if self._flush is not None:
            self._flush.cancel()
        self._send_now()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
