"""Entry points of the messaging service.

A batch from the broker is split into writes and reads. All writes of a batch commit in one
transaction (one seq bump per session, rows by ``unnest``), which is what lets the service keep
up with thousands of messages a second; each write still gets its own result or error. Reads run
on their own pooled connections.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.contracts.commands import (
    AddParticipant,
    CreateSession,
    DeleteMessage,
    GetEvents,
    GetMessages,
    GetSession,
    JoinSession,
    ListMemberships,
    ListSessions,
    MarkReceipt,
    RemoveParticipant,
    SendAttachmentMessage,
    SendMessage,
)
from shared.contracts.envelope import Envelope, failed, ok
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.frames import frame_from_event
from shared.contracts.registry import payload_of
from shared.logging import get_logger
from shared.metrics import ENVELOPES_HANDLED, OPTIMISTIC_WRITES

from . import attachments, domain, projections, store, writes
from .sessions import SessionCache
from .writes import Write

log = get_logger(__name__)


def _nobody_told(_before: int, _events: list[store.NewEvent]) -> None:
    pass


@dataclass
class Deps:
    pool: asyncpg.Pool
    # Told after each commit that appended: the position before its events, and the events
    # (the outbox relay of this process publishes them without reading them back).
    on_commit: Callable[[int, list[store.NewEvent]], None] = _nobody_told
    # Whether an append must wake the relays over Postgres (pg_notify): not while the relay of
    # this process is the active one, as ``on_commit`` tells it.
    notify_relays: Callable[[], bool] = lambda: True
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # The sessions as this process last decided them (see ``sessions``).
    sessions: SessionCache = field(default_factory=SessionCache)
    # Connections for the optimistic writes of messages, whose one statement accesses every
    # row by key: planned once (generic plans), not at every batch. None: ``pool``.
    writer: asyncpg.Pool | None = None
    # Batches of messages are decided one at a time, in the order they came (each continues
    # the seqs the one before assigned), and written one at a time in that order (two writes
    # sent together could take the append lock in either order); the next batch is decided
    # while one is written. So one connection's messages keep the order they were sent in.
    deciding: asyncio.Lock = field(default_factory=asyncio.Lock)
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Bumped whenever an optimistic write is refused: a batch decided before then may have
    # continued seqs that were never written.
    refusals: int = 0


WRITE_HANDLERS: dict[type, Callable[..., Awaitable[list]]] = {
    CreateSession: writes.create_sessions,
    SendMessage: writes.send_messages,
    MarkReceipt: writes.mark_receipts,
    DeleteMessage: writes.delete_messages,
    AddParticipant: writes.change_participants,
    RemoveParticipant: writes.change_participants,
    SendAttachmentMessage: attachments.send_attachment_messages,
}


async def handle_writes(batch: list[Write], results: list, deps: Deps) -> None:
    sends = sum(1 for w in batch if type(w.command) is SendMessage)
    if sends == len(batch):
        await write_messages(batch, results, deps)
    elif sends:
        # Messages among other writes (the consumer merged several broker messages): all
        # under the lock, but in their place in line with the batches of messages.
        async with deps.deciding:
            pass
        async with deps.writing:
            await write_under_lock(batch, results, deps)
    else:
        await write_under_lock(batch, results, deps)


async def write_messages(batch: list[Write], results: list, deps: Deps) -> None:
    """The hot path, a batch of text messages only, written optimistically: decided on what
    this process knows of the sessions (read only when it knows nothing) and on the
    idempotency keys (read without a lock), and written, events and projection, by one
    statement that is its own transaction and takes the append lock itself. The next batch is
    decided while this one is written, continuing its seqs, and written after it.

    The write commits only if every session is still where the batch was decided to continue
    it, and no message with one of its idempotency keys was stored meanwhile. Otherwise
    (another writer came first, or the batch this one continued was refused) nothing is
    written, what this process knew of those sessions is forgotten, and the batch is written
    under the lock instead, still before any batch decided after it: one connection's messages
    keep the order they were sent in. No inbox rows: a message is idempotent by its
    client_msg_id, which also answers a redelivered command with the stored message."""
    session_ids = sorted({w.command.session_id for w in batch})
    async with deps.deciding:  # taken before any await: batches are decided as they came
        states = await deps.sessions.states(deps.pool, session_ids)
        decided_after = deps.refusals
        events = await writes.send_messages(None, batch, results, deps.clock(), states=states)
        # A message refused on what this process remembers may have been refused on a stale
        # memory (its sender was added by another replica): nothing written would tell, so
        # such a batch is decided again under the lock.
        refused_on_memory = any(isinstance(results[w.index], ServiceError) for w in batch)
    async with deps.writing, (deps.writer or deps.pool).acquire() as conn:
        if decided_after == deps.refusals and not refused_on_memory:
            try:
                before = await store.append_events(
                    conn, events, notify=deps.notify_relays(), lock=True,
                    also=lambda first: projections.message_sent_ctes(
                        "appended", expect_sessions=(len({e.stream_id for e in events}),
                                                     first)))
            except (asyncpg.UniqueViolationError, asyncpg.SerializationError):
                pass
            else:
                OPTIMISTIC_WRITES.labels("committed").inc()
                if events:
                    deps.on_commit(before, events)
                return
        OPTIMISTIC_WRITES.labels("refused").inc()
        deps.refusals += 1
        deps.sessions.forget(session_ids)
        for w in batch:
            results[w.index] = None
        await write_under_lock(batch, results, deps)


async def write_under_lock(batch: list[Write], results: list, deps: Deps) -> None:
    """All writes of a batch in one transaction that holds the append lock from its start.
    Each command type's group is decided, appended and projected before the next group runs.

    A command the inbox holds was handled before (the broker redelivers a command whose
    handler committed but was not acked): it gets its first answer again and changes nothing.
    """
    now = deps.clock()
    appended: list[store.NewEvent] = []
    before = None  # the position the batch's events follow
    notify = deps.notify_relays()
    try:
        async with store.append_transaction(deps.pool) as conn:
            handled = await store.inbox_answers(conn, [w.envelope.message_id for w in batch])
            todo = []
            for w in batch:
                if w.envelope.message_id in handled:
                    results[w.index] = replayed(handled[w.envelope.message_id], w)
                else:
                    todo.append(w)
            for handler in dict.fromkeys(WRITE_HANDLERS.values()):
                group = [w for w in todo if WRITE_HANDLERS[type(w.command)] is handler]
                if group:
                    events = await handler(conn, group, results, now)
                    after = await store.append_events(conn, events, notify=notify)
                    if before is None:
                        before = after
                    await projections.apply(conn, events)
                    appended += events
            await store.record_inbox(conn, [
                (w.envelope.message_id, w.envelope.type, inbox_answer(results[w.index]))
                for w in todo if type(w.command) not in NO_INBOX
                and not isinstance(results[w.index], ServiceError)])
            # Session answers are read inside the transaction so they include this batch.
            for i, result in enumerate(results):
                if isinstance(result, tuple) and result[0] == "session":
                    views = await store.session_views(conn, [result[1]], result[2].user_id)
                    results[i] = views[result[1]]
    finally:
        # Sessions written here moved on without the optimistic path seeing it.
        deps.sessions.forget({e.stream_id for e in appended} |
                             {getattr(w.command, "session_id", None) for w in batch})
    if appended:
        deps.on_commit(before, appended)


# Messages have no inbox rows: they are idempotent by their client_msg_id, and an answer kept
# in the inbox would hold their text, which deleting a message must erase everywhere.
NO_INBOX = (SendMessage, SendAttachmentMessage)


def inbox_answer(result) -> dict:
    """A command's answer as the inbox keeps it: a session is kept by its id (its view, read
    again when the answer is given again, holds the last message)."""
    if isinstance(result, tuple):
        return {"session_view": str(result[1])}
    return result


def replayed(answer: dict, w: Write):
    if set(answer) == {"session_view"}:
        return ("session", uuid.UUID(answer["session_view"]), w.envelope.actor)
    return answer


# ---- reads -----------------------------------------------------------------------------------

async def readable(conn, session_id: uuid.UUID, envelope: Envelope, what: str, *,
                   after_seq: int | None = None, before_seq: int | None = None
                   ) -> domain.SessionState:
    """Participants and admins read, from seqs in the stream (``domain.check_paging``). An
    admin who is not a participant leaves a trace: the ``session_accessed_by_admin`` event,
    appended (once the read is known to be valid) before the data is returned."""
    states = await store.load_sessions(conn, [session_id])
    state = domain.check_readable(states.get(session_id), envelope.actor)
    domain.check_paging(state, after_seq=after_seq, before_seq=before_seq)
    if not state.is_participant(envelope.actor.user_id):
        await store.append_admin_access(conn, store.NewEvent(
            stream_id=session_id, version=None, type="session_accessed_by_admin",
            payload={"session_id": str(session_id), "user_id": envelope.actor.user_id,
                     "what": what},
            actor=envelope.actor, correlation_id=envelope.correlation_id,
            causation_id=str(envelope.message_id), occurred_at=datetime.now(UTC)))
    return state


async def get_session(query: GetSession, envelope: Envelope, conn) -> dict:
    await readable(conn, query.session_id, envelope, "session")
    views = await store.session_views(conn, [query.session_id], envelope.actor.user_id)
    return views[query.session_id]


async def list_sessions(query: ListSessions, envelope: Envelope, conn) -> dict:
    if query.all and envelope.actor.role != "admin":
        raise ServiceError(ErrorCode.FORBIDDEN, "only admins list every session")
    after = decode_cursor(query.cursor) if query.cursor else None
    page = await store.list_session_ids(conn, None if query.all else envelope.actor.user_id,
                                        query.limit + 1, after)
    has_more = len(page) > query.limit
    page = page[:query.limit]
    views = await store.session_views(conn, [sid for sid, _ in page], envelope.actor.user_id)
    next_cursor = encode_cursor(*page[-1]) if has_more and page else None
    return {"sessions": [views[sid] for sid, _ in page], "next_cursor": next_cursor}


async def get_messages(query: GetMessages, envelope: Envelope, conn) -> dict:
    await readable(conn, query.session_id, envelope, "messages", after_seq=query.after_seq,
                   before_seq=query.before_seq)
    messages, has_more = await store.fetch_messages(
        conn, query.session_id, before_seq=query.before_seq, after_seq=query.after_seq,
        limit=query.limit)
    return {"messages": messages, "has_more": has_more}


async def get_events(query: GetEvents, envelope: Envelope, conn) -> dict:
    await readable(conn, query.session_id, envelope, "events", after_seq=query.after_seq)
    rows, has_more = await store.fetch_stream(conn, query.session_id, query.after_seq,
                                              query.limit)
    return {"events": _frames(rows), "has_more": has_more}


async def join_session(query: JoinSession, envelope: Envelope, conn) -> dict:
    state = await readable(conn, query.session_id, envelope, "join", after_seq=query.after_seq)
    views = await store.session_views(conn, [query.session_id], envelope.actor.user_id)
    backlog, truncated = [], False
    if query.after_seq is not None:
        rows, truncated = await store.fetch_stream(conn, query.session_id, query.after_seq,
                                                   query.backlog_limit)
        backlog = _frames(rows)
    return {
        "session_id": str(query.session_id), "last_seq": state.last_seq,
        "participants": views[query.session_id]["participants"],
        "receipts": await store.receipts_of(conn, query.session_id),
        "backlog": backlog, "backlog_truncated": truncated,
    }


def _frames(rows) -> list[dict]:
    frames = []
    for row in rows:
        frame = frame_from_event(row["type"], row["payload"])
        if frame is not None:
            frames.append(frame)
    return frames


async def list_memberships(query: ListMemberships, envelope: Envelope, conn) -> dict:
    """For services only (presence rebuilding its membership projection)."""
    actor = envelope.actor
    if actor.role != "admin" or not actor.user_id.startswith("service:"):
        raise ServiceError(ErrorCode.FORBIDDEN, "memberships are for services only")
    found = await store.memberships_of(conn, list(dict.fromkeys(query.user_ids)))
    return {"sessions": {str(sid): users for sid, (_, users) in found.items()},
            "seqs": {str(sid): seq for sid, (seq, _) in found.items()}}


READ_HANDLERS: dict[type, Callable[..., Awaitable[dict]]] = {
    GetSession: get_session,
    ListSessions: list_sessions,
    GetMessages: get_messages,
    GetEvents: get_events,
    JoinSession: join_session,
    ListMemberships: list_memberships,
}


async def run_read(handler, query, envelope: Envelope, deps: Deps):
    async with deps.pool.acquire() as conn:
        try:
            return await handler(query, envelope, conn)
        except ServiceError as exc:
            return exc


# ---- the batch entry point -------------------------------------------------------------------

async def handle_batch(envelopes: list[Envelope], deps: Deps) -> list[dict]:
    results: list[Any] = [None] * len(envelopes)
    writes: list[Write] = []
    reads = []
    for index, envelope in enumerate(envelopes):
        try:
            if envelope.actor is None:
                raise ServiceError(ErrorCode.UNAUTHENTICATED, "command has no actor")
            command = payload_of(envelope)
        except ServiceError as exc:
            results[index] = exc
            continue
        if type(command) in WRITE_HANDLERS:
            writes.append(Write(index, envelope, command))
        elif type(command) in READ_HANDLERS:
            reads.append((index, READ_HANDLERS[type(command)], command, envelope))
        else:
            results[index] = ServiceError(ErrorCode.INVALID,
                                          f"messaging does not handle {envelope.type}")
    if writes:
        await handle_writes(writes, results, deps)
    if reads:
        answers = await asyncio.gather(*(run_read(h, q, e, deps) for _, h, q, e in reads))
        for (index, *_), answer in zip(reads, answers, strict=True):
            results[index] = answer
    outcomes: Counter[tuple[str, str]] = Counter()
    replies = [_reply(envelopes[i], r, outcomes) for i, r in enumerate(results)]
    for (type_, outcome), count in outcomes.items():  # once per batch, not per command
        ENVELOPES_HANDLED.labels(type_, outcome).inc(count)
    return replies


def _reply(envelope: Envelope, result, outcomes: Counter) -> dict:
    if isinstance(result, ServiceError):
        outcomes[(envelope.type, result.code.value)] += 1
        if result.code not in (ErrorCode.NOT_FOUND,):
            log.info("command_refused", type=envelope.type, code=result.code.value,
                     reason=result.message, correlation_id=envelope.correlation_id,
                     actor=envelope.actor.user_id if envelope.actor else None)
        return failed(result)
    outcomes[(envelope.type, "ok")] += 1
    reply = ok(result)
    if isinstance(result, dict) and result.get("created"):
        # Announced: the message_sent event answers a caller that waits for it instead.
        reply["announced"] = True
    return reply


# ---- cursors ---------------------------------------------------------------------------------

def encode_cursor(session_id: uuid.UUID, activity: datetime) -> str:
    raw = f"{activity.isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, session_id = raw.split("|")
        return datetime.fromisoformat(moment), uuid.UUID(session_id)
    except Exception:
        raise ServiceError(ErrorCode.INVALID, "cursor: not a cursor this API gave out") from None
