"""The broker topology, declared in one place.

Exchanges (all durable topics):

- ``chat.commands``: routing key ``<service>.<command>``; each service consumes its commands from
  the durable queue ``<service>.commands`` (bound to ``<service>.*``). A queue of commands that
  may come without anybody waiting for them (presence's updates) is a quorum queue. A queue that
  only ever holds requests (a caller waits for each answer, and retries idempotently when none
  comes in time) is a classic queue by default (``CHAT_REQUEST_QUEUE_TYPE``): replicating a
  request that lives for a few milliseconds buys nothing on one node and costs the broker
  about twice the CPU per message; in a cluster, ``quorum`` keeps the queue through the loss
  of a node.
- ``chat.events``: routing key ``<aggregate>.<id>.<event>`` (``session.<uuid>.message_sent``,
  ``user.<id>.presence_changed``). Each subscribing service has its own durable quorum queue
  ``<service>.events``; each gateway instance has an exclusive queue ``gateway.<instance>`` bound
  to ``session.<id>.#`` while it holds a connected participant of that session.
- ``chat.dlx``: dead letters. A message tried ``delivery_limit`` times is dead-lettered here with
  routing key ``<queue>`` and lands in ``<queue>.dlq``: a quorum queue counts the tries itself;
  for a classic queue the consumer counts them (``shared.broker``).

One AMQP message may carry events of several sessions (see ``envelope``); it is published with
its first routing key and the others in the ``BCC`` header (RabbitMQ sender-selected
distribution), so each bound queue gets it exactly once and the header never reaches consumers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMANDS = "chat.commands"
EVENTS = "chat.events"
DEAD_LETTERS = "chat.dlx"
EXCHANGES = (COMMANDS, EVENTS, DEAD_LETTERS)


QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True)
class DurableQueue:
    """A durable queue (quorum unless said otherwise) with a dead-letter queue behind it."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    # Quorum queues let a single consumer be active (others stand by): used where a stream must
    # be processed in order by one replica at a time.
    single_active_consumer: bool = False
    extra_arguments: dict = field(default_factory=dict)
    queue_type: str = "quorum"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    @property
    def counts_deliveries(self) -> bool:
        """Whether the queue itself dead-letters a message after ``delivery_limit`` tries."""
        return self.queue_type == "quorum"

    def arguments(self, delivery_limit: int) -> dict:
        args = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": DEAD_LETTERS,
            "x-dead-letter-routing-key": self.name,
        }
        if self.counts_deliveries:
            args["x-delivery-limit"] = delivery_limit
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        args.update(self.extra_arguments)
        return args


def command_queue(service: str) -> DurableQueue:
    return DurableQueue(f"{service}.commands", COMMANDS, (f"{service}.*",))


def request_queue(service: str, queue_type: str, name: str = "commands",
                  bindings: tuple[str, ...] | None = None) -> DurableQueue:
    """A queue of requests only (each has a caller waiting for its answer)."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type must be one of {QUEUE_TYPES}, not {queue_type!r}")
    return DurableQueue(f"{service}.{name}", COMMANDS, bindings or (f"{service}.*",),
                        queue_type=queue_type)


def event_queue(service: str, bindings: tuple[str, ...], *,
                single_active_consumer: bool = False) -> DurableQueue:
    return DurableQueue(f"{service}.events", EVENTS, bindings,
                        single_active_consumer=single_active_consumer)


def session_key(session_id: object, event: str) -> str:
    return f"session.{session_id}.{event}"


def session_binding(session_id: object) -> str:
    return f"session.{session_id}.#"


def routing_word(user_id: str) -> str:
    """User ids may hold dots, which split topic words; ``~`` is not allowed in a user id, so
    this mapping is one-to-one and ``user.a.b.#`` can never match user ``a.b.c``."""
    return user_id.replace(".", "~")


def user_key(user_id: str, event: str) -> str:
    return f"user.{routing_word(user_id)}.{event}"


def user_binding(user_id: str) -> str:
    return f"user.{routing_word(user_id)}.#"
