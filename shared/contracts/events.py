"""Events published on ``chat.events``. Routing key: ``session.<session_id>.<TYPE>``.

Stream events (those with ``seq``) are the session's totally ordered history. ``session_created``
is version 0 of the stream, so the first message of a session has seq 1.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from .base import Contract
from .fields import Seq, Title, UserId
from .wire import Message, Participant


class SessionCreated(Contract):
    TYPE = "session_created"
    session_id: UUID
    title: Title | None
    created_by: UserId
    created_at: datetime
    participants: list[Participant]


class MessageSent(Contract):
    TYPE = "message_sent"
    session_id: UUID
    seq: Seq
    message: Message


EVENTS: tuple[type[Contract], ...] = (SessionCreated, MessageSent)
