"""Contracts of the media service (SPEC capabilities 7 and 8).

Commands (``chat.commands``, routing key = ``TYPE``):

- ``media.ingest``: the claim check. The gateway has streamed the upload into
  ``quarantine/<attachment_id>`` of the bucket (counting bytes and hashing them); media decides
  the type from the bytes, validates, promotes the object, records its metadata and has
  messaging create the message. Result: ``{"message": Message, "created": bool}``.
- ``media.get_attachment_url``: a participant (or an admin) asks for a signed URL. Result:
  ``{"url", "expires_at", "inline": bool}``.
- ``media.erase_message_attachments``: the message was deleted; erase its attachment now.
  Result: ``{"erased": <attachments erased>}``.
- ``media.forget_participant``: the participant was removed; no more URLs for them. Result:
  ``{}``.

Events (``chat.events``, routing key ``attachment.<attachment_id>.<stored|rejected|url_issued>``),
for the audit log. They carry ids and a short reason, never file contents:
``{"session_id", "attachment_id", "user_id", "reason"}``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from .base import Contract
from .fields import ClientMsgId, Seq, UserId

UploadPurpose = Literal["upload", "voice"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class IngestUpload(Contract):
    TYPE = "media.ingest"
    session_id: UUID
    attachment_id: UUID  # also names the quarantine object
    message_id: UUID
    client_msg_id: ClientMsgId
    purpose: UploadPurpose
    # The name as the client sent it; media keeps only a sanitised base name.
    filename: Annotated[str, StringConstraints(max_length=1024)] = ""
    size: int = Field(ge=0)
    sha256: Sha256


class GetAttachmentUrl(Contract):
    TYPE = "media.get_attachment_url"
    attachment_id: UUID
    thumbnail: bool = False


class EraseMessageAttachments(Contract):
    """Sent by the gateway once messaging has deleted a message that had an attachment: the
    objects and metadata are erased before the client's DELETE is answered, so its old URLs
    stop working at once. Media also erases them when ``message_deleted`` comes; whichever
    comes first does it, the other finds nothing left."""
    TYPE = "media.erase_message_attachments"
    message_id: UUID


class ForgetParticipant(Contract):
    """Sent by the gateway once messaging has removed a participant (at ``seq``): they lose
    access to the session's attachments before the removal is answered. The same change comes
    with ``participant_removed``; the projection keeps the newest by seq either way."""
    TYPE = "media.forget_participant"
    session_id: UUID
    user_id: UserId
    seq: Seq


class _AttachmentFact(Contract):
    session_id: UUID
    attachment_id: UUID
    user_id: UserId
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class AttachmentStored(_AttachmentFact):
    TYPE = "attachment_stored"


class AttachmentRejected(_AttachmentFact):
    TYPE = "attachment_rejected"


class AttachmentUrlIssued(_AttachmentFact):
    TYPE = "attachment_url_issued"


class AttachmentQuery(Contract):
    """``GET /api/chat/attachments/{id}`` query string."""
    TYPE = "http.attachment_query"
    thumbnail: bool = False
    redirect: bool = True


MEDIA_COMMANDS: tuple[type[Contract], ...] = (IngestUpload, GetAttachmentUrl,
                                              EraseMessageAttachments, ForgetParticipant)
MEDIA_EVENTS: tuple[type[Contract], ...] = (AttachmentStored, AttachmentRejected,
                                            AttachmentUrlIssued)
MEDIA_CONTRACTS = (*MEDIA_COMMANDS, *MEDIA_EVENTS, AttachmentQuery)
QUARANTINE_PREFIX = "quarantine/"


def quarantine_key(attachment_id: UUID) -> str:
    return f"{QUARANTINE_PREFIX}{attachment_id}"


def attachment_key(attachment_id: UUID, event: str) -> str:
    """Routing key of media's events: ``attachment.<id>.<stored|rejected|url_issued>``."""
    return f"attachment.{attachment_id}.{event}"
