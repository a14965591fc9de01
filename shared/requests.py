"""Request/reply over direct reply-to, the caller's side (``Broker.request`` / ``submit``).

Requests for one routing key travel together as one AMQP message (an array of envelopes) and
are answered by one reply, an array of the same length (see ``contracts.envelope``); each
caller still gets its own result or error. Coalescing adapts to the load, as Nagle's algorithm
does: while fewer than ``max_in_flight`` batches of that key await their answers, a request
leaves at the end of the current loop iteration (with whatever arrived in it); otherwise it
waits for a batch to be answered, at most ``coalesce_window_s``. So an idle system adds no
delay and a busy one sends fewer, fuller messages. A request not answered within its timeout
is answered 503 ``unavailable``; one timer per batch enforces the deadlines.

Answered by events: a caller that will see the event which completes its request (the gateway,
bound to the session of a message it sends) submits it with an ``event_key`` (for a message:
its id). Such requests travel in batches of their own, marked ``x-answered-by-events``; the
service leaves ``null`` in the reply for each one it announced in an event (and sends no reply
when that is all of them), and the caller answers it from the event instead
(``answer_from_event``). Errors and retries still come back in the reply. If the event never
comes, the request times out like any other and is retried idempotently.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import orjson

from .contracts.errors import ServiceError, unavailable
from .ids import new_hex
from .logging import get_logger
from .metrics import RPC_FAILURES, RPC_SECONDS

log = get_logger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
ANSWERED_BY_EVENTS = "x-answered-by-events"  # header of a batch answered from events

Answer = Callable[[dict[str, Any]], None]
# publish(routing_key, body, correlation_id, headers) -> None; raises ServiceError
Publish = Callable[[str, bytes, str, dict | None], Coroutine[Any, Any, None]]


def result_of(reply: dict[str, Any]) -> Any:
    """A reply's result; its error raised as ServiceError."""
    if reply.get("ok"):
        return reply.get("result")
    raise ServiceError.from_dict(reply["error"])


class Requests:
    def __init__(self, publish: Publish, *, rpc_timeout_s: float, coalesce_window_s: float,
                 max_request_batch: int, max_in_flight: int):
        self._publish = publish
        self.rpc_timeout_s = rpc_timeout_s
        self.coalesce_window_s = coalesce_window_s
        self.max_request_batch = max_request_batch
        self.max_in_flight = max_in_flight
        # A lane is (routing key, answered by events): each coalesces on its own.
        self._pending: dict[tuple[str, bool], list[_Call]] = defaultdict(list)
        self._in_flight: dict[tuple[str, bool], int] = defaultdict(int)
        self._flush_handles: dict[tuple[str, bool], asyncio.Handle] = {}
        self._batches: dict[str, _Batch] = {}  # correlation id -> batch awaiting answers
        self._by_event: dict[str, _Call] = {}  # event key -> call answered by its event
        self._tasks: set[asyncio.Task] = set()

    async def request(self, envelope: dict, routing_key: str, timeout: float | None) -> Any:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.submit(envelope, partial(_settle_future, future), routing_key, timeout)
        return result_of(await future)

    def submit(self, envelope: dict, answer: Answer, routing_key: str,
               timeout: float | None = None, event_key: str | None = None) -> _Call:
        """``answer(reply)`` is called once, with the reply (``{"ok": true, "result": ...}``
        or ``{"ok": false, "error": {...}}``, a timeout included). Returns the request, whose
        ``sent`` and ``answered`` tell where it is."""
        loop = asyncio.get_running_loop()
        lane = (routing_key, event_key is not None)
        call = _Call(envelope, answer, loop.time() + (timeout or self.rpc_timeout_s),
                     routing_key, event_key)
        pending = self._pending[lane]
        pending.append(call)
        if event_key is not None:
            self._by_event[event_key] = call
        if len(pending) >= self.max_request_batch:
            self._flush_now(lane)
        elif lane not in self._flush_handles:
            if self._in_flight[lane] < self.max_in_flight:
                handle = loop.call_soon(self._flush_now, lane)
            else:  # a batch answered flushes sooner (see _batch_done)
                handle = loop.call_later(self.coalesce_window_s, self._flush_now, lane)
            self._flush_handles[lane] = handle
        return call

    def answer_from_event(self, event_key: str, result: Any) -> None:
        """The event that completes request ``event_key`` arrived (nothing happens if it is
        not ours or was answered already)."""
        call = self._by_event.get(event_key)
        if call is not None:
            self._answer(call, {"ok": True, "result": result})

    def on_reply(self, correlation_id: str, body: bytes) -> None:
        batch = self._batches.get(correlation_id)
        if batch is None:
            return  # answered or given up on already, or not ours
        try:
            results = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.error("bad_reply_body", correlation_id=correlation_id)
            results = []
        for index, call in enumerate(batch.calls):
            if call.answer is None:
                continue
            if index < len(results):
                if results[index] is not None:  # None: answered by its event
                    self._answer(call, results[index])
            else:
                self._answer(call, {"ok": False, "error": unavailable("malformed reply")
                                    .to_dict()})
        if batch.lane[1]:
            batch.replied = True  # what is left comes by event, or times out
        else:
            self._batch_done(batch)

    def close(self) -> list[asyncio.Task]:
        for handle in self._flush_handles.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        return list(self._tasks)

    # ---- batches --------------------------------------------------------------------------

    def _flush_now(self, lane: tuple[str, bool]) -> None:
        handle = self._flush_handles.pop(lane, None)
        if handle is not None:
            handle.cancel()
        calls = self._pending.pop(lane, [])
        if calls:
            self._in_flight[lane] += 1
            task = asyncio.create_task(self._send(_Batch(lane, calls)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: _Batch) -> None:
        routing_key, by_events = batch.lane
        loop = asyncio.get_running_loop()
        batch.timer = loop.call_at(min(call.deadline for call in batch.calls), self._expire,
                                   batch)
        self._batches[batch.correlation_id] = batch
        for call in batch.calls:
            call.batch = batch
        try:
            await self._publish(routing_key, orjson.dumps([c.envelope for c in batch.calls]),
                                batch.correlation_id,
                                {ANSWERED_BY_EVENTS: True} if by_events else None)
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                log.exception("request_not_sent", routing_key=routing_key)
                exc = unavailable("request could not be sent")
            RPC_FAILURES.labels(routing_key, "publish").inc()
            for call in batch.calls:
                if call.answer is not None:
                    self._answer(call, {"ok": False, "error": exc.to_dict()})

    def _answer(self, call: _Call, reply: dict[str, Any]) -> None:
        answer, call.answer = call.answer, None
        if call.event_key is not None:
            self._by_event.pop(call.event_key, None)
        _rpc_seconds(call.routing_key).observe(time.perf_counter() - call.started)
        try:
            answer(reply)
        except Exception:  # a caller's bug must not keep the batch (and its slot) forever
            log.exception("request_answer_failed", routing_key=call.routing_key)
        batch = call.batch
        if batch is not None:
            batch.unanswered -= 1
            if batch.unanswered == 0:
                self._batch_done(batch)

    def _batch_done(self, batch: _Batch) -> None:
        """A batch was answered, failed to publish or was given up on: its slot frees, and
        requests held for it leave now."""
        if self._batches.pop(batch.correlation_id, None) is None:
            return
        batch.timer.cancel()
        self._in_flight[batch.lane] -= 1
        if self._pending.get(batch.lane):
            self._flush_now(batch.lane)

    def _expire(self, batch: _Batch) -> None:
        """At the earliest deadline of a batch: its callers whose deadline passed get 503
        ``unavailable``; the timer is set again for the others."""
        if batch.correlation_id not in self._batches:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        routing_key = batch.lane[0]
        later = []
        for call in batch.calls:
            if call.answer is None:
                continue
            if call.deadline <= now:
                RPC_FAILURES.labels(routing_key, "timeout").inc()
                error = unavailable(f"no answer from {routing_key.split('.')[0]} in time")
                self._answer(call, {"ok": False, "error": error.to_dict()})
            else:
                later.append(call.deadline)
        if later and batch.correlation_id in self._batches:
            batch.timer = loop.call_at(min(later), self._expire, batch)


class _Batch:
    """Requests that travel as one AMQP message."""

    __slots__ = ("lane", "calls", "correlation_id", "unanswered", "timer", "replied")

    def __init__(self, lane: tuple[str, bool], calls: list[_Call]):
        self.lane = lane
        self.calls = calls
        self.correlation_id = new_hex()
        self.unanswered = len(calls)
        self.timer: asyncio.TimerHandle | None = None
        self.replied = False


class _Call:
    """One request: its envelope, who gets the answer (None once answered), by when, since
    when (the round trip each caller saw is observed), and its batch once sent."""

    __slots__ = ("envelope", "answer", "deadline", "started", "routing_key", "event_key",
                 "batch")

    def __init__(self, envelope: dict, answer: Answer, deadline: float, routing_key: str,
                 event_key: str | None):
        self.envelope = envelope
        self.answer: Answer | None = answer
        self.deadline = deadline
        self.started = time.perf_counter()
        self.routing_key = routing_key
        self.event_key = event_key
        self.batch: _Batch | None = None

    @property
    def sent(self) -> bool:
        """Left in a batch (else still waiting to be coalesced with others)."""
        return self.batch is not None

    @property
    def answered(self) -> bool:
        return self.answer is None

    @property
    def by_events(self) -> bool:
        return self.event_key is not None


def _settle_future(future: asyncio.Future, reply: dict[str, Any]) -> None:
    if not future.done():  # the caller may have given up (cancelled)
        future.set_result(reply)


_RPC_SECONDS_BY_KEY: dict = {}


def _rpc_seconds(routing_key: str):
    child = _RPC_SECONDS_BY_KEY.get(routing_key)
    if child is None:
        child = _RPC_SECONDS_BY_KEY[routing_key] = RPC_SECONDS.labels(routing_key)
    return child
