"""Messages that carry an attachment (voice, image, file), created at the media service's
request once the attachment's objects and metadata are stored.

Same rules as text messages: only participants post, each message gets the session's next seq,
and the command is idempotent by (session, sender, client_msg_id). A retry with the same
attachment id returns the stored message; a message already stored under that client_msg_id
that was deleted since is returned as it is (a tombstone; media then drops the new objects);
anything else under that id is a 409 conflict.
"""

from __future__ import annotations

from datetime import datetime

from shared.contracts.commands import SendAttachmentMessage
from shared.contracts.envelope import Actor
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.fields import rfc3339

from . import domain
from .writes import Write, append_messages


def decide(state: domain.SessionState | None, existing: domain.StoredMessage | None,
           command: SendAttachmentMessage, actor: Actor, now: datetime
           ) -> domain.StoredMessage | dict:
    """The stored message (a retry) or the payload of a new ``message_sent``."""
    session = domain.check_writable(state, actor)
    if existing is not None:
        view = existing.view
        attachment = view.get("attachment") or {}
        if view.get("deleted") or attachment.get("id") == str(command.attachment.id):
            return existing
        raise ServiceError(ErrorCode.CONFLICT,
                           "client_msg_id was already used for a different message")
    seq = session.last_seq + 1
    message = {
        "id": str(command.message_id), "session_id": str(session.id), "seq": seq,
        "sender_id": actor.user_id, "kind": command.kind, "body": None,
        "client_msg_id": command.client_msg_id, "created_at": rfc3339(now),
        "deleted": False,
        "attachment": command.attachment.model_dump(mode="json", exclude_none=True),
    }
    return {"session_id": str(session.id), "seq": seq, "message": message}


async def send_attachment_messages(conn, writes: list[Write], results: list, now: datetime
                                   ) -> list:
    return await append_messages(conn, writes, results, now, decide)
