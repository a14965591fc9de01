"""SQL of the messaging service: the event store, its projections, and the read queries.

Invariants:
- Every append runs inside a transaction that first takes ``APPEND_LOCK`` (a transaction-level
  advisory lock). Appends are therefore serial, so ``events.position`` becomes visible in commit
  order and the outbox relay, which tails by position, can never skip an event.
- A projection row changes in the same transaction as the event that changes it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import NamedTuple

import asyncpg

from shared.contracts.envelope import Actor
from shared.contracts.fields import rfc3339
from shared.ids import new_uuid

from . import domain
from .domain import SessionState, StoredMessage

APPEND_LOCK = 0x6D736773  # "msgs"


class NewEvent:
    """An event about to be appended."""

    __slots__ = ("event_id", "stream_id", "version", "type", "payload", "actor",
                 "correlation_id", "causation_id", "occurred_at", "recipients", "position")

    def __init__(self, *, stream_id: uuid.UUID, version: int | None, type: str, payload: dict,
                 actor: Actor | None, correlation_id: str | None, causation_id: str | None,
                 occurred_at: datetime, event_id: uuid.UUID | None = None):
        self.event_id = event_id or new_uuid()
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.payload = payload
        self.actor = actor
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.occurred_at = occurred_at
        self.recipients: list[str] | None = None
        self.position: int | None = None  # set by append_events

    def with_recipients(self, user_ids: list[str]) -> NewEvent:
        """Users to tell about this event beyond the session's joined sockets (routing
        metadata: the relay routes it to ``user.<id>.*`` too)."""
        self.recipients = list(user_ids)
        return self


SCHEMA_VERSIONS = {"session_created": 1, "message_sent": 1, "message_deleted": 1,
                   "participant_added": 1, "participant_removed": 1, "messages_delivered": 1,
                   "messages_read": 1, "session_accessed_by_admin": 1}


async def lock_appends(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)


# BEGIN and the lock in one round trip (the simple query protocol takes several statements).
_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK})"


@asynccontextmanager
async def append_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction that holds ``APPEND_LOCK`` from its start;
    committed when the block ends, rolled back when it raises."""
    async with pool.acquire() as conn:
        await conn.execute(_BEGIN_LOCKED)
        try:
            yield conn
        except BaseException:
            if not conn.is_closed():
                with suppress(Exception):  # the original error is the one worth raising
                    await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


class Projection(NamedTuple):
    """CTEs that project an append in the same statement (see ``append_events``): their SQL,
    their parameters, and a condition the append requires (else it is refused)."""

    ctes: str
    params: list
    requires: str | None = None


async def append_events(conn: asyncpg.Connection, events: list[NewEvent], *,
                        notify: bool = True, lock: bool = False,
                        also: Callable[[int], Projection] | None = None) -> int | None:
    """Append in one statement, which, with ``notify``, also wakes the relays
    (``events_appended``); a duplicate (stream, version) raises UniqueViolationError.

    ``lock``: the statement takes ``APPEND_LOCK`` itself, before any position is drawn (for a
    statement that is its own transaction; otherwise the transaction holds it already).
    ``also(first)``: the projection of the events (parameters numbered from ``$<first>``), so
    that it costs no round trip of its own; it reads the appended events from the CTE
    ``appended`` (``stream_id, version, type, payload, occurred_at``). When its ``requires``
    does not hold, nothing is written and SerializationError is raised (``append_refused``).

    Sets each event's ``position`` and returns the position the events follow: the one before
    the first (which, the appends being serial, is the last event appended before them unless
    a transaction that drew it rolled back); None when there were no events."""
    if not events:
        return None
    params = [
        [e.event_id for e in events], [e.stream_id for e in events],
        [e.version for e in events], [e.type for e in events],
        [SCHEMA_VERSIONS[e.type] for e in events], [e.payload for e in events],
        [e.actor.user_id if e.actor else None for e in events],
        [e.actor.role if e.actor else None for e in events],
        [e.correlation_id for e in events], [e.causation_id for e in events],
        [e.occurred_at for e in events],
        # User ids hold no spaces, so a space-joined string carries the list through unnest.
        [" ".join(e.recipients) if e.recipients is not None else None for e in events],
        notify,
    ]
    projection = also(len(params) + 1) if also else Projection("", [])
    refusal = (f"CASE WHEN NOT ({projection.requires}) THEN "
               "append_refused('a session moved on since the batch was decided') END, "
               if projection.requires else "")
    # With ``lock``, every write joins ``serial``: nothing is written before the lock is held.
    serial = " CROSS JOIN serial" if lock else ""
    row = await conn.fetchrow(
        (f"WITH serial AS MATERIALIZED (SELECT pg_advisory_xact_lock({APPEND_LOCK})), "
         if lock else "WITH ") +
        f"""appended AS (
             INSERT INTO events (event_id, stream_id, version, type, schema_version, payload,
                                 actor_id, actor_role, correlation_id, causation_id,
                                 occurred_at, recipients)
             SELECT e, s, v, t, sv, p, ai, ar, co, ca, o,
                    CASE WHEN r IS NULL THEN NULL ELSE string_to_array(r, ' ') END
             FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::int[],
                         $6::jsonb[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::timestamptz[], $12::text[])
                  AS u(e, s, v, t, sv, p, ai, ar, co, ca, o, r){serial}
             RETURNING event_id, position, stream_id, version, type, payload, occurred_at)
           {", " + projection.ctes if projection.ctes else ""}
           SELECT {refusal}CASE WHEN $13 THEN pg_notify('events_appended', '') END,
                  (SELECT array_agg(event_id ORDER BY position) FROM appended) AS ids,
                  (SELECT array_agg(position ORDER BY position) FROM appended) AS positions""",
        *params, *projection.params)
    positions = dict(zip(row["ids"], row["positions"], strict=True))
    for event in events:
        event.position = positions[event.event_id]
    return row["positions"][0] - 1


async def inbox_answers(conn: asyncpg.Connection, message_ids: list[uuid.UUID]
                        ) -> dict[uuid.UUID, dict]:
    """The answers of the commands among ``message_ids`` that were handled already."""
    rows = await conn.fetch("SELECT message_id, answer FROM inbox WHERE message_id = ANY($1)",
                            message_ids)
    return {r["message_id"]: r["answer"] for r in rows}


async def record_inbox(conn: asyncpg.Connection,
                       items: Iterable[tuple[uuid.UUID, str, dict]]) -> None:
    """Commands handled, with their answers (``message_id, type, answer``)."""
    items = list(items)
    if items:
        await conn.execute(
            """INSERT INTO inbox (message_id, type, answer)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])
               ON CONFLICT DO NOTHING""",
            [i[0] for i in items], [i[1] for i in items], [i[2] for i in items])


# ---- session state ---------------------------------------------------------------------------

async def load_sessions(conn: asyncpg.Connection, session_ids: list[uuid.UUID], *,
                        for_update: bool = False) -> dict[uuid.UUID, SessionState]:
    """Sessions with their participants; ``for_update`` locks the rows in id order (a fixed
    order, so two writers can never deadlock)."""
    if not session_ids:
        return {}
    lock = " FOR UPDATE OF s" if for_update else ""
    rows = await conn.fetch(
        f"""SELECT s.id, s.created_by, s.last_seq,
                   ARRAY(SELECT ARRAY[p.user_id, p.role] FROM participants p
                         WHERE p.session_id = s.id ORDER BY p.added_at, p.user_id) AS members
            FROM sessions s WHERE s.id = ANY($1::uuid[]) ORDER BY s.id{lock}""", session_ids)
    states = {}
    for r in rows:
        state = states[r["id"]] = SessionState(r["id"], r["created_by"], r["last_seq"])
        for user_id, role in r["members"]:
            state.participants[user_id] = role
    return states


# ---- messages --------------------------------------------------------------------------------

MESSAGE_COLUMNS = ("id, session_id, seq, sender_id, kind, body, client_msg_id, created_at,"
                   " deleted, attachment")


def message_view(row) -> dict:
    return {
        "id": str(row["id"]), "session_id": str(row["session_id"]), "seq": row["seq"],
        "sender_id": row["sender_id"], "kind": row["kind"],
        "body": None if row["deleted"] else row["body"],
        "client_msg_id": row["client_msg_id"], "created_at": rfc3339(row["created_at"]),
        "deleted": row["deleted"], "attachment": None if row["deleted"] else row["attachment"],
    }


async def find_by_client_ids(conn: asyncpg.Connection,
                             keys: list[tuple[uuid.UUID, str, str]]
                             ) -> dict[tuple[uuid.UUID, str, str], StoredMessage]:
    if not keys:
        return {}
    # LATERAL: one index probe per key whatever the plan (a generic plan made while the table
    # was small would otherwise hash-join over a scan of the whole table).
    rows = await conn.fetch(
        f"""SELECT m.* FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(s, u, c)
            CROSS JOIN LATERAL (
              SELECT {MESSAGE_COLUMNS} FROM messages
              WHERE session_id = k.s AND sender_id = k.u AND client_msg_id = k.c) m""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r["session_id"], r["sender_id"], r["client_msg_id"]):
            StoredMessage(r["id"], r["seq"], r["body"], message_view(r)) for r in rows}


async def fetch_messages(conn: asyncpg.Connection, session_id: uuid.UUID, *,
                         before_seq: int | None, after_seq: int | None, limit: int
                         ) -> tuple[list[dict], bool]:
    """A page in ascending seq and whether more lie in that direction."""
    if after_seq is not None:
        rows = await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3", session_id, after_seq, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
    else:
        bound = before_seq if before_seq is not None else 2**31 - 1
        rows = await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq < $2"
            " ORDER BY seq DESC LIMIT $3", session_id, bound, limit + 1)
        has_more = len(rows) > limit
        rows = list(reversed(rows[:limit]))
    return [message_view(r) for r in rows], has_more


async def fetch_stream(conn: asyncpg.Connection, session_id: uuid.UUID, after_seq: int,
                       limit: int) -> tuple[list[asyncpg.Record], bool]:
    rows = await conn.fetch(
        """SELECT version, type, payload FROM events
           WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3""",
        session_id, after_seq, limit + 1)
    return rows[:limit], len(rows) > limit


async def load_message_refs(conn: asyncpg.Connection, message_ids: list[uuid.UUID]
                            ) -> dict[uuid.UUID, domain.MessageRef]:
    if not message_ids:
        return {}
    rows = await conn.fetch(
        """SELECT id, session_id, seq, sender_id, deleted, kind FROM messages
           WHERE id = ANY($1::uuid[])""",
        message_ids)
    return {r["id"]: domain.MessageRef(r["id"], r["session_id"], r["seq"], r["sender_id"],
                                       r["deleted"], r["kind"]) for r in rows}


async def load_markers(conn: asyncpg.Connection, keys: list[tuple[uuid.UUID, str]]
                       ) -> dict[tuple[uuid.UUID, str], domain.Markers]:
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT r.session_id, r.user_id, r.delivered_seq, r.read_seq FROM receipts r
           JOIN unnest($1::uuid[], $2::text[]) AS k(s, u) ON r.session_id = k.s
                                                         AND r.user_id = k.u""",
        [k[0] for k in keys], [k[1] for k in keys])
    return {(r["session_id"], r["user_id"]): domain.Markers(r["delivered_seq"], r["read_seq"])
            for r in rows}


async def erase_message_payload(conn: asyncpg.Connection, session_id: uuid.UUID, seq: int
                                ) -> None:
    """Redaction: the stored ``message_sent`` keeps its place but loses body and attachment."""
    await conn.execute(
        """UPDATE events SET payload = jsonb_set(payload, '{message}',
                  (payload->'message') || '{"body": null, "attachment": null, "deleted": true}')
           WHERE stream_id = $1 AND version = $2 AND type = 'message_sent'""",
        session_id, seq)


async def append_admin_access(conn: asyncpg.Connection, event: NewEvent) -> None:
    async with conn.transaction():
        await lock_appends(conn)
        await append_events(conn, [event])


# ---- session views ---------------------------------------------------------------------------

async def session_views(conn: asyncpg.Connection, session_ids: list[uuid.UUID], viewer: str
                        ) -> dict[uuid.UUID, dict]:
    """Sessions as clients see them, with the viewer's unread count."""
    if not session_ids:
        return {}
    rows = await conn.fetch(
        f"""SELECT s.id, s.title, s.created_by, s.created_at, s.last_seq,
                   (SELECT row_to_json(m) FROM (SELECT {MESSAGE_COLUMNS} FROM messages
                      WHERE session_id = s.id AND seq = s.last_message_seq) m) AS last_message,
                   (SELECT count(*) FROM messages m
                     WHERE m.session_id = s.id AND NOT m.deleted AND m.sender_id <> $2
                       AND m.seq > COALESCE((SELECT read_seq FROM receipts r
                                             WHERE r.session_id = s.id AND r.user_id = $2), 0)
                   ) AS unread_count
            FROM sessions s WHERE s.id = ANY($1::uuid[])""", session_ids, viewer)
    participants: dict[uuid.UUID, list[dict]] = {r["id"]: [] for r in rows}
    for p in await conn.fetch(
            """SELECT session_id, user_id, role FROM participants
               WHERE session_id = ANY($1::uuid[]) ORDER BY session_id, role DESC, added_at,
               user_id""", list(participants)):
        participants[p["session_id"]].append({"user_id": p["user_id"], "role": p["role"]})
    views = {}
    for r in rows:
        last = r["last_message"]
        if last is not None:
            last = _json_message(last)
        views[r["id"]] = {
            "id": str(r["id"]), "title": r["title"], "created_by": r["created_by"],
            "created_at": rfc3339(r["created_at"]), "participants": participants[r["id"]],
            "last_seq": r["last_seq"], "last_message": last, "unread_count": r["unread_count"],
        }
    return views


def _json_message(data: dict) -> dict:
    """A message row that came back through row_to_json."""
    deleted = data["deleted"]
    return {
        "id": data["id"], "session_id": data["session_id"], "seq": data["seq"],
        "sender_id": data["sender_id"], "kind": data["kind"],
        "body": None if deleted else data["body"], "client_msg_id": data["client_msg_id"],
        "created_at": rfc3339(datetime.fromisoformat(data["created_at"])),
        "deleted": deleted, "attachment": None if deleted else data["attachment"],
    }


async def list_session_ids(conn: asyncpg.Connection, user_id: str | None, limit: int,
                           after: tuple[datetime, uuid.UUID] | None
                           ) -> list[tuple[uuid.UUID, datetime]]:
    """The user's sessions (every session for None), newest activity first, keyset-paged by
    (activity, id)."""
    if user_id is None:
        rows = await conn.fetch(
            """SELECT id, last_activity_at FROM sessions
               WHERE ($2::timestamptz IS NULL OR (last_activity_at, id) < ($2, $3))
               ORDER BY last_activity_at DESC, id DESC LIMIT $1""",
            limit, after[0] if after else None, after[1] if after else None)
        return [(r["id"], r["last_activity_at"]) for r in rows]
    if after is None:
        rows = await conn.fetch(
            """SELECT s.id, s.last_activity_at FROM participants p JOIN sessions s
                 ON s.id = p.session_id
               WHERE p.user_id = $1 ORDER BY s.last_activity_at DESC, s.id DESC LIMIT $2""",
            user_id, limit)
    else:
        rows = await conn.fetch(
            """SELECT s.id, s.last_activity_at FROM participants p JOIN sessions s
                 ON s.id = p.session_id
               WHERE p.user_id = $1 AND (s.last_activity_at, s.id) < ($3, $4)
               ORDER BY s.last_activity_at DESC, s.id DESC LIMIT $2""",
            user_id, limit, after[0], after[1])
    return [(r["id"], r["last_activity_at"]) for r in rows]


async def receipts_of(conn: asyncpg.Connection, session_id: uuid.UUID) -> dict[str, dict]:
    rows = await conn.fetch(
        "SELECT user_id, delivered_seq, read_seq FROM receipts WHERE session_id = $1",
        session_id)
    return {r["user_id"]: {"delivered_seq": r["delivered_seq"], "read_seq": r["read_seq"]}
            for r in rows}


async def memberships_of(conn: asyncpg.Connection, user_ids: list[str]
                         ) -> dict[uuid.UUID, tuple[int, list[str]]]:
    """Every session any of the users is in: ``(last_seq, participants)``, read in one
    statement (one snapshot, so the participants are those as of ``last_seq``)."""
    rows = await conn.fetch(
        """SELECT s.id, s.last_seq, array_agg(p.user_id ORDER BY p.user_id) AS users
           FROM sessions s JOIN participants p ON p.session_id = s.id
           WHERE s.id IN (SELECT session_id FROM participants WHERE user_id = ANY($1::text[]))
           GROUP BY s.id, s.last_seq""", user_ids)
    return {r["id"]: (r["last_seq"], list(r["users"])) for r in rows}
