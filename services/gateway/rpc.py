"""Calls from the gateway to the services: a contract in, its result (or ServiceError) out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.broker import Broker
from shared.contracts.base import Contract
from shared.ids import new_uuid_str

from .auth import Principal

# Correlation ids only need to be unique: a per-process prefix and a counter are much cheaper
# than a UUID per request.
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count()


def correlation_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):x}"


async def call(broker: Broker, command: Contract, principal: Principal,
               correlation: str | None, *, timeout: float | None = None) -> Any:
    return await call_raw(broker, command.TYPE, command.VERSION,
                          command.model_dump(mode="json"), principal, correlation,
                          timeout=timeout)


async def call_raw(broker: Broker, type_: str, version: int, payload: dict[str, Any],
                   principal: Principal, correlation: str | None, *,
                   timeout: float | None = None) -> Any:
    """The hot path: ``payload`` is already in its JSON form (validated at the edge, and
    validated again by the owning service), so no model is built for it here."""
    return await broker.request(_envelope(type_, version, payload, principal, correlation),
                                routing_key=type_, timeout=timeout)


def submit_raw(broker: Broker, type_: str, version: int, payload: dict[str, Any],
               principal: Principal, correlation: str | None,
               answer: Callable[[dict[str, Any]], None], *,
               timeout: float | None = None, event_key: str | None = None) -> Any:
    """``call_raw`` without a coroutine: ``answer(reply)`` is called (see ``Broker.submit``;
    ``event_key``: answered from the event that completes it). Returns the request."""
    return broker.submit(_envelope(type_, version, payload, principal, correlation), answer,
                  routing_key=type_, timeout=timeout, event_key=event_key)


def _envelope(type_: str, version: int, payload: dict[str, Any], principal: Principal,
              correlation: str | None) -> dict[str, Any]:
    return {
        "message_id": new_uuid_str(), "type": type_, "version": version,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": correlation or correlation_id(), "causation_id": None,
        "actor": principal.actor_json, "payload": payload,
    }
