"""The broker layer over aio-pika: every service talks to RabbitMQ through this module only.

- Topology is declared from ``shared.topology``.
- ``publish`` uses publisher confirms, ``mandatory`` and a timeout; a failure is a
  ``ServiceError(unavailable)``, never a silent drop. Confirms are pipelined: concurrent publishes
  share the channel and each awaits its own confirm.
- ``request`` / ``submit`` are request/reply over direct reply-to, coalesced into batches as
  Nagle's algorithm does, optionally answered from events (see ``shared.requests``).
- ``serve`` consumes a durable queue with a prefetch limit, hands the handler every envelope that
  is waiting (up to ``max_batch``) at once, replies, and acks only after the handler returned
  (the handler commits). If a batch fails, each message is retried alone, so one poison message
  cannot hold the others; a message that keeps failing is dead-lettered after
  ``delivery_limit`` tries (a quorum queue counts them; for a classic queue the consumer does).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from . import faults
from .contracts.envelope import Envelope, decode_batch
from .contracts.errors import ServiceError, unavailable
from .logging import get_logger
from .metrics import (
    BATCH_SIZE,
    BROKER_CONNECTED,
    BROKER_CONSUMED,
    BROKER_PUBLISH_FAILURES,
    BROKER_PUBLISHED,
    HANDLER_SECONDS,
)
from .requests import ANSWERED_BY_EVENTS, DIRECT_REPLY_TO, Requests
from .settings import CommonSettings
from .topology import COMMANDS, DEAD_LETTERS, EXCHANGES, DurableQueue

log = get_logger(__name__)

JSON = "application/json"

# A batch handler gets every envelope of the batch and returns one result per envelope, in
# order: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``.
BatchHandler = Callable[[list[Envelope]], Awaitable[list[dict[str, Any]]]]
RawCallback = Callable[[AbstractIncomingMessage], Awaitable[None]]


class TransientError(Exception):
    """A store is unreachable: the batch is retried with backoff and never counts against the
    delivery limit (the messages stay unacked; callers time out and retry idempotently)."""


def retry_when(errors: tuple[type[BaseException], ...], handler: BatchHandler) -> BatchHandler:
    """Wrap a batch handler so that ``errors`` (a store being away) become TransientError."""
    async def handle(envelopes: list[Envelope]) -> list[dict[str, Any]]:
        try:
            return await handler(envelopes)
        except errors as exc:
            raise TransientError(str(exc)) from exc
    return handle


class Broker:
    def __init__(self, settings: CommonSettings, service: str, *,
                 coalesce_window_s: float = 0.01, max_request_batch: int = 256,
                 max_in_flight: int = 1):
        self.settings = settings
        self.service = service
        self.connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self.requests = Requests(self._publish_requests, rpc_timeout_s=settings.rpc_timeout_s,
                                 coalesce_window_s=coalesce_window_s,
                                 max_request_batch=max_request_batch,
                                 max_in_flight=max_in_flight)
        self._closing = False

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(
            self.settings.amqp_url,
            client_properties={"connection_name": f"{self.service}-{self.settings.instance_id}"},
            reconnect_interval=1,
        )
        self.connection.close_callbacks.add(lambda *_: BROKER_CONNECTED.set(0))
        self.connection.reconnect_callbacks.add(lambda *_: BROKER_CONNECTED.set(1))
        BROKER_CONNECTED.set(1)
        self._channel = await self.connection.channel(publisher_confirms=True,
                                                      on_return_raises=True)
        self._reply_channel = await self.connection.channel(publisher_confirms=False)
        for name in EXCHANGES:
            self.exchanges[name] = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True)
        await self._consume_replies()
        # Direct reply-to is a pseudo-queue the channel does not restore by itself: consume it
        # again whenever the channel comes back (after a broker restart or a channel error).
        self._channel.reopen_callbacks.add(self._consume_replies)

    async def _consume_replies(self, *_args) -> None:
        reply_queue = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True, robust=False)

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*self.requests.close(), return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()
        BROKER_CONNECTED.set(0)

    @property
    def is_connected(self) -> bool:
        return (self.connection is not None and not self.connection.is_closed
                and self._channel is not None and not self._channel.is_closed)

    # ---- topology -------------------------------------------------------------------------

    async def declare_durable(self, spec: DurableQueue, channel: AbstractChannel | None = None
                              ) -> AbstractQueue:
        channel = channel or self._channel
        dlx = await channel.get_exchange(DEAD_LETTERS, ensure=False)
        dlq = await channel.declare_queue(spec.dead_letter_queue, durable=True,
                                          arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, spec.name)
        try:
            queue = await channel.declare_queue(
                spec.name, durable=True, arguments=spec.arguments(self.settings.delivery_limit))
        except aiormq.exceptions.ChannelPreconditionFailed:
            # Declared before with other arguments (another type, from an older version or
            # another CHAT_REQUEST_QUEUE_TYPE): RabbitMQ keeps a queue's type for its life.
            log.error("queue_declared_differently", queue=spec.name,
                      wanted=spec.arguments(self.settings.delivery_limit),
                      fix=f"rabbitmqctl delete_queue {spec.name} (a request queue holds only "
                          "requests whose callers have given up), then start again")
            raise
        exchange = await channel.get_exchange(spec.exchange, ensure=False)
        for key in spec.bindings:
            await queue.bind(exchange, key)
        return queue

    async def declare_exclusive(self, name: str, channel: AbstractChannel | None = None
                                ) -> AbstractQueue:
        channel = channel or self._channel
        return await channel.declare_queue(name, exclusive=True, auto_delete=True,
                                           arguments={"x-queue-type": "classic"})

    # ---- publishing -----------------------------------------------------------------------

    async def publish(self, exchange: str, routing_keys: list[str], body: bytes, *,
                      message_type: str | None = None, reply_to: str | None = None,
                      correlation_id: str | None = None, persistent: bool = True,
                      mandatory: bool = True, headers: dict[str, Any] | None = None) -> None:
        """Publish one AMQP message and wait for the broker's confirm.

        ``mandatory``: an unroutable message is an error (a command nobody consumes). Events
        are published with ``mandatory=False``: an event nobody subscribes to is not a failure,
        the event store keeps it.

        ``routing_keys[0]`` is the routing key; the rest go in ``BCC`` so that the message
        reaches each queue bound to any of them exactly once.
        """
        headers = dict(headers or {})
        if len(routing_keys) > 1:
            headers["BCC"] = list(routing_keys[1:])
        message = aio_pika.Message(
            body,
            content_type=JSON,
            delivery_mode=(aio_pika.DeliveryMode.PERSISTENT if persistent
                           else aio_pika.DeliveryMode.NOT_PERSISTENT),
            headers=headers or None,
            reply_to=reply_to,
            correlation_id=correlation_id,
            type=message_type,
            app_id=self.service,
        )
        try:
            if self._channel is None or self._channel.is_closed:
                raise ConnectionError("broker channel is closed")
            await self.exchanges[exchange].publish(
                message, routing_keys[0], mandatory=mandatory,
                timeout=self.settings.publish_timeout_s)
        except Exception as exc:
            BROKER_PUBLISH_FAILURES.labels(exchange).inc()
            log.warning("publish_failed", exchange=exchange, routing_key=routing_keys[0],
                        error=repr(exc))
            raise unavailable("message broker unavailable") from exc
        BROKER_PUBLISHED.labels(exchange, "request" if reply_to else "message").inc()

    # ---- request / reply ------------------------------------------------------------------

    async def request(self, envelope: Envelope | dict, *, routing_key: str | None = None,
                      timeout: float | None = None) -> Any:
        """Send a command or query and return its result; raise its ServiceError.

        ``envelope`` may be an ``Envelope`` or its JSON form (a dict), which the hot paths
        build directly. No reply within ``timeout`` is 503 ``unavailable``.
        """
        if isinstance(envelope, Envelope):
            envelope = envelope.model_dump(mode="json")
        return await self.requests.request(envelope, routing_key or envelope["type"], timeout)

    def submit(self, envelope: Envelope | dict, answer: Callable[[dict[str, Any]], None], *,
               routing_key: str, timeout: float | None = None,
               event_key: str | None = None) -> Any:
        """``request`` without a coroutine or a future, for hot paths (see
        ``Requests.submit``); returns the request."""
        if isinstance(envelope, Envelope):
            envelope = envelope.model_dump(mode="json")
        return self.requests.submit(envelope, answer, routing_key, timeout, event_key)

    async def _publish_requests(self, routing_key: str, body: bytes, correlation_id: str,
                                headers: dict | None) -> None:
        await self.publish(COMMANDS, [routing_key], body, message_type=routing_key,
                           reply_to=DIRECT_REPLY_TO, correlation_id=correlation_id,
                           persistent=False, headers=headers)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        self.requests.on_reply(message.correlation_id or "", message.body)

    # ---- consuming ------------------------------------------------------------------------

    async def serve(self, spec: DurableQueue, handler: BatchHandler, *, prefetch: int = 256,
                    max_batch: int = 256, concurrency: int = 1) -> Consumer:
        """Start consuming ``spec``, handing the handler batches of envelopes.

        ``concurrency`` batches may be in the handler at once (each acked after its own
        handler returned): while one waits on its store, the next is decoded and queued.
        """
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await self.declare_durable(spec, channel)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tries = None if spec.counts_deliveries else _Tries(self.settings.delivery_limit)
        workers = [_BatchWorker(self, spec.name, handler, inbox, max_batch, tries)
                   for _ in range(concurrency)]
        tag = await queue.consume(inbox.put)
        task = asyncio.create_task(_run_all(workers))
        return Consumer(queue, tag, workers, task)

    async def consume_raw(self, queue: AbstractQueue, callback: RawCallback) -> None:
        """Consume without acks (exclusive per-instance queues whose loss is recovered by
        clients resuming from their last seq)."""
        await queue.consume(callback, no_ack=True)

    async def reply(self, message: AbstractIncomingMessage, results: list[dict[str, Any]]) -> None:
        """Answer a request batch. If its caller answers from events (``x-answered-by-events``),
        the results the handler ``announced`` in an event are left out (null), and nothing is
        sent when that is all of them."""
        if not message.reply_to:
            return
        if (message.headers or {}).get(ANSWERED_BY_EVENTS):
            results = [None if r.get("announced") else r for r in results]
            if all(r is None for r in results):
                return
        try:
            await self._reply_channel.default_exchange.publish(
                aio_pika.Message(orjson.dumps(results), content_type=JSON,
                                 correlation_id=message.correlation_id,
                                 delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                message.reply_to, mandatory=False)
        except Exception as exc:  # the caller will time out and retry idempotently
            log.warning("reply_failed", error=repr(exc))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class Consumer:
    """A running consumer. ``stop`` stops taking work and lets the batch in hand finish; what
    was prefetched but not handled goes back to the queue when the channel closes."""

    def __init__(self, queue: AbstractQueue, tag: str, workers: list[_BatchWorker],
                 task: asyncio.Task):
        self.queue, self.tag, self.workers, self.task = queue, tag, workers, task

    async def stop(self, grace_s: float) -> None:
        try:
            await self.queue.cancel(self.tag)
        except Exception as exc:
            log.warning("consumer_cancel_failed", error=repr(exc))
        for worker in self.workers:
            worker.stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*(w.idle.wait() for w in self.workers)),
                                   grace_s)
        except TimeoutError:
            log.warning("shutdown_grace_expired", queue=self.workers[0].queue_name)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _run_all(workers: list[_BatchWorker]) -> None:
    await asyncio.gather(*(worker.run() for worker in workers))


class _Tries:
    """Failed tries of each message, for a queue that does not count deliveries itself
    (classic). Counted in this process, so a message that kills the process is not counted
    (a quorum queue's delivery limit also covers that)."""

    def __init__(self, limit: int, remember: int = 10_000):
        self.limit = limit
        self.remember = remember
        self._failed: OrderedDict[object, int] = OrderedDict()

    def failed(self, message: AbstractIncomingMessage) -> bool:
        """Count a failed try; True once the message has had its ``limit`` tries."""
        key = message.message_id or message.correlation_id or hash(message.body)
        count = self._failed.pop(key, 0) + 1
        if count >= self.limit:
            return True
        self._failed[key] = count
        if len(self._failed) > self.remember:
            self._failed.popitem(last=False)
        return False


class _BatchWorker:
    """Takes what is waiting in the inbox, handles it as one batch, replies, then acks."""

    def __init__(self, broker: Broker, queue_name: str, handler: BatchHandler,
                 inbox: asyncio.Queue, max_batch: int, tries: _Tries | None):
        self.broker = broker
        self.queue_name = queue_name
        self.handler = handler
        self.inbox = inbox
        self.max_batch = max_batch
        self.tries = tries
        self.stopping = False
        self.idle = asyncio.Event()
        self.idle.set()

    async def run(self) -> None:
        while not self.stopping:
            messages = [await self.inbox.get()]
            if self.stopping:
                break
            while not self.inbox.empty() and len(messages) < self.max_batch:
                messages.append(self.inbox.get_nowait())
            self.idle.clear()
            try:
                await self.handle(messages)
            finally:
                self.idle.set()

    async def handle(self, messages: list[AbstractIncomingMessage]) -> None:
        decoded: list[tuple[AbstractIncomingMessage, list[Envelope]]] = []
        for message in messages:
            try:
                decoded.append((message, decode_batch(message.body)))
            except ServiceError as exc:
                # A malformed message will never succeed: straight to the dead-letter queue.
                log.error("malformed_message", queue=self.queue_name, error=exc.message,
                          message_id=message.message_id)
                BROKER_CONSUMED.labels(self.queue_name, "malformed").inc()
                await self.broker.reply(message, [{"ok": False, "error": exc.to_dict()}])
                await _settle(message.reject(requeue=False))
        if not decoded:
            return
        if await self._attempt(decoded):
            return
        if len(decoded) == 1:
            await self._give_back(decoded[0][0])
            return
        log.warning("batch_failed_retrying_one_by_one", queue=self.queue_name,
                    messages=len(decoded))
        for item in decoded:
            if not await self._attempt([item]):
                await self._give_back(item[0])

    async def _attempt(self, decoded) -> bool:
        """Handle; while a store is unreachable, wait and try again. False: the handler
        failed for another reason (logged)."""
        delay = 0.2
        while True:
            try:
                await self._handle_together(decoded)
                return True
            except TransientError as exc:
                log.warning("store_unavailable_retrying", queue=self.queue_name,
                            error=repr(exc.__cause__ or exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("handler_failed", queue=self.queue_name, messages=len(decoded))
                return False

    async def _handle_together(self, decoded) -> None:
        envelopes = [env for _, envs in decoded for env in envs]
        BATCH_SIZE.labels(self.queue_name).observe(len(envelopes))
        started = time.perf_counter()
        results = await self.handler(envelopes)
        HANDLER_SECONDS.labels(self.queue_name).observe(time.perf_counter() - started)
        faults.crash_point("crash_after_commit")
        offset = 0
        for message, envs in decoded:
            await self.broker.reply(message, results[offset:offset + len(envs)])
            offset += len(envs)
        for message, _ in decoded:
            await _settle(message.ack())
        BROKER_CONSUMED.labels(self.queue_name, "ok").inc(len(decoded))

    async def _give_back(self, message: AbstractIncomingMessage) -> None:
        """Requeue for another try, or dead-letter a message that had all its tries (the
        quorum queue's delivery limit, or our own count)."""
        log.error("message_failed", queue=self.queue_name, message_id=message.message_id,
                  redelivered=message.redelivered)
        BROKER_CONSUMED.labels(self.queue_name, "failed").inc()
        if self.tries is not None and self.tries.failed(message):
            log.error("message_dead_lettered", queue=self.queue_name,
                      correlation_id=message.correlation_id)
            await _settle(message.reject(requeue=False))
            return
        await _settle(message.nack(requeue=True))


async def _settle(coro) -> None:
    """Ack/nack on a channel that died is harmless: the broker redelivers, handlers are
    idempotent."""
    try:
        await coro
    except Exception as exc:
        log.warning("settle_failed", error=repr(exc))
