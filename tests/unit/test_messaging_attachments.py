"""Messaging's decision for messages that carry an attachment (media asks for them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.messaging import attachments, domain
from shared.contracts.commands import SendAttachmentMessage
from shared.contracts.envelope import Actor
from shared.contracts.errors import ServiceError

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ALICE = Actor(user_id="alice", role="client")


def command(attachment_id: uuid.UUID | None = None) -> SendAttachmentMessage:
    return SendAttachmentMessage(
        session_id=uuid.UUID(int=1), message_id=uuid.uuid4(), client_msg_id="c1", kind="voice",
        attachment={"id": attachment_id or uuid.uuid4(), "kind": "voice", "filename": "a.ogg",
                    "content_type": "audio/ogg", "size": 10, "duration_ms": 1000,
                    "waveform": [0.5] * 64, "has_thumbnail": False})


def state() -> domain.SessionState:
    return domain.SessionState(uuid.UUID(int=1), "alice", 4, {"alice": "owner", "bob": "member"})


def test_a_new_attachment_message_takes_the_next_seq_and_has_no_body():
    decision = attachments.decide(state(), None, command(), ALICE, NOW)
    message = decision["message"]
    assert decision["seq"] == 5 and message["seq"] == 5
    assert message["kind"] == "voice" and message["body"] is None
    assert message["attachment"]["waveform"] == [0.5] * 64
    assert "width" not in message["attachment"]  # absent fields stay absent


def test_a_retry_with_the_same_attachment_returns_the_stored_message():
    cmd = command()
    view = {"deleted": False, "attachment": {"id": str(cmd.attachment.id)}}
    existing = domain.StoredMessage(uuid.uuid4(), 5, None, view)
    assert attachments.decide(state(), existing, cmd, ALICE, NOW) is existing
    tombstone = domain.StoredMessage(uuid.uuid4(), 5, None, {"deleted": True,
                                                              "attachment": None})
    assert attachments.decide(state(), tombstone, cmd, ALICE, NOW) is tombstone


def test_the_same_client_msg_id_for_something_else_is_a_conflict():
    other = domain.StoredMessage(uuid.uuid4(), 5, "hello", {"deleted": False,
                                                            "attachment": None})
    with pytest.raises(ServiceError) as err:
        attachments.decide(state(), other, command(), ALICE, NOW)
    assert err.value.code.value == "conflict"


def test_only_participants_post():
    with pytest.raises(ServiceError) as err:
        attachments.decide(state(), None, command(), Actor(user_id="eve", role="client"), NOW)
    assert err.value.code.value == "not_found"
