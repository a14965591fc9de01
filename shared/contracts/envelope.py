"""The envelope every broker message carries, and how a batch of them travels.

Wire format of one AMQP message body (``content_type: application/json``)::

    [ {"message_id": uuid, "type": str, "version": int, "occurred_at": rfc3339,
       "correlation_id": str|null, "causation_id": str|null,
       "actor": {"user_id": str, "role": str}|null, "payload": {...},
       "recipients"?: [user_id, ...]}, ... ]

A body is always a JSON array: batching several envelopes into one AMQP message is how every
hop keeps its broker message count low. Each envelope keeps its own id, actor and correlation id,
so batching never merges two requests. A reply to a request batch is an array of the same length
and order: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message", ...}}``.
A result the service completed with an event says so (``"announced": true``); in the reply to a
batch marked ``x-answered-by-events`` such a result is ``null`` (the caller answers it from the
event), and a batch with only such results gets no reply (see ``shared.requests``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .errors import ErrorCode, ServiceError
from .fields import Role, UserId


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: UserId
    role: Role


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: Actor | None = None
    payload: dict[str, Any]
    # Routing metadata of some events: users to reach beyond the session's joined sockets
    # (a new message's other participants, for notifications; an added or removed user).
    recipients: list[UserId] | None = None


def new_envelope(type_: str, version: int, payload: dict[str, Any], *,
                 actor: Actor | None = None, correlation_id: str | None = None,
                 causation_id: str | None = None, message_id: uuid.UUID | None = None,
                 occurred_at: datetime | None = None) -> Envelope:
    """An outgoing envelope. Built from already validated parts, so it is constructed without
    validating again; the receiver validates it (``decode_batch``)."""
    return Envelope.model_construct(
        message_id=message_id or uuid.uuid4(), type=type_, version=version,
        occurred_at=occurred_at or datetime.now(UTC), correlation_id=correlation_id,
        causation_id=causation_id, actor=actor, payload=payload,
    )


_BATCH = TypeAdapter(list[Envelope])


def encode_batch(envelopes: list[Envelope]) -> bytes:
    return _BATCH.dump_json(envelopes, exclude_none=False)


def decode_batch(body: bytes) -> list[Envelope]:
    """Parse and validate an AMQP body in one pass; a malformed body is a ServiceError,
    never a guess."""
    try:
        return _BATCH.validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] in ("json_invalid", "list_type"):
            raise ServiceError(ErrorCode.BAD_REQUEST,
                               f"message body must be a JSON array of envelopes: {error['msg']}"
                               ) from None
        raise ServiceError(ErrorCode.INVALID, f"bad envelope: {error['msg']}") from None


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def failed(error: ServiceError) -> dict[str, Any]:
    return {"ok": False, "error": error.to_dict()}
