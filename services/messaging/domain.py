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
