"""Contracts of the audit log (SPEC capability 10, ``GET /api/admin/audit``).

- ``AuditFact`` (event, ``chat.events``, routing key ``audit.<source>.<action>``): a fact only its
  publisher knows and that is not a domain event of its own: a refused token (``auth.failed``),
  an access refused to a non-participant (``access.denied``), a rejected upload
  (``attachment.rejected``), a download URL handed out (``attachment.url_issued``). It carries
  ids and a short reason, never message text, file contents or tokens. Domain events
  (``session_created``, ``message_sent``, ...) are audited as they are; see
  ``services/audit/domain.py`` for the mapping.
- ``QueryEntries`` (command ``audit.query_entries``): an admin's query of the log.
- ``AuditEntry``: one entry as admins see it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints

from .base import Contract
from .fields import Count, UserId

AuditAction = Literal[
    "session.created", "participant.added", "participant.removed", "message.sent",
    "message.deleted", "receipt.read", "attachment.stored", "attachment.rejected",
    "attachment.url_issued", "session.admin_access", "access.denied", "auth.failed",
    "audit.queried",
]
ACTIONS: tuple[str, ...] = AuditAction.__args__  # type: ignore[attr-defined]
# ``ok``: the change happened; ``denied``: refused for lack of rights; ``failed``: credentials
# refused; ``rejected``: refused for its content (an upload of a type not allowed).
Outcome = Literal["ok", "denied", "failed", "rejected"]
ShortText = Annotated[str, StringConstraints(max_length=200)]


class AuditFact(Contract):
    TYPE = "audit_fact"
    action: AuditAction
    outcome: Outcome
    session_id: UUID | None = None
    target_id: ShortText | None = None
    # Why, in a few words (an error code, "bad signature", "expired"), never user content.
    reason: ShortText | None = None


class QueryEntries(Contract):
    TYPE = "audit.query_entries"
    session_id: UUID | None = None
    actor_id: UserId | None = None
    action: AuditAction | None = None
    since: AwareDatetime | None = None
    limit: Count = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)


class AuditQuery(Contract):
    """``GET /api/admin/audit`` query string: the same filters, validated at the edge."""
    TYPE = "http.audit_query"
    session_id: UUID | None = None
    actor_id: UserId | None = None
    action: AuditAction | None = None
    since: AwareDatetime | None = None
    limit: Count = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)


class AuditEntry(Contract):
    TYPE = "audit_entry"
    id: UUID
    seq: int = Field(ge=1)
    occurred_at: datetime
    actor_id: str | None
    actor_role: str | None
    action: AuditAction
    session_id: UUID | None
    target_id: str | None
    request_id: str | None
    outcome: Outcome
    prev_hash: str
    hash: str


AUDIT_CONTRACTS: tuple[type[Contract], ...] = (AuditFact, QueryEntries, AuditQuery, AuditEntry)
