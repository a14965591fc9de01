"""One registry from ``type`` to contract class, for commands, events, frames and bodies.

Decoding refuses an unknown type or a version it does not know, with a clear error, instead of
guessing (ARCHITECTURE: "Unknown fields and versions are rejected").
"""

from __future__ import annotations

from pydantic import ValidationError

from .audit import AUDIT_CONTRACTS
from .base import Contract
from .commands import MESSAGING_COMMANDS
from .envelope import Envelope
from .errors import ErrorCode, ServiceError
from .events import EVENTS
from .frames import CLIENT_FRAMES, SERVER_FRAMES
from .http import HTTP_BODIES
from .media import MEDIA_CONTRACTS
from .presence import PRESENCE_COMMANDS, PRESENCE_EVENTS
from .wire import Attachment, Message, Participant, Receipt, Session

REGISTRY: dict[str, type[Contract]] = {}


def register(*classes: type[Contract]) -> None:
    for cls in classes:
        if not cls.TYPE:
            raise ValueError(f"{cls.__name__} has no TYPE")
        if REGISTRY.get(cls.TYPE, cls) is not cls:
            raise ValueError(f"two contracts claim type {cls.TYPE!r}")
        REGISTRY[cls.TYPE] = cls


register(*MESSAGING_COMMANDS, *EVENTS, *HTTP_BODIES,
         Attachment, Message, Participant, Receipt, Session)
register(*AUDIT_CONTRACTS)
register(*MEDIA_CONTRACTS)
register(*PRESENCE_COMMANDS, *PRESENCE_EVENTS)
# Frames are keyed by their wire ``type`` in two maps: typing_start exists in both directions.
CLIENT_FRAMES_BY_TYPE: dict[str, type[Contract]] = {cls.TYPE: cls for cls in CLIENT_FRAMES}
SERVER_FRAMES_BY_TYPE: dict[str, type[Contract]] = {cls.TYPE: cls for cls in SERVER_FRAMES}


def payload_of(envelope: Envelope) -> Contract:
    """Validate an envelope's payload against the contract its type and version name."""
    cls = REGISTRY.get(envelope.type)
    if cls is None:
        raise ServiceError(ErrorCode.INVALID, f"unknown message type {envelope.type!r}")
    if envelope.version != cls.VERSION:
        raise ServiceError(ErrorCode.INVALID,
                           f"{envelope.type} version {envelope.version} is not supported "
                           f"(this service speaks version {cls.VERSION})")
    try:
        return cls.model_validate(envelope.payload)
    except ValidationError as exc:
        raise ServiceError(ErrorCode.INVALID, first_error(exc), {"errors": error_list(exc)}) \
            from None


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def error_list(exc: ValidationError) -> list[dict]:
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
