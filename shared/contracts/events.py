"""Events published on ``chat.events``. Routing key: ``session.<session_id>.<TYPE>``.

Stream events (those with ``seq``) are the session's totally ordered history. ``session_created``
is version 0 of the stream, so the first message of a session has seq 1.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from .base import Contract
from .fields import ParticipantRole, Seq, Title, UserId
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


class MessageDeleted(Contract):
    """A tombstone: the message keeps its seq; its text and attachment are erased everywhere."""
    TYPE = "message_deleted"
    session_id: UUID
    seq: Seq
    message_id: UUID
    message_seq: Seq
    by: UserId


class ParticipantAdded(Contract):
    TYPE = "participant_added"
    session_id: UUID
    seq: Seq
    user_id: UserId
    by: UserId
    role: ParticipantRole


class ParticipantRemoved(Contract):
    """``new_owner`` is set when the owner left and the longest-standing member took over."""
    TYPE = "participant_removed"
    session_id: UUID
    seq: Seq
    user_id: UserId
    by: UserId
    new_owner: UserId | None = None


class MessagesDelivered(Contract):
    """Not a stream event (no seq): markers move outside the session's total order."""
    TYPE = "messages_delivered"
    session_id: UUID
    user_id: UserId
    up_to_seq: Seq


class MessagesRead(Contract):
    TYPE = "messages_read"
    session_id: UUID
    user_id: UserId
    up_to_seq: Seq


class SessionAccessedByAdmin(Contract):
    """An admin who is not a participant read the session (what: session, messages, events,
    join). Audited; clients never see it."""
    TYPE = "session_accessed_by_admin"
    session_id: UUID
    user_id: UserId
    what: str


EVENTS: tuple[type[Contract], ...] = (
    SessionCreated, MessageSent, MessageDeleted, ParticipantAdded, ParticipantRemoved,
    MessagesDelivered, MessagesRead, SessionAccessedByAdmin,
)
