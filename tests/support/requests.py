"""A hand-written publish port for ``shared.requests.Requests`` in unit tests."""

from __future__ import annotations

import asyncio

import orjson


class Published:
    """The publish port: remembers each batch of requests."""

    def __init__(self):
        self.batches: list[tuple[str, list[dict]]] = []  # (correlation id, envelopes)

    async def __call__(self, routing_key, body, correlation_id, headers):
        self.batches.append((correlation_id, orjson.loads(body)))


async def published(port: Published, count: int) -> None:
    """Let the loop run until ``count`` batches were published (bounded)."""
    for _ in range(100):
        if len(port.batches) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(port.batches)} batches published, not {count}")
