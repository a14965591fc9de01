"""Resources as clients see them (SPEC: Session, Message, attachment). Times are RFC 3339 UTC."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from .base import Contract
from .fields import MessageKind, ParticipantRole, Seq, UserId


class Attachment(Contract):
    TYPE = "attachment"
    id: UUID
    kind: str
    filename: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    waveform: list[float] | None = Field(default=None, min_length=64, max_length=64)
    has_thumbnail: bool = False


class Message(Contract):
    TYPE = "message"
    id: UUID
    session_id: UUID
    seq: Seq
    sender_id: UserId
    kind: MessageKind
    body: str | None
    client_msg_id: str | None
    created_at: datetime
    deleted: bool = False
    attachment: Attachment | None = None


class Participant(Contract):
    TYPE = "participant"
    user_id: UserId
    role: ParticipantRole


class Session(Contract):
    TYPE = "session"
    id: UUID
    title: str | None
    created_by: UserId
    created_at: datetime
    participants: list[Participant]
    last_seq: Seq
    last_message: Message | None
    unread_count: int = Field(ge=0)


class Receipt(Contract):
    TYPE = "receipt"
    delivered_seq: Seq
    read_seq: Seq
