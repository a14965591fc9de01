"""The broker topology, declared in one place.

Exchanges (all durable topics):

- ``chat.commands``: routing key ``<service>.<command>``; each service consumes its commands from
  the durable queue ``<service>.commands`` (bound to ``<service>.*``), a quorum queue, so a
  command survives the loss of a broker node in a cluster. A queue that only ever holds
  requests (a caller waits for each answer, and retries idempotently when none comes in time)
  may be a classic queue instead (``CHAT_REQUEST_QUEUE_TYPE=classic``): on a single broker
  node replication buys nothing, and a classic queue costs the broker about a third less CPU
  per message.
- ``chat.events``: routing key ``<aggregate>.<shard>.<event>`` (``session.17.message_sent``,
  ``user.5.presence_changed``), where the shard is one of ``ROUTING_SHARDS`` that session and
  user ids are hashed into. Each subscribing service has its own durable quorum queue
  ``<service>.events``; each gateway instance has an exclusive queue ``gateway.<instance>``
  bound to ``session.<shard>.#`` while it holds a connected participant of a session of that
  shard, and to ``user.<shard>.#`` while it holds a connection of a user of that shard. A
  consumer of a shard's events takes the ones it needs by the ids in their payloads.

  Why shards and not one key per session and user: a batch of events is one AMQP message
  whose routing keys (one per session and one per user told, in ``BCC``) the broker routes
  one by one, at about 35 us of broker CPU each (measured on RabbitMQ 3.10, topic and direct
  exchanges alike): a batch of 100 messages named 250 keys, 9 ms of broker CPU. With shards a
  batch names at most ``2 * ROUTING_SHARDS`` keys, and a gateway's bindings are bounded too
  (most joins need no new binding). The price is that a gateway may receive events of
  sessions it does not serve, which it drops; under load a batch spans most shards anyway.
  Every service must use the same ``ROUTING_SHARDS``: changing it is a coordinated upgrade.
- ``chat.dlx``: dead letters. A message tried ``delivery_limit`` times is dead-lettered here with
  routing key ``<queue>`` and lands in ``<queue>.dlq``: a quorum queue counts the tries itself;
  for a classic queue the consumer counts them (``shared.broker``).

One AMQP message may carry events of several sessions (see ``envelope``); it is published with
its first routing key and the others in the ``BCC`` header (RabbitMQ sender-selected
distribution), so each bound queue gets it exactly once and the header never reaches consumers.
"""

from __future__ import annotations

import zlib
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


ROUTING_SHARDS = 32


def routing_shard(identifier: object) -> int:
    """The shard of a session id (any form that prints as its canonical text) or user id."""
    return zlib.crc32(str(identifier).encode()) % ROUTING_SHARDS


def session_key(session_id: object, event: str) -> str:
    return f"session.{routing_shard(session_id)}.{event}"


def session_binding(session_id: object) -> str:
    """The binding that receives the session's events (and those of its shard)."""
    return f"session.{routing_shard(session_id)}.#"


def user_key(user_id: str, event: str) -> str:
    return f"user.{routing_shard(user_id)}.{event}"


def user_binding(user_id: str) -> str:
    """The binding that receives events addressed to the user (and to its shard)."""
    return f"user.{routing_shard(user_id)}.#"
