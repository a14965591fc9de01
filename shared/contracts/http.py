"""HTTP request bodies and query strings of the gateway API (SPEC "HTTP API")."""

from __future__ import annotations

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


class CreateSessionBody(Contract):
    TYPE = "http.create_session"
    participant_ids: list[UserId] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    title: Title | None = None


class SendMessageBody(Contract):
    TYPE = "http.send_message"
    client_msg_id: ClientMsgId
    body: MessageBody


class ListSessionsQuery(Contract):
    TYPE = "http.list_sessions_query"
    limit: Count = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)
    all: bool = False


class AddParticipantBody(Contract):
    TYPE = "http.add_participant"
    user_id: UserId


class MessagesQuery(Contract):
    TYPE = "http.messages_query"
    before_seq: Seq | None = None
    after_seq: Seq | None = None
    limit: Count = Field(default=50, ge=1, le=100)

    @model_validator(mode="after")
    def _one_direction(self):
        one_direction(self.before_seq, self.after_seq)
        return self


class EventsQuery(Contract):
    TYPE = "http.events_query"
    after_seq: Seq = 0
    limit: Count = Field(default=100, ge=1, le=1000)


class ErrorBody(Contract):
    TYPE = "http.error"
    error: dict


HTTP_BODIES: tuple[type[Contract], ...] = (
    CreateSessionBody, SendMessageBody, ListSessionsQuery, AddParticipantBody, MessagesQuery,
    EventsQuery, ErrorBody,
)
