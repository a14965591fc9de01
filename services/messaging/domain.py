"""Pure decisions of the messaging service: given what the store holds and a command, which
events happen (or which error). No I/O, no clock: ``now`` and ids come in from the caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shared.contracts.commands import CreateSession, SendMessage
from shared.contracts.envelope import Actor
from shared.contracts.errors import ErrorCode, ServiceError, not_found
from shared.contracts.fields import MAX_PARTICIPANTS, rfc3339


@dataclass
class SessionState:
    """What a decision about one session needs to know."""

    id: uuid.UUID
    created_by: str
    last_seq: int
    participants: dict[str, str] = field(default_factory=dict)  # user_id -> role

    def is_participant(self, user_id: str) -> bool:
        return user_id in self.participants


@dataclass(frozen=True)
class StoredMessage:
    """The fields of an existing message that idempotency compares."""

    id: uuid.UUID
    seq: int
    body: str | None
    view: dict


def create_session(command: CreateSession, actor: Actor, now: datetime) -> dict:
    """The ``session_created`` payload: the creator is the owner, the others members."""
    others: list[str] = []
    for user_id in command.participant_ids:
        if user_id != actor.user_id and user_id not in others:
            others.append(user_id)
    if not others:
        raise ServiceError(ErrorCode.INVALID,
                           "participant_ids: a session needs at least one other participant")
    if len(others) + 1 > MAX_PARTICIPANTS:
        raise ServiceError(ErrorCode.INVALID,
                           f"participant_ids: at most {MAX_PARTICIPANTS} participants, "
                           "the creator included")
    participants = [{"user_id": actor.user_id, "role": "owner"}]
    participants += [{"user_id": user_id, "role": "member"} for user_id in others]
    return {
        "session_id": str(command.session_id), "title": command.title,
        "created_by": actor.user_id, "created_at": rfc3339(now),
        "participants": participants,
    }


def same_session_created(existing: SessionState, actor: Actor) -> None:
    """A create retried with the same id by the same user returns the session; anyone else
    reusing the id is a conflict."""
    if existing.created_by != actor.user_id:
        raise ServiceError(ErrorCode.CONFLICT, "session id already in use")


def check_readable(state: SessionState | None, actor: Actor) -> SessionState:
    """Participants and admins may read; everyone else learns nothing (404)."""
    if state is None or not (state.is_participant(actor.user_id) or actor.role == "admin"):
        raise not_found()
    return state


def check_paging(state: SessionState, *, after_seq: int | None = None,
                 before_seq: int | None = None) -> None:
    """A seq to page from lies in the stream: ``after_seq`` at most the last seq (a client
    that said it had seen more would never be sent what comes next), ``before_seq`` at most
    one past it."""
    if after_seq is not None and after_seq > state.last_seq:
        raise ServiceError(ErrorCode.INVALID, f"after_seq {after_seq} is beyond the "
                                              f"session's last seq {state.last_seq}")
    if before_seq is not None and before_seq > state.last_seq + 1:
        raise ServiceError(ErrorCode.INVALID, f"before_seq {before_seq} is beyond the "
                                              f"session's last seq {state.last_seq} + 1")


def check_writable(state: SessionState | None, actor: Actor) -> SessionState:
    """Only participants post. An admin who is not one may read and moderate, not post."""
    if state is None:
        raise not_found()
    if not state.is_participant(actor.user_id):
        if actor.role == "admin":
            raise ServiceError(ErrorCode.FORBIDDEN, "admins post only in sessions they are in")
        raise not_found()
    return state


def send_message(state: SessionState | None, existing: StoredMessage | None,
                 command: SendMessage, actor: Actor, now: datetime) -> StoredMessage | dict:
    """Either the already stored message (a retry) or the payload of a new ``message_sent``
    with the session's next seq. The caller bumps ``state.last_seq`` when it appends."""
    session = check_writable(state, actor)
    if existing is not None:
        if existing.body != command.body:
            raise ServiceError(ErrorCode.CONFLICT,
                               "client_msg_id was already used for a different message")
        return existing
    seq = session.last_seq + 1
    message = {
        "id": str(command.message_id), "session_id": str(session.id), "seq": seq,
        "sender_id": actor.user_id, "kind": "text", "body": command.body,
        "client_msg_id": command.client_msg_id, "created_at": rfc3339(now),
        "deleted": False, "attachment": None,
    }
    return {"session_id": str(session.id), "seq": seq, "message": message}


# ---- receipts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Markers:
    delivered_seq: int
    read_seq: int


def mark_receipt(state: SessionState | None, actor: Actor, marker: str, up_to_seq: int,
                 stored: Markers) -> tuple[Markers, dict | None]:
    """The markers after the mark, and the event if one moved. Backward marks change nothing
    and answer the stored markers; a mark past the session's last seq is refused."""
    session = check_writable(state, actor)
    if up_to_seq > session.last_seq:
        raise ServiceError(ErrorCode.INVALID,
                           f"up_to_seq {up_to_seq} is beyond the session's last seq "
                           f"{session.last_seq}")
    current = stored.read_seq if marker == "read" else stored.delivered_seq
    if up_to_seq <= current:
        return stored, None
    if marker == "read":
        after = Markers(max(stored.delivered_seq, up_to_seq), up_to_seq)
    else:
        after = Markers(up_to_seq, stored.read_seq)
    return after, {"session_id": str(session.id), "user_id": actor.user_id,
                   "up_to_seq": up_to_seq}


# ---- redaction --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageRef:
    id: uuid.UUID
    session_id: uuid.UUID
    seq: int
    sender_id: str
    deleted: bool
    kind: str = "text"


def delete_message(state: SessionState | None, message: MessageRef | None, actor: Actor
                   ) -> dict | None:
    """The ``message_deleted`` payload (next seq), or None when it is already deleted. The
    sender or an admin may delete; another participant is refused; outsiders learn nothing."""
    if message is None or state is None:
        raise not_found("message")
    if not (state.is_participant(actor.user_id) or actor.role == "admin"):
        raise not_found("message")
    if message.deleted:
        return None
    if message.sender_id != actor.user_id and actor.role != "admin":
        raise ServiceError(ErrorCode.FORBIDDEN, "only the sender or an admin deletes a message")
    return {"session_id": str(state.id), "seq": state.last_seq + 1,
            "message_id": str(message.id), "message_seq": message.seq, "by": actor.user_id}


# ---- membership -------------------------------------------------------------------------------

def _check_manager(state: SessionState | None, actor: Actor) -> SessionState:
    if state is None:
        raise not_found()
    role = state.participants.get(actor.user_id)
    if role is None and actor.role != "admin":
        raise not_found()
    if role != "owner" and actor.role != "admin":
        raise ServiceError(ErrorCode.FORBIDDEN, "only the owner or an admin manages participants")
    return state


def add_participant(state: SessionState | None, user_id: str, actor: Actor) -> dict:
    session = _check_manager(state, actor)
    if session.is_participant(user_id):
        raise ServiceError(ErrorCode.CONFLICT, f"{user_id} is already a participant")
    if len(session.participants) >= MAX_PARTICIPANTS:
        raise ServiceError(ErrorCode.INVALID,
                           f"a session has at most {MAX_PARTICIPANTS} participants")
    return {"session_id": str(session.id), "seq": session.last_seq + 1, "user_id": user_id,
            "by": actor.user_id, "role": "member"}


def remove_participant(state: SessionState | None, user_id: str, actor: Actor) -> dict:
    """Anyone may leave; the owner or an admin removes others. The last participant cannot
    leave (the session would be orphaned). When the owner goes, the longest-standing member
    (``participants`` keeps join order) becomes owner."""
    if state is None:
        raise not_found()
    if user_id != actor.user_id:
        _check_manager(state, actor)
    elif not state.is_participant(actor.user_id):
        raise not_found()
    if not state.is_participant(user_id):
        raise not_found("participant")
    if len(state.participants) == 1:
        raise ServiceError(ErrorCode.CONFLICT, "the last participant cannot be removed")
    new_owner = None
    if state.participants[user_id] == "owner" and \
            "owner" not in [r for u, r in state.participants.items() if u != user_id]:
        new_owner = next(u for u in state.participants if u != user_id)
    return {"session_id": str(state.id), "seq": state.last_seq + 1, "user_id": user_id,
            "by": actor.user_id, "new_owner": new_owner}


def evolve_membership(state: SessionState, event_type: str, payload: dict) -> None:
    """Keep the in-memory state current while one batch appends several events."""
    state.last_seq = payload.get("seq", state.last_seq)
    if event_type == "participant_added":
        state.participants[payload["user_id"]] = payload["role"]
    elif event_type == "participant_removed":
        state.participants.pop(payload["user_id"], None)
        if payload.get("new_owner"):
            state.participants[payload["new_owner"]] = "owner"
