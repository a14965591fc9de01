"""The broker layer against a real RabbitMQ (a fresh vhost per run)."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

import aiormq
import orjson
import pytest

from shared.broker import Broker, TransientError
from shared.contracts.envelope import failed, new_envelope, ok
from shared.contracts.errors import ErrorCode, ServiceError
from shared.topology import EVENTS, DurableQueue, command_queue, request_queue

pytestmark = pytest.mark.integration


def unique_service() -> str:
    return f"svc{uuid.uuid4().hex[:8]}"


async def test_requests_within_the_window_travel_as_one_message_and_each_gets_its_answer(
        broker: Broker):
    service = unique_service()
    batches: list[int] = []

    async def handler(envelopes):
        batches.append(len(envelopes))
        return [ok(e.payload["n"] * 2) if e.payload["n"] != 3
                else failed(ServiceError(ErrorCode.CONFLICT, "three")) for e in envelopes]

    consumer = await broker.serve(command_queue(service), handler)
    try:
        calls = [broker.request(new_envelope(f"{service}.double", 1, {"n": n}))
                 for n in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[:3] == [0, 2, 4] and results[4:] == [8, 10, 12, 14, 16, 18]
        assert isinstance(results[3], ServiceError) and results[3].code == ErrorCode.CONFLICT
        assert sum(batches) == 10 and len(batches) < 10  # coalesced
    finally:
        await consumer.stop(1)


async def test_a_command_nobody_consumes_is_unavailable_at_once(broker: Broker):
    with pytest.raises(ServiceError) as refused:
        await broker.request(new_envelope(f"{unique_service()}.anything", 1, {}))
    assert refused.value.code == ErrorCode.UNAVAILABLE


async def test_no_reply_in_time_is_unavailable(broker: Broker):
    service = unique_service()
    release = asyncio.Event()

    async def slow(envelopes):
        await release.wait()
        return [ok(None) for _ in envelopes]

    consumer = await broker.serve(command_queue(service), slow)
    try:
        with pytest.raises(ServiceError) as refused:
            await broker.request(new_envelope(f"{service}.slow", 1, {}), timeout=0.3)
        assert refused.value.code == ErrorCode.UNAVAILABLE
    finally:
        release.set()
        await consumer.stop(1)


@pytest.mark.parametrize("queue", ["quorum commands", "classic requests"])
async def test_a_poison_message_is_dead_lettered_and_the_others_keep_flowing(broker: Broker,
                                                                            queue: str):
    """A quorum queue counts the tries itself; for a classic queue the consumer counts them."""
    service = unique_service()
    spec = (command_queue(service) if queue == "quorum commands"
            else request_queue(service, "classic"))
    attempts = {"poison": 0}

    async def handler(envelopes):
        for e in envelopes:
            if e.payload.get("poison"):
                attempts["poison"] += 1
                raise RuntimeError("always fails")
        return [ok(e.payload["n"]) for e in envelopes]

    consumer = await broker.serve(spec, handler)
    try:
        poison = new_envelope(f"{service}.work", 1, {"poison": True, "n": -1})
        await broker.publish("chat.commands", [f"{service}.work"], _body([poison]))
        answers = await asyncio.gather(*(broker.request(new_envelope(
            f"{service}.work", 1, {"n": n})) for n in range(5)))
        assert answers == [0, 1, 2, 3, 4]
        dlq = await broker._channel.declare_queue(spec.dead_letter_queue, passive=True)
        message = await _wait_for_message(dlq)
        assert orjson.loads(message.body)[0]["payload"]["poison"] is True
        # delivery_limit=3 in the fixture: tried a bounded number of times, then given up
        # (for the classic queue: at most once with others, then three times alone).
        assert 1 <= attempts["poison"] <= (5 if queue == "quorum commands" else 4)
    finally:
        await consumer.stop(1)


async def test_a_transient_store_failure_is_retried_not_dead_lettered(broker: Broker):
    service = unique_service()
    failures = {"left": 3}

    async def flaky(envelopes):
        if failures["left"]:
            failures["left"] -= 1
            raise TransientError("database restarting")
        return [ok("done") for _ in envelopes]

    consumer = await broker.serve(command_queue(service), flaky)
    try:
        result = await broker.request(new_envelope(f"{service}.work", 1, {}), timeout=30)
        assert result == "done" and failures["left"] == 0
    finally:
        await consumer.stop(1)


async def test_bcc_routes_one_message_to_each_bound_queue_exactly_once(broker: Broker):
    a, b = uuid.uuid4(), uuid.uuid4()
    q_a = await broker.declare_exclusive(f"test.{uuid.uuid4().hex}")
    q_both = await broker.declare_exclusive(f"test.{uuid.uuid4().hex}")
    await q_a.bind(broker.exchanges[EVENTS], f"session.{a}.#")
    await q_both.bind(broker.exchanges[EVENTS], f"session.{a}.#")
    await q_both.bind(broker.exchanges[EVENTS], f"session.{b}.#")
    await broker.publish(EVENTS, [f"session.{a}.message_sent", f"session.{b}.message_sent",
                                  f"session.{a}.message_deleted"], b"[]", mandatory=False)
    first = await _wait_for_message(q_both)
    assert "BCC" not in (first.headers or {})
    await _wait_for_message(q_a)
    assert await q_both.get(fail=False) is None and await q_a.get(fail=False) is None


def _body(envelopes):
    from shared.contracts.envelope import encode_batch
    return encode_batch(envelopes)


async def _wait_for_message(queue, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing arrived on {queue.name}")


def test_durable_queues_are_quorum_queues_with_a_delivery_limit():
    args = DurableQueue("x.commands", "chat.commands", ("x.*",)).arguments(5)
    assert args["x-queue-type"] == "quorum" and args["x-delivery-limit"] == 5
    assert args["x-dead-letter-exchange"] == "chat.dlx"


def test_request_queues_are_classic_or_quorum_as_configured():
    classic = request_queue("x", "classic")
    assert classic.arguments(5) == {"x-queue-type": "classic", "x-dead-letter-exchange": "chat.dlx",
                                    "x-dead-letter-routing-key": "x.commands"}
    assert not classic.counts_deliveries  # the consumer counts the tries
    assert request_queue("x", "quorum").arguments(5)["x-delivery-limit"] == 5
    with pytest.raises(ValueError):
        request_queue("x", "stream")


async def test_requests_answered_by_events_get_the_event_or_the_reply_or_a_timeout(
        broker: Broker):
    """A caller that will see the event completing its request submits it with an event key:
    the service leaves what it announced out of the reply (and sends no reply when that is
    all), the caller answers those from the events, and the rest comes in the reply."""
    service = unique_service()
    replies = {"sent": 0}

    async def handler(envelopes):
        results = []
        for e in envelopes:
            n = e.payload["n"]
            results.append(failed(ServiceError(ErrorCode.CONFLICT, "odd")) if n % 2
                           else {**ok({"n": n}), "announced": True})
        return results

    real_reply = broker.reply

    async def counting_reply(message, results):
        replies["sent"] += 1
        await real_reply(message, results)

    consumer = await broker.serve(command_queue(service), handler)
    broker.reply = counting_reply
    try:
        answers: dict[int, dict] = {}
        done = asyncio.Event()

        def answer(n, reply):
            answers[n] = reply
            if len(answers) == 4:
                done.set()

        for n in range(4):
            broker.submit(new_envelope(f"{service}.work", 1, {"n": n}), partial(answer, n),
                          routing_key=f"{service}.work", timeout=1.0, event_key=f"k{n}")
        async with asyncio.timeout(10):
            while not (1 in answers and 3 in answers):  # the errors come in the reply
                await asyncio.sleep(0.01)
        assert answers[1]["error"]["code"] == "conflict" and 0 not in answers
        broker.requests.answer_from_event("k0", {"n": 0})  # the event of request 0 arrives
        async with asyncio.timeout(10):
            await done.wait()  # request 2's event never comes: it times out
        assert answers[0] == {"ok": True, "result": {"n": 0}}
        assert answers[2]["error"]["code"] == "unavailable"
        # A batch whose every result was announced gets no reply at all.
        sent = replies["sent"]
        broker.submit(new_envelope(f"{service}.work", 1, {"n": 10}), partial(answer, 10),
                      routing_key=f"{service}.work", event_key="k10")
        async with asyncio.timeout(10):
            while replies["sent"] == sent:
                await asyncio.sleep(0.01)
        broker.requests.answer_from_event("k10", {"n": 10})
        assert answers[10] == {"ok": True, "result": {"n": 10}}
    finally:
        broker.reply = real_reply
        await consumer.stop(1)


async def test_a_queue_declared_before_with_another_type_is_refused(broker: Broker):
    """RabbitMQ keeps a queue's type: switching CHAT_REQUEST_QUEUE_TYPE needs the queue
    deleted first, and the service says so instead of starting half-way."""
    service = unique_service()

    async def handler(envelopes):
        return [ok(None) for _ in envelopes]

    consumer = await broker.serve(command_queue(service), handler)  # quorum
    await consumer.stop(1)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await broker.serve(request_queue(service, "classic"), handler)
