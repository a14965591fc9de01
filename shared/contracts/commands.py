"""Commands and queries for the messaging service. ``TYPE`` is also the AMQP routing key on the
``chat.commands`` exchange (``<service>.<command>``). Ids are generated at the edge."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field, model_validator

from .base import Contract
from .fields import MAX_PARTICIPANTS, ClientMsgId, MessageBody, Seq, Title, UserId


class CreateSession(Contract):
    TYPE = "messaging.create_session"
    session_id: UUID
    participant_ids: list[UserId] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    title: Title | None = None


class GetSession(Contract):
    TYPE = "messaging.get_session"
    session_id: UUID


class ListSessions(Contract):
    TYPE = "messaging.list_sessions"
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)


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
    limit: int = Field(default=50, ge=1, le=100)

    @model_validator(mode="after")
    def _one_direction(self):
        if self.before_seq is not None and self.after_seq is not None:
            raise ValueError("give before_seq or after_seq, not both")
        return self


class GetEvents(Contract):
    TYPE = "messaging.get_events"
    session_id: UUID
    after_seq: Seq = 0
    limit: int = Field(default=100, ge=1, le=1000)


class JoinSession(Contract):
    """What a WebSocket join needs: membership check, participants, markers, and the backlog."""
    TYPE = "messaging.join_session"
    session_id: UUID
    after_seq: Seq | None = None
    backlog_limit: int = Field(default=1000, ge=1, le=1000)


MESSAGING_COMMANDS: tuple[type[Contract], ...] = (
    CreateSession, GetSession, ListSessions, SendMessage, GetMessages, GetEvents, JoinSession,
)
