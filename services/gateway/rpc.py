"""Calls from the gateway to the services: a contract in, its result (or ServiceError) out."""

from __future__ import annotations

import uuid
from typing import Any

from shared.broker import Broker
from shared.contracts.base import Contract
from shared.contracts.envelope import new_envelope

from .auth import Principal


async def call(broker: Broker, command: Contract, principal: Principal,
               correlation_id: str | None, *, timeout: float | None = None) -> Any:
    envelope = new_envelope(command.TYPE, command.VERSION, command.model_dump(mode="json"),
                            actor=principal.actor,
                            correlation_id=correlation_id or uuid.uuid4().hex)
    return await broker.request(envelope, routing_key=command.TYPE, timeout=timeout)
