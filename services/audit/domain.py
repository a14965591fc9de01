"""Pure decisions of the audit service: which fact an event is, how an entry is hashed, how the
chain is checked. No I/O; time and ids come in as arguments.

The hash chain: entry ``n`` stores ``prev_hash`` (the ``hash`` of entry ``n - 1``; 64 zeros for
the first) and ``hash = sha256(prev_hash + "\\n" + canonical)``, hex, where ``canonical`` is the
entry's content as JSON with sorted keys and no spaces::

    {"action", "actor_id", "actor_role", "id", "occurred_at" (RFC 3339 UTC, 6 fraction digits,
     "Z"), "outcome", "request_id", "seq", "session_id", "source_event_id", "target_id"}

Editing any field of a stored entry, deleting one or inserting one breaks the chain at that
entry, and ``verify`` names it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from shared.contracts.audit import AuditFact
from shared.contracts.envelope import Envelope
from shared.contracts.errors import ErrorCode, ServiceError

GENESIS = "0" * 64

# Domain event type -> (action, the payload field that names the target).
# ``messages_delivered`` is deliberately not audited: a delivery marker is a device's transport
# acknowledgement, sent for every batch a client receives; the SPEC's action list has no entry
# for it, and ``receipt.read`` records what a person did.
EVENT_ACTIONS: dict[str, tuple[str, str | None]] = {
    "session_created": ("session.created", "session_id"),
    "participant_added": ("participant.added", "user_id"),
    "participant_removed": ("participant.removed", "user_id"),
    "message_sent": ("message.sent", "message.id"),
    "message_deleted": ("message.deleted", "message_id"),
    "messages_read": ("receipt.read", "up_to_seq"),
    "session_accessed_by_admin": ("session.admin_access", "session_id"),
    # Media's events (routing key ``attachment.<id>.<event>``).
    "attachment_stored": ("attachment.stored", "attachment_id"),
    "attachment_rejected": ("attachment.rejected", "attachment_id"),
    "attachment_url_issued": ("attachment.url_issued", "attachment_id"),
}
# Events that record a refusal rather than a change.
EVENT_OUTCOMES: dict[str, str] = {"attachment_rejected": "rejected"}
# Where the actor is when an event has none in its envelope.
_FALLBACK_ACTOR = ("created_by", "by", "user_id")


@dataclass(frozen=True)
class Draft:
    """An entry before it has a place in the chain."""

    source_event_id: uuid.UUID
    occurred_at: datetime
    actor_id: str | None
    actor_role: str | None
    action: str
    session_id: uuid.UUID | None
    target_id: str | None
    request_id: str | None
    outcome: str


@dataclass(frozen=True)
class Entry:
    id: uuid.UUID
    seq: int
    draft: Draft
    prev_hash: str
    hash: str

    def view(self) -> dict[str, Any]:
        d = self.draft
        return {"id": str(self.id), "seq": self.seq, "occurred_at": timestamp(d.occurred_at),
                "actor_id": d.actor_id, "actor_role": d.actor_role, "action": d.action,
                "session_id": str(d.session_id) if d.session_id else None,
                "target_id": d.target_id, "request_id": d.request_id, "outcome": d.outcome,
                "prev_hash": self.prev_hash, "hash": self.hash}


# ---- events -> drafts ------------------------------------------------------------------------

def draft_of(envelope: Envelope) -> Draft | None:
    """The fact an event records, or None for events the audit does not keep. Only ids are
    read from the payload: message text and file contents never reach the log."""
    actor_id = envelope.actor.user_id if envelope.actor else None
    actor_role = envelope.actor.role if envelope.actor else None
    if envelope.type == AuditFact.TYPE:
        try:
            fact = AuditFact.model_validate(envelope.payload)
        except ValidationError as exc:
            raise ServiceError(ErrorCode.INVALID, f"bad audit fact: {exc.errors()[0]['msg']}") \
                from None
        return Draft(envelope.message_id, envelope.occurred_at, actor_id, actor_role,
                     fact.action, fact.session_id, fact.target_id, envelope.correlation_id,
                     fact.outcome)
    mapped = EVENT_ACTIONS.get(envelope.type)
    if mapped is None:
        return None
    action, target_field = mapped
    payload = envelope.payload
    if actor_id is None:
        actor_id = next((str(payload[k]) for k in _FALLBACK_ACTOR if payload.get(k)), None)
    return Draft(envelope.message_id, envelope.occurred_at, actor_id, actor_role, action,
                 _uuid_or_none(payload.get("session_id")), _field(payload, target_field),
                 envelope.correlation_id, EVENT_OUTCOMES.get(envelope.type, "ok"))


def _field(payload: dict, path: str | None) -> str | None:
    value: Any = payload
    for part in (path or "").split("."):
        if not isinstance(value, dict) or not part:
            return None
        value = value.get(part)
    return None if value is None else str(value)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def unique_drafts(drafts: Iterable[Draft], already: set[uuid.UUID]) -> list[Draft]:
    """Each source event once: drop those already in the log and repeats within the batch."""
    seen = set(already)
    kept = []
    for draft in drafts:
        if draft.source_event_id not in seen:
            seen.add(draft.source_event_id)
            kept.append(draft)
    return kept


# ---- the chain -------------------------------------------------------------------------------

def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry_id: uuid.UUID, seq: int, draft: Draft) -> bytes:
    return orjson.dumps({
        "action": draft.action, "actor_id": draft.actor_id, "actor_role": draft.actor_role,
        "id": str(entry_id), "occurred_at": timestamp(draft.occurred_at),
        "outcome": draft.outcome, "request_id": draft.request_id, "seq": seq,
        "session_id": str(draft.session_id) if draft.session_id else None,
        "source_event_id": str(draft.source_event_id), "target_id": draft.target_id,
    }, option=orjson.OPT_SORT_KEYS)


def entry_hash(prev_hash: str, entry_id: uuid.UUID, seq: int, draft: Draft) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(entry_id, seq, draft)).hexdigest()


def chain(drafts: list[Draft], last_seq: int, last_hash: str,
          new_id=uuid.uuid4) -> list[Entry]:
    """Give each draft the next seq and link it to the one before."""
    entries = []
    for offset, draft in enumerate(drafts, start=1):
        entry_id, seq = new_id(), last_seq + offset
        digest = entry_hash(last_hash, entry_id, seq, draft)
        entries.append(Entry(entry_id, seq, draft, last_hash, digest))
        last_hash = digest
    return entries


class ChainVerifier:
    """Feed entries in seq order; ``problem`` is set at the first one that does not match."""

    def __init__(self) -> None:
        self.count = 0
        self.expected_seq = 1
        self.prev_hash = GENESIS
        self.problem: str | None = None

    def feed(self, entry: Entry) -> bool:
        if self.problem is not None:
            return False
        where = f"entry seq={entry.seq} id={entry.id}"
        if entry.seq != self.expected_seq:
            self.problem = f"{where}: expected seq {self.expected_seq} (an entry is missing)"
        elif entry.prev_hash != self.prev_hash:
            self.problem = f"{where}: prev_hash does not match the entry before it"
        elif entry.hash != entry_hash(entry.prev_hash, entry.id, entry.seq, entry.draft):
            self.problem = f"{where}: content does not match its hash (edited)"
        if self.problem is not None:
            return False
        self.count += 1
        self.expected_seq += 1
        self.prev_hash = entry.hash
        return True


def queried_draft(envelope: Envelope, outcome: str, now: datetime) -> Draft:
    """``audit.queried``: an admin (or someone refused) looked at the log."""
    return Draft(envelope.message_id, now,
                 envelope.actor.user_id if envelope.actor else None,
                 envelope.actor.role if envelope.actor else None, "audit.queried",
                 _uuid_or_none(envelope.payload.get("session_id")),
                 envelope.payload.get("actor_id"),  # whose trail was looked at, if one
                 envelope.correlation_id, outcome)


# ---- cursors ---------------------------------------------------------------------------------

def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, seq = raw.split(":")
        if tag != "a1" or int(seq) < 0:
            raise ValueError
        return int(seq)
    except Exception:
        raise ServiceError(ErrorCode.INVALID, "cursor: not a cursor this API gave out") from None
