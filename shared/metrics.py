"""Prometheus metrics shared by every service (each process has its own registry)."""

from prometheus_client import Counter, Gauge, Histogram

BROKER_PUBLISHED = Counter(
    "chat_broker_published_messages_total", "AMQP messages published", ["exchange", "kind"])
BROKER_PUBLISH_FAILURES = Counter(
    "chat_broker_publish_failures_total", "Publishes that were not confirmed", ["exchange"])
BROKER_CONSUMED = Counter(
    "chat_broker_consumed_messages_total", "AMQP messages consumed", ["queue", "outcome"])
ENVELOPES_HANDLED = Counter(
    "chat_envelopes_handled_total", "Commands and events handled", ["type", "outcome"])
BATCH_SIZE = Histogram(
    "chat_batch_envelopes", "Envelopes per handled batch", ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
HANDLER_SECONDS = Histogram(
    "chat_batch_handler_seconds", "Time to handle one batch (commit included)", ["queue"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
RPC_SECONDS = Histogram(
    "chat_rpc_seconds", "Request/reply round trip seen by the caller", ["routing_key"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RPC_FAILURES = Counter(
    "chat_rpc_failures_total", "Requests answered with 503 by the caller", ["routing_key", "why"])
OPTIMISTIC_WRITES = Counter(
    "chat_optimistic_writes_total",
    "Batches written optimistically: committed, or refused because another writer came first",
    ["outcome"])
BROKER_CONNECTED = Gauge("chat_broker_connected", "1 while the AMQP connection is open")
