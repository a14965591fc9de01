"""Pure decisions of the messaging service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.messaging import domain
from shared.contracts.commands import CreateSession, SendMessage
from shared.contracts.envelope import Actor
from shared.contracts.errors import ErrorCode, ServiceError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ALICE = Actor(user_id="alice", role="client")
BOB = Actor(user_id="bob", role="reader")
ADMIN = Actor(user_id="root", role="admin")
EVE = Actor(user_id="eve", role="client")


def session(last_seq: int = 0) -> domain.SessionState:
    return domain.SessionState(uuid.uuid4(), "alice", last_seq,
                               {"alice": "owner", "bob": "member"})


def send(state, body="hi", client_msg_id="c1"):
    return SendMessage(session_id=state.id, message_id=uuid.uuid4(),
                       client_msg_id=client_msg_id, body=body)


def test_creator_is_owner_others_members_duplicates_and_self_dropped():
    cmd = CreateSession(session_id=uuid.uuid4(), participant_ids=["bob", "alice", "bob", "carol"])
    payload = domain.create_session(cmd, ALICE, NOW)
    assert payload["participants"] == [{"user_id": "alice", "role": "owner"},
                                       {"user_id": "bob", "role": "member"},
                                       {"user_id": "carol", "role": "member"}]
    assert payload["created_at"] == "2026-11-25T12:00:00Z"


def test_a_session_needs_someone_else():
    cmd = CreateSession(session_id=uuid.uuid4(), participant_ids=["alice"])
    with pytest.raises(ServiceError) as refused:
        domain.create_session(cmd, ALICE, NOW)
    assert refused.value.code == ErrorCode.INVALID


def test_fifty_participants_is_the_limit_creator_included():
    ok = CreateSession(session_id=uuid.uuid4(), participant_ids=[f"u{i}" for i in range(49)])
    assert len(domain.create_session(ok, ALICE, NOW)["participants"]) == 50
    too_many = CreateSession(session_id=uuid.uuid4(),
                             participant_ids=[f"u{i}" for i in range(49)] + ["bob"])
    with pytest.raises(ServiceError):
        domain.create_session(too_many.model_copy(
            update={"participant_ids": [f"u{i}" for i in range(50)]}), ALICE, NOW)


def test_next_message_gets_the_next_seq():
    state = session(last_seq=7)
    decision = domain.send_message(state, None, send(state), ALICE, NOW)
    assert decision["seq"] == 8 and decision["message"]["seq"] == 8
    assert decision["message"]["sender_id"] == "alice" and decision["message"]["kind"] == "text"


def test_retry_returns_the_stored_message_and_other_body_conflicts():
    state = session()
    stored = domain.StoredMessage(uuid.uuid4(), 1, "hi", {"id": "x"})
    assert domain.send_message(state, stored, send(state, "hi"), ALICE, NOW) is stored
    with pytest.raises(ServiceError) as refused:
        domain.send_message(state, stored, send(state, "other"), ALICE, NOW)
    assert refused.value.code == ErrorCode.CONFLICT


@pytest.mark.parametrize("actor,code", [(EVE, ErrorCode.NOT_FOUND),
                                        (ADMIN, ErrorCode.FORBIDDEN)])
def test_only_participants_post(actor, code):
    state = session()
    with pytest.raises(ServiceError) as refused:
        domain.send_message(state, None, send(state), actor, NOW)
    assert refused.value.code == code


def test_unknown_session_is_not_found_for_everyone():
    with pytest.raises(ServiceError) as refused:
        domain.check_readable(None, ADMIN)
    assert refused.value.code == ErrorCode.NOT_FOUND


def test_participants_and_admins_read_outsiders_do_not():
    state = session()
    assert domain.check_readable(state, BOB) is state
    assert domain.check_readable(state, ADMIN) is state
    with pytest.raises(ServiceError):
        domain.check_readable(state, EVE)


def test_reusing_a_session_id_is_a_conflict_for_another_user():
    state = session()
    domain.same_session_created(state, ALICE)
    with pytest.raises(ServiceError) as refused:
        domain.same_session_created(state, BOB)
    assert refused.value.code == ErrorCode.CONFLICT
