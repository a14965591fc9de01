"""Contracts: validation rules of the SPEC, the envelope and the registry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from shared.contracts.commands import GetMessages, SendMessage
from shared.contracts.envelope import decode_batch, encode_batch, new_envelope
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.fields import normalise_body, rfc3339
from shared.contracts.frames import JoinSessionFrame, SendMessageFrame, frame_from_event
from shared.contracts.http import CreateSessionBody
from shared.contracts.registry import CLIENT_FRAMES_BY_TYPE, REGISTRY, payload_of


@pytest.mark.parametrize("raw,stored", [
    ("  hi  ", "hi"),
    ("a\r\nb", "a\nb"),
    ("tab\there", "tab\there"),
    ("\u200fمرحبا\u200e", "\u200fمرحبا\u200e"),
    ("x" * 4000, "x" * 4000),
    ("é" * 4000, "é" * 4000),
])
def test_bodies_are_trimmed_and_normalised(raw, stored):
    assert normalise_body(raw) == stored


@pytest.mark.parametrize("raw", ["", "   ", "\n\t", "x" * 4001, "a\x00b", "a\x07b", "a\x1bb",
                                 "a\x7fb", "a\x85b", "a\x9fb", "a\rb"])
def test_bad_bodies_are_refused(raw):
    with pytest.raises(ValueError):
        normalise_body(raw)


def test_send_message_refuses_extra_fields_and_bad_ids():
    base = {"session_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()),
            "client_msg_id": "c", "body": "hi"}
    assert SendMessage.model_validate(base).body == "hi"
    for bad in ({**base, "extra": 1}, {**base, "session_id": "nope"},
                {**base, "client_msg_id": ""}, {**base, "client_msg_id": " padded"}):
        with pytest.raises(ValidationError):
            SendMessage.model_validate(bad)


@pytest.mark.parametrize("raw,stored", [("  Reading ", "Reading"), ("", None), ("   ", None),
                                        (None, None)])
def test_titles_are_trimmed_and_a_blank_one_is_none(raw, stored):
    body = CreateSessionBody.model_validate({"participant_ids": ["bob"], "title": raw})
    assert body.title == stored


def test_paging_refuses_both_directions():
    sid = uuid.uuid4()
    with pytest.raises(ValidationError):
        GetMessages(session_id=sid, before_seq=5, after_seq=1)
    assert GetMessages(session_id=sid).limit == 50


def test_envelope_round_trips_as_a_json_array():
    env = new_envelope("messaging.get_session", 1, {"session_id": str(uuid.uuid4())},
                       correlation_id="req-1")
    body = encode_batch([env, env])
    assert isinstance(orjson.loads(body), list)
    decoded = decode_batch(body)
    assert decoded == [env, env]


@pytest.mark.parametrize("body,code", [
    (b"{", ErrorCode.BAD_REQUEST),
    (b'{"not": "a list"}', ErrorCode.BAD_REQUEST),
    (b'[{"type": "x"}]', ErrorCode.INVALID),
])
def test_malformed_bodies_are_refused_not_guessed(body, code):
    with pytest.raises(ServiceError) as refused:
        decode_batch(body)
    assert refused.value.code == code


def test_registry_refuses_unknown_types_and_versions():
    ok = new_envelope("messaging.get_session", 1, {"session_id": str(uuid.uuid4())})
    assert payload_of(ok).session_id
    for env in (new_envelope("messaging.make_coffee", 1, {}),
                new_envelope("messaging.get_session", 2, {"session_id": str(uuid.uuid4())}),
                new_envelope("messaging.get_session", 1, {"session_id": "x"})):
        with pytest.raises(ServiceError) as refused:
            payload_of(env)
        assert refused.value.code == ErrorCode.INVALID


def test_every_contract_has_a_type_and_a_version():
    for type_, cls in REGISTRY.items():
        assert cls.TYPE == type_ and isinstance(cls.VERSION, int)
        assert cls.model_config.get("frozen") is True


def test_client_frames_are_keyed_by_wire_type():
    assert CLIENT_FRAMES_BY_TYPE["join_session"] is JoinSessionFrame
    frame = SendMessageFrame.model_validate({"type": "send_message", "session_id": str(
        uuid.uuid4()), "client_msg_id": "a", "body": " x ", "ref": "r1"})
    assert frame.body == "x" and frame.ref == "r1"


def test_stream_events_become_the_frames_clients_see():
    payload = {"session_id": "s", "seq": 3, "message": {"id": "m"}}
    assert frame_from_event("message_sent", payload) == {
        "type": "new_message", "session_id": "s", "seq": 3, "message": {"id": "m"}}
    assert frame_from_event("session_created", {"session_id": "s"}) is None


def test_times_are_rfc3339_utc_with_z():
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == \
        "2026-01-02T03:04:05.006000Z"
