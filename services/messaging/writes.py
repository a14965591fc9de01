"""Write handlers: each takes the batch's commands of one type, decides with ``domain``, and
returns the events to append (results go into ``results`` by index). They run inside the
batch transaction, after the append lock; the caller appends and projects each group's events
before the next group runs, so later groups see earlier ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import faults
from shared.contracts.envelope import Envelope
from shared.contracts.errors import ServiceError

from . import domain, store


@dataclass
class Write:
    index: int
    envelope: Envelope
    command: Any


def event(w: Write, stream_id, version, type_, payload, now) -> store.NewEvent:
    return store.NewEvent(stream_id=stream_id, version=version, type=type_, payload=payload,
                          actor=w.envelope.actor, correlation_id=w.envelope.correlation_id,
                          causation_id=str(w.envelope.message_id), occurred_at=now)


async def create_sessions(conn, writes: list[Write], results: list, now: datetime) -> list:
    events = []
    existing = await store.load_sessions(conn, [w.command.session_id for w in writes],
                                         for_update=True)
    for w in writes:
        try:
            state = existing.get(w.command.session_id)
            if state is not None:
                domain.same_session_created(state, w.envelope.actor)
                results[w.index] = ("session", w.command.session_id, w.envelope.actor)
                continue
            payload = domain.create_session(w.command, w.envelope.actor, now)
        except ServiceError as exc:
            results[w.index] = exc
            continue
        existing[w.command.session_id] = domain.SessionState(
            w.command.session_id, w.envelope.actor.user_id, 0,
            {p["user_id"]: p["role"] for p in payload["participants"]})
        events.append(event(w, w.command.session_id, 0, "session_created", payload, now))
        results[w.index] = ("session", w.command.session_id, w.envelope.actor)
    return events


async def append_messages(conn, writes: list[Write], results: list, now: datetime,
                          decide, *, states: dict | None = None) -> list:
    """Text and attachment messages alike: lock the sessions and look the idempotency keys
    up, then let ``decide(state, stored, command, actor, now)`` answer a retry or give the
    next seq. The states move on to the seqs given.

    Given ``states`` (an optimistic write, see ``handlers.write_messages``), neither is read:
    a key already stored makes the store's unique index refuse the write, which is then
    redone under the lock (where it is looked up). A retry is rare; a read per batch is not."""
    keys = [(w.command.session_id, w.envelope.actor.user_id, w.command.client_msg_id)
            for w in writes]
    if states is None:
        states = await store.load_sessions(conn, sorted({w.command.session_id for w in writes}),
                                           for_update=True)
        stored = await store.find_by_client_ids(conn, keys)
    else:
        stored = {}
    events = []
    for w, key in zip(writes, keys, strict=True):
        if faults.poisoned(getattr(w.command, "body", None)):
            raise RuntimeError("injected poison command")
        state = states.get(w.command.session_id)
        try:
            decision = decide(state, stored.get(key), w.command, w.envelope.actor, now)
        except ServiceError as exc:
            results[w.index] = exc
            continue
        if isinstance(decision, domain.StoredMessage):
            results[w.index] = {"message": decision.view, "created": False}
            continue
        message = decision["message"]
        state.last_seq = decision["seq"]
        stored[key] = domain.StoredMessage(w.command.message_id, decision["seq"],
                                           message["body"], message)
        # Everyone else in the session is told (notifications to sockets not joined to it).
        notify = [u for u in state.participants if u != w.envelope.actor.user_id]
        events.append(event(w, w.command.session_id, decision["seq"], "message_sent",
                            decision, now).with_recipients(notify))
        results[w.index] = {"message": message, "created": True}
    return events


async def send_messages(conn, writes: list[Write], results: list, now: datetime, *,
                        states: dict | None = None) -> list:
    return await append_messages(conn, writes, results, now, domain.send_message,
                                 states=states)


async def mark_receipts(conn, writes: list[Write], results: list, now: datetime) -> list:
    refs = await store.load_message_refs(conn, [w.command.message_id for w in writes
                                                if w.command.message_id])
    session_ids = {w.command.session_id for w in writes if w.command.session_id}
    session_ids |= {ref.session_id for ref in refs.values()}
    states = await store.load_sessions(conn, sorted(session_ids))
    markers = await store.load_markers(conn, [(sid, w.envelope.actor.user_id)
                                              for w in writes for sid in session_ids])
    events = []
    for w in writes:
        cmd, actor = w.command, w.envelope.actor
        try:
            if cmd.message_id is not None:
                ref = refs.get(cmd.message_id)
                if ref is None:
                    raise domain.not_found("message")
                session_id, up_to = ref.session_id, ref.seq
            else:
                session_id, up_to = cmd.session_id, cmd.up_to_seq
            key = (session_id, actor.user_id)
            after, payload = domain.mark_receipt(
                states.get(session_id), actor, cmd.marker, up_to,
                markers.get(key, domain.Markers(0, 0)))
        except ServiceError as exc:
            results[w.index] = exc
            continue
        markers[key] = after
        if payload is not None:
            type_ = "messages_read" if cmd.marker == "read" else "messages_delivered"
            events.append(event(w, session_id, None, type_, payload, now))
        results[w.index] = {"session_id": str(session_id), "user_id": actor.user_id,
                            "delivered_seq": after.delivered_seq, "read_seq": after.read_seq}
    return events


async def delete_messages(conn, writes: list[Write], results: list, now: datetime) -> list:
    refs = await store.load_message_refs(conn, [w.command.message_id for w in writes])
    states = await store.load_sessions(conn, sorted({r.session_id for r in refs.values()}),
                                       for_update=True)
    events = []
    for w in writes:
        ref = refs.get(w.command.message_id)
        state = states.get(ref.session_id) if ref else None
        try:
            payload = domain.delete_message(state, ref, w.envelope.actor)
        except ServiceError as exc:
            results[w.index] = exc
            continue
        if payload is not None:
            state.last_seq = payload["seq"]
            refs[ref.id] = dataclasses.replace(ref, deleted=True)
            # Erase the text from the store itself, in this transaction.
            await store.erase_message_payload(conn, ref.session_id, ref.seq)
            events.append(event(w, ref.session_id, payload["seq"], "message_deleted", payload,
                                now))
        # Whether media has objects to erase (the gateway has it done before it answers).
        results[w.index] = {"deleted": True, "attachment": ref.kind != "text"}
    return events


async def change_participants(conn, writes: list[Write], results: list, now: datetime
                              ) -> list:
    states = await store.load_sessions(conn, sorted({w.command.session_id for w in writes}),
                                       for_update=True)
    events = []
    for w in writes:
        state = states.get(w.command.session_id)
        adding = w.command.TYPE == "messaging.add_participant"
        try:
            if adding:
                payload = domain.add_participant(state, w.command.user_id, w.envelope.actor)
            else:
                payload = domain.remove_participant(state, w.command.user_id, w.envelope.actor)
        except ServiceError as exc:
            results[w.index] = exc
            continue
        type_ = "participant_added" if adding else "participant_removed"
        domain.evolve_membership(state, type_, payload)
        # Every participant sees it live, also on connections that have not joined the
        # session (user-level frames), and so does the one removed.
        told = list(dict.fromkeys([*state.participants, w.command.user_id]))
        events.append(event(w, state.id, payload["seq"], type_, payload, now)
                      .with_recipients(told))
        results[w.index] = (("session", state.id, w.envelope.actor) if adding
                            else {"removed": True, "seq": payload["seq"]})
    return events
