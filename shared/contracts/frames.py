"""WebSocket frames (SPEC "WebSocket protocol"). Every frame is one JSON object with ``type``.

Client frames may carry ``ref``; the answer echoes it in an ``ack`` or ``error`` frame. Server
frames are built by the gateway from events; their models here document the wire format and
feed the OpenAPI/AsyncAPI description.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from .base import Contract
from .fields import ClientMsgId, MessageBody, ParticipantRole, Seq, UserId
from .wire import Message, Participant, Receipt

Ref = str | None


class ClientFrame(Contract):
    ref: Ref = Field(default=None, max_length=256)


class JoinSessionFrame(ClientFrame):
    TYPE = "join_session"
    type: Literal["join_session"]
    session_id: UUID
    after_seq: Seq | None = None


class LeaveSessionFrame(ClientFrame):
    TYPE = "leave_session"
    type: Literal["leave_session"]
    session_id: UUID


class SendMessageFrame(ClientFrame):
    TYPE = "send_message"
    type: Literal["send_message"]
    session_id: UUID
    client_msg_id: ClientMsgId
    body: MessageBody


class TypingStartFrame(ClientFrame):
    TYPE = "typing_start"
    type: Literal["typing_start"]
    session_id: UUID


class TypingStopFrame(ClientFrame):
    TYPE = "typing_stop"
    type: Literal["typing_stop"]
    session_id: UUID


class MarkDeliveredFrame(ClientFrame):
    TYPE = "mark_delivered"
    type: Literal["mark_delivered"]
    session_id: UUID
    up_to_seq: Seq


class MarkReadFrame(ClientFrame):
    TYPE = "mark_read"
    type: Literal["mark_read"]
    session_id: UUID
    up_to_seq: Seq


class SetPresenceFrame(ClientFrame):
    TYPE = "set_presence"
    type: Literal["set_presence"]
    status: Literal["online", "away"]


class PingFrame(ClientFrame):
    TYPE = "ping"
    type: Literal["ping"]


CLIENT_FRAMES: tuple[type[ClientFrame], ...] = (
    JoinSessionFrame, LeaveSessionFrame, SendMessageFrame, TypingStartFrame, TypingStopFrame,
    MarkDeliveredFrame, MarkReadFrame, SetPresenceFrame, PingFrame,
)


# ---- server to client -------------------------------------------------------------------

class HelloFrame(Contract):
    TYPE = "hello"
    type: Literal["hello"] = "hello"
    user_id: UserId
    connection_id: str


class AckFrame(Contract):
    model_config = {"extra": "allow", "frozen": True}
    TYPE = "ack"
    type: Literal["ack"] = "ack"
    ref: Ref = None


class ErrorFrame(Contract):
    TYPE = "error"
    type: Literal["error"] = "error"
    ref: Ref = None
    code: str
    message: str
    retry_after: float | None = None


class JoinedFrame(Contract):
    TYPE = "joined"
    type: Literal["joined"] = "joined"
    session_id: UUID
    last_seq: Seq
    participants: list[Participant]
    online_users: list[UserId]
    receipts: dict[str, Receipt]
    typing: list[UserId]
    backlog_truncated: bool


class NewMessageFrame(Contract):
    TYPE = "new_message"
    type: Literal["new_message"] = "new_message"
    session_id: UUID
    seq: Seq
    message: Message


class MessageDeletedFrame(Contract):
    TYPE = "message_deleted"
    type: Literal["message_deleted"] = "message_deleted"
    session_id: UUID
    seq: Seq
    message_id: UUID
    message_seq: Seq


class ParticipantChangedFrame(Contract):
    TYPE = "participant_added"
    type: Literal["participant_added", "participant_removed"]
    session_id: UUID
    seq: Seq
    user_id: UserId
    by: UserId
    role: ParticipantRole | None = None


class PongFrame(Contract):
    TYPE = "pong"
    type: Literal["pong"] = "pong"
    ref: Ref = None


SERVER_FRAMES: tuple[type[Contract], ...] = (
    HelloFrame, AckFrame, ErrorFrame, JoinedFrame, NewMessageFrame, MessageDeletedFrame,
    ParticipantChangedFrame, PongFrame,
)


def error_frame(ref: Ref, code: str, message: str, retry_after: float | None = None
                ) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "ref": ref, "code": code, "message": message}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def frame_from_event(event_type: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The WebSocket frame a stream event becomes (the same for live events, join backlogs and
    ``GET /events``); None for events clients do not see."""
    if event_type == "message_sent":
        return {"type": "new_message", "session_id": payload["session_id"],
                "seq": payload["seq"], "message": payload["message"]}
    if event_type == "message_deleted":
        return {"type": "message_deleted", "session_id": payload["session_id"],
                "seq": payload["seq"], "message_id": payload["message_id"],
                "message_seq": payload["message_seq"]}
    if event_type in ("participant_added", "participant_removed"):
        return {"type": event_type, "session_id": payload["session_id"], "seq": payload["seq"],
                "user_id": payload["user_id"], "by": payload["by"]}
    if event_type in ("messages_delivered", "messages_read"):
        return {"type": event_type, "session_id": payload["session_id"],
                "user_id": payload["user_id"], "up_to_seq": payload["up_to_seq"]}
    # Presence (not stream events: no seq; see ``shared.contracts.presence``).
    if event_type in ("typing_start", "typing_stop", "user_joined", "user_left"):
        return {"type": event_type, "session_id": payload["session_id"],
                "user_id": payload["user_id"]}
    if event_type == "online_users":
        return {"type": "online_users", "session_id": payload["session_id"],
                "user_ids": payload["online"]}
    if event_type == "presence_changed":
        return {"type": "presence_changed", "user_id": payload["user_id"],
                "status": payload["status"], "last_seen": payload["last_seen"]}
    return None


NOTIFICATION_PREVIEW = 100


def user_frame(event_type: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The frame a user gets about a session their socket has not joined: a ``notification``
    for a new message (SPEC capability 9), the membership frame when they were added or
    removed; None for everything else."""
    if event_type == "message_sent":
        message = payload["message"]
        return {"type": "notification", "session_id": payload["session_id"],
                "message": {"id": message["id"], "seq": message["seq"],
                            "sender_id": message["sender_id"], "kind": message["kind"],
                            "preview": preview(message)}}
    if event_type in ("participant_added", "participant_removed"):
        return frame_from_event(event_type, payload)
    if event_type == "presence_changed":  # about a user, not a session: every connection
        return frame_from_event(event_type, payload)
    return None


def preview(message: dict[str, Any]) -> str:
    """At most 100 characters: the text, else what the attachment is."""
    if message.get("body"):
        return message["body"][:NOTIFICATION_PREVIEW]
    attachment = message.get("attachment") or {}
    label = {"voice": "Voice message", "image": "Photo"}.get(message.get("kind", ""))
    return (label or attachment.get("filename") or "Attachment")[:NOTIFICATION_PREVIEW]
