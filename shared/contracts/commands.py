"""Commands and queries for the messaging service. ``TYPE`` is also the AMQP routing key on the
``chat.commands`` exchange (``<service>.<command>``). Ids are generated at the edge."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from .base import Contract
from .fields import (
    MAX_PARTICIPANTS,
    ClientMsgId,
    Count,
    MessageBody,
    Seq,
    Title,
    UserId,
    one_direction,
)
from .wire import Attachment


class CreateSession(Contract):
    TYPE = "messaging.create_session"
    session_id: UUID
    participant_ids: list[UserId] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    title: Title | None = None


class GetSession(Contract):
    TYPE = "messaging.get_session"
    session_id: UUID


class ListSessions(Contract):
    """The caller's sessions; ``all`` (admins only) lists every session."""
    TYPE = "messaging.list_sessions"
    limit: Count = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)
    all: bool = False


class SendMessage(Contract):
    TYPE = "messaging.send_message"
    session_id: UUID
    message_id: UUID
    client_msg_id: ClientMsgId
    body: MessageBody


class GetMessages(Contract):
    TYPE = "messaging.get_messages"
    session_id: UUID
    before_seq: Seq | None = None
    after_seq: Seq | None = None
    limit: Count = Field(default=50, ge=1, le=100)

    @model_validator(mode="after")
    def _one_direction(self):
        one_direction(self.before_seq, self.after_seq)
        return self


class GetEvents(Contract):
    TYPE = "messaging.get_events"
    session_id: UUID
    after_seq: Seq = 0
    limit: Count = Field(default=100, ge=1, le=1000)


class JoinSession(Contract):
    """What a WebSocket join needs: membership check, participants, markers, and the backlog."""
    TYPE = "messaging.join_session"
    session_id: UUID
    after_seq: Seq | None = None
    backlog_limit: Count = Field(default=1000, ge=1, le=1000)


class MarkReceipt(Contract):
    """Move the caller's delivered or read marker forward (a read marker also covers
    delivered). ``up_to_seq`` or ``message_id`` names the point."""
    TYPE = "messaging.mark_receipt"
    session_id: UUID | None = None
    message_id: UUID | None = None
    marker: Literal["delivered", "read"]
    up_to_seq: Seq | None = None

    @model_validator(mode="after")
    def _one_point(self):
        if (self.message_id is None) == (self.session_id is None or self.up_to_seq is None):
            raise ValueError("give session_id and up_to_seq, or message_id")
        return self


class DeleteMessage(Contract):
    TYPE = "messaging.delete_message"
    message_id: UUID


class AddParticipant(Contract):
    TYPE = "messaging.add_participant"
    session_id: UUID
    user_id: UserId


class RemoveParticipant(Contract):
    TYPE = "messaging.remove_participant"
    session_id: UUID
    user_id: UserId


class SendAttachmentMessage(Contract):
    """Sent by the media service once an upload's objects and metadata are stored: messaging
    appends the ``message_sent`` (kind voice, image or file). Idempotent by (session, sender,
    client_msg_id): a retry with the same attachment id returns the stored message."""
    TYPE = "messaging.send_attachment_message"
    session_id: UUID
    message_id: UUID
    client_msg_id: ClientMsgId
    kind: Literal["voice", "image", "file"]
    attachment: Attachment


class ListMemberships(Contract):
    """Service callers only (an admin actor whose user id starts with ``service:``): every
    session any of the users is in, with all its participants and its ``last_seq`` (presence
    rebuilds its membership projection from it after Redis lost its data).
    Answer: ``{"sessions": {session_id: [user_id, ...]}, "seqs": {session_id: last_seq}}``."""
    TYPE = "messaging.memberships"
    user_ids: list[UserId] = Field(min_length=1, max_length=1000)


MESSAGING_COMMANDS: tuple[type[Contract], ...] = (
    CreateSession, GetSession, ListSessions, SendMessage, GetMessages, GetEvents, JoinSession,
    MarkReceipt, DeleteMessage, AddParticipant, RemoveParticipant, SendAttachmentMessage,
    ListMemberships,
)
