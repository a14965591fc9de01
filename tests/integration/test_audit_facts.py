"""``FactPublisher`` against a real RabbitMQ: facts recorded together travel as one message on
``chat.events``, reach a queue bound to ``audit.#``, and recording never raises."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.audit_facts import FactPublisher
from shared.contracts.envelope import Actor, decode_batch
from shared.topology import EVENTS

pytestmark = pytest.mark.integration


async def test_facts_recorded_together_travel_as_one_message(broker):
    queue = await broker.declare_exclusive(f"facts-{uuid.uuid4().hex[:8]}")
    await queue.bind(broker.exchanges[EVENTS], "audit.#")
    bodies: asyncio.Queue = asyncio.Queue()

    async def received(message) -> None:
        await bodies.put(message.body)

    await broker.consume_raw(queue, received)

    publisher = FactPublisher(broker, "gateway", window_s=0.01)
    sid = uuid.uuid4()
    eve = Actor(user_id="eve", role="client")
    publisher.record("auth.failed", "failed", correlation_id="r1", target_id="/ws",
                     reason="invalid token: expired")
    publisher.record("access.denied", "denied", actor=eve, correlation_id="r2", session_id=sid,
                     target_id=str(sid), reason="not_found")
    publisher.record("no.such_action", "ok")  # refused and logged, never raised
    await publisher.close()

    envelopes = decode_batch(await asyncio.wait_for(bodies.get(), 10))
    assert [(e.type, e.payload["action"], e.correlation_id) for e in envelopes] == [
        ("audit_fact", "auth.failed", "r1"), ("audit_fact", "access.denied", "r2")]
    assert envelopes[0].actor is None and envelopes[1].actor == eve
    assert envelopes[1].payload["session_id"] == str(sid)
    assert bodies.empty()  # one message for both (it went out once, to one queue)
    assert publisher.dropped == 0
