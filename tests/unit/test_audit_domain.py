"""The audit's pure decisions: which fact an event is, the hash chain, and its verification."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from services.audit import domain
from shared.contracts.envelope import Actor, new_envelope
from shared.contracts.errors import ServiceError

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ALICE = Actor(user_id="alice", role="reader")


def message_sent(body: str = "secret words") -> tuple:
    sid, mid = uuid.uuid4(), uuid.uuid4()
    payload = {"session_id": str(sid), "seq": 1, "message": {
        "id": str(mid), "session_id": str(sid), "seq": 1, "sender_id": "alice", "kind": "text",
        "body": body, "client_msg_id": "c1", "created_at": NOW.isoformat(), "deleted": False,
        "attachment": None}}
    return new_envelope("message_sent", 1, payload, actor=ALICE, correlation_id="req-1",
                        occurred_at=NOW), sid, mid


def drafts(n: int) -> list[domain.Draft]:
    return [domain.Draft(uuid.uuid4(), NOW, f"user{i}", "client", "message.sent", uuid.uuid4(),
                         str(uuid.uuid4()), f"req-{i}", "ok") for i in range(n)]


def test_message_sent_is_recorded_with_its_ids_and_never_its_text():
    envelope, sid, mid = message_sent("secret words")
    draft = domain.draft_of(envelope)
    assert (draft.action, draft.actor_id, draft.actor_role) == ("message.sent", "alice", "reader")
    assert (draft.session_id, draft.target_id) == (sid, str(mid))
    assert (draft.request_id, draft.outcome, draft.source_event_id) == (
        "req-1", "ok", envelope.message_id)
    entry = domain.chain([draft], 0, domain.GENESIS)[0]
    assert b"secret" not in orjson.dumps(entry.view())
    assert b"secret" not in domain.canonical(entry.id, 1, draft)


@pytest.mark.parametrize(("event_type", "payload", "action", "target"), [
    ("session_created", {"session_id": "S", "created_by": "alice"}, "session.created", "S"),
    ("participant_added", {"session_id": "S", "user_id": "bob", "by": "alice"},
     "participant.added", "bob"),
    ("participant_removed", {"session_id": "S", "user_id": "bob", "by": "alice"},
     "participant.removed", "bob"),
    ("message_deleted", {"session_id": "S", "message_id": "M", "seq": 3, "message_seq": 1},
     "message.deleted", "M"),
    ("messages_read", {"session_id": "S", "user_id": "alice", "up_to_seq": 7},
     "receipt.read", "7"),
    ("session_accessed_by_admin", {"session_id": "S", "user_id": "root"},
     "session.admin_access", "S"),
])
def test_domain_events_map_to_spec_actions(event_type, payload, action, target):
    sid = str(uuid.uuid4())
    payload = {k: (sid if v == "S" else v) for k, v in payload.items()}
    draft = domain.draft_of(new_envelope(event_type, 1, payload, actor=ALICE))
    assert draft.action == action
    assert draft.target_id == (sid if target == "S" else target)
    assert str(draft.session_id) == sid


def test_media_events_are_audited_and_a_rejection_is_an_outcome():
    sid, aid = uuid.uuid4(), uuid.uuid4()
    payload = {"session_id": str(sid), "attachment_id": str(aid), "reason": "invalid: corrupt"}
    stored = domain.draft_of(new_envelope("attachment_stored", 1, payload, actor=ALICE))
    rejected = domain.draft_of(new_envelope("attachment_rejected", 1, payload, actor=ALICE))
    issued = domain.draft_of(new_envelope("attachment_url_issued", 1, payload, actor=ALICE))
    assert [(d.action, d.outcome) for d in (stored, rejected, issued)] == [
        ("attachment.stored", "ok"), ("attachment.rejected", "rejected"),
        ("attachment.url_issued", "ok")]
    assert {(d.session_id, d.target_id) for d in (stored, rejected, issued)} == {(sid, str(aid))}


def test_events_without_an_actor_take_it_from_the_payload():
    draft = domain.draft_of(new_envelope("participant_removed", 1, {
        "session_id": str(uuid.uuid4()), "seq": 2, "user_id": "bob", "by": "alice"}))
    assert (draft.actor_id, draft.actor_role) == ("alice", None)


def test_delivery_markers_and_unknown_events_are_not_audited():
    assert domain.draft_of(new_envelope("messages_delivered", 1, {"up_to_seq": 1})) is None
    assert domain.draft_of(new_envelope("presence_changed", 1, {"user_id": "a"})) is None


def test_audit_facts_are_validated():
    sid = uuid.uuid4()
    draft = domain.draft_of(new_envelope("audit_fact", 1, {
        "action": "access.denied", "outcome": "denied", "session_id": str(sid),
        "target_id": str(sid), "reason": "not_found"}, actor=ALICE, correlation_id="r9"))
    assert (draft.action, draft.outcome, draft.session_id, draft.request_id) == (
        "access.denied", "denied", sid, "r9")
    with pytest.raises(ServiceError):
        domain.draft_of(new_envelope("audit_fact", 1, {"action": "made.up", "outcome": "ok"}))
    with pytest.raises(ServiceError):
        domain.draft_of(new_envelope("audit_fact", 1, {"action": "auth.failed",
                                                       "outcome": "failed", "token": "x"}))


def test_each_source_event_is_kept_once():
    a, b = drafts(2)
    kept = domain.unique_drafts([a, b, a, b], already={b.source_event_id})
    assert kept == [a]


def test_hash_is_sha256_of_previous_hash_and_canonical_content():
    draft = drafts(1)[0]
    entry_id = uuid.UUID(int=1)
    content = domain.canonical(entry_id, 1, draft)
    decoded = orjson.loads(content)
    assert list(decoded) == sorted(decoded)
    assert decoded["occurred_at"] == "2024-05-01T12:00:00.123456Z"
    assert domain.entry_hash(domain.GENESIS, entry_id, 1, draft) == hashlib.sha256(
        domain.GENESIS.encode() + b"\n" + content).hexdigest()


def test_chain_links_each_entry_to_the_one_before():
    entries = domain.chain(drafts(3), 0, domain.GENESIS)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == domain.GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    more = domain.chain(drafts(2), 3, entries[-1].hash)
    assert more[0].seq == 4 and more[0].prev_hash == entries[-1].hash


def verify(entries) -> domain.ChainVerifier:
    verifier = domain.ChainVerifier()
    for entry in entries:
        if not verifier.feed(entry):
            break
    return verifier


def test_an_intact_chain_verifies():
    verifier = verify(domain.chain(drafts(50), 0, domain.GENESIS))
    assert verifier.problem is None and verifier.count == 50


def test_an_edited_entry_is_named():
    entries = domain.chain(drafts(5), 0, domain.GENESIS)
    forged = dataclasses.replace(entries[2].draft, actor_id="someone-else")
    entries[2] = dataclasses.replace(entries[2], draft=forged)
    verifier = verify(entries)
    assert f"seq=3 id={entries[2].id}" in verifier.problem and "edited" in verifier.problem
    assert verifier.count == 2


def test_a_removed_or_rehashed_entry_is_named():
    entries = domain.chain(drafts(5), 0, domain.GENESIS)
    assert "seq=5" in (gap := verify(entries[:3] + entries[4:]).problem)
    assert "expected seq 4" in gap
    # Rewriting an entry and its own hash still breaks the link to the next one.
    forged_draft = dataclasses.replace(entries[1].draft, outcome="denied")
    forged = dataclasses.replace(entries[1], draft=forged_draft, hash=domain.entry_hash(
        entries[1].prev_hash, entries[1].id, 2, forged_draft))
    problem = verify([entries[0], forged, *entries[2:]]).problem
    assert "seq=3" in problem and "prev_hash" in problem


def test_cursors_round_trip_and_foreign_ones_are_refused():
    assert domain.decode_cursor(domain.encode_cursor(42)) == 42
    for bad in ("", "abc", domain.encode_cursor(1)[:-2] + "!!"):
        with pytest.raises(ServiceError):
            domain.decode_cursor(bad)
