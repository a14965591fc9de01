"""Projections of the event store: sessions, participants, messages, receipts.

``apply`` is the only code that writes projection rows. The live path calls it in the same
transaction as the append; ``rebuild`` replays every event through it, so a rebuild gives the
same rows as the live path by construction. Consecutive events of one type are applied with one
statement each (the hot path, ``message_sent``, is a few ``unnest`` statements per batch).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Protocol

import asyncpg

from .store import Projection

PROJECTION_TABLES = ("receipts", "messages", "participants", "sessions")


class Event(Protocol):
    stream_id: uuid.UUID
    type: str
    payload: dict
    version: int | None
    occurred_at: datetime


async def apply(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    for type_, run in groupby(events, key=lambda e: e.type):
        handler = APPLIERS.get(type_)
        if handler is not None:
            await handler(conn, list(run))


async def session_created(conn, events) -> None:
    for event in events:
        p = event.payload
        session_id = uuid.UUID(p["session_id"])
        await conn.execute(
            """INSERT INTO sessions (id, title, created_by, created_at, last_seq,
                                     last_activity_at)
               VALUES ($1, $2, $3, $4, 0, $4)""",
            session_id, p["title"], p["created_by"], event.occurred_at)
        users = [x["user_id"] for x in p["participants"]]
        await conn.execute(
            """INSERT INTO participants (session_id, user_id, role, added_at)
               SELECT $1, u, r, $4 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY
                      AS t(u, r, n) ORDER BY n""",
            session_id, users, [x["role"] for x in p["participants"]], event.occurred_at)
        await conn.execute(
            """INSERT INTO receipts (session_id, user_id)
               SELECT $1, u FROM unnest($2::text[]) AS t(u)""", session_id, users)


async def message_sent(conn, events) -> None:
    """Message rows, the session's last_seq / last message / activity, and the sender's own
    markers (sending moves them to the new message)."""
    rows = ("unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::timestamptz[])"
            " AS u(stream_id, version, type, payload, occurred_at)")
    projection = message_sent_ctes(rows)
    await conn.execute(f"WITH {projection.ctes} SELECT 1",
                       [e.stream_id for e in events], [e.version for e in events],
                       [e.type for e in events], [e.payload for e in events],
                       [e.occurred_at for e in events])


# The projection of ``message_sent`` as common table expressions over ``{rows}``, a relation
# of events ``(stream_id, version, type, payload, occurred_at)``: the events of the statement
# that appends them (``appended``, so the projection costs no parameters of its own), or
# events given as parameters. The message row is the event's ``message``, as stored. With
# ``{expected}``, a session moves on only from the seq before the batch's first message in it
# (see ``message_sent_ctes``).
_MESSAGE_SENT_CTES = """
    sent AS (
      SELECT stream_id AS session_id, version AS seq, payload->'message' AS m, occurred_at
      FROM {rows} WHERE type = 'message_sent'),
    projected_messages AS (
      INSERT INTO messages (id, session_id, seq, sender_id, kind, body, client_msg_id,
                            created_at, deleted, attachment)
      SELECT (m->>'id')::uuid, session_id, seq, m->>'sender_id', m->>'kind', m->>'body',
             m->>'client_msg_id', occurred_at, COALESCE((m->>'deleted')::bool, false),
             NULLIF(m->'attachment', 'null') FROM sent),
    projected_counters AS (
      UPDATE sessions s SET last_seq = GREATEST(s.last_seq, t.seq),
             last_message_seq = GREATEST(COALESCE(s.last_message_seq, 0), t.seq),
             last_activity_at = GREATEST(s.last_activity_at, t.at)
      FROM (SELECT session_id, max(seq) AS seq, min(seq) - 1 AS expected,
                   max(occurred_at) AS at
            FROM sent GROUP BY session_id) t
      WHERE s.id = t.session_id{expected}
      RETURNING s.id),
    projected_markers AS (
      INSERT INTO receipts AS r (session_id, user_id, delivered_seq, read_seq)
      SELECT session_id, m->>'sender_id', max(seq), max(seq) FROM sent
      GROUP BY session_id, m->>'sender_id'
      ON CONFLICT (session_id, user_id) DO UPDATE
        SET delivered_seq = GREATEST(r.delivered_seq, EXCLUDED.delivered_seq),
            read_seq = GREATEST(r.read_seq, EXCLUDED.read_seq))"""


def message_sent_ctes(rows: str, *, expect_sessions: tuple[int, int] | None = None
                      ) -> Projection:
    """The ``message_sent`` projection of the events in relation ``rows``.
    ``expect_sessions=(n, first)``: the batch was decided on what this process knew of its
    ``n`` sessions, without a lock; each must still be at the seq before the batch's first
    message in it, and the append requires it of every one (``$<first>`` carries ``n``, so
    the statement's text, and so its prepared form, stays the same)."""
    sql = _MESSAGE_SENT_CTES.format(
        rows=rows, expected=" AND s.last_seq = t.expected" if expect_sessions else "")
    if expect_sessions is None:
        return Projection(sql, [])
    count, first = expect_sessions
    return Projection(sql, [count],
                      f"(SELECT count(*) FROM projected_counters) = ${first}::int")


async def message_deleted(conn, events) -> None:
    for event in events:
        p = event.payload
        session_id = uuid.UUID(p["session_id"])
        await conn.execute(
            """UPDATE messages SET deleted = true, body = NULL, attachment = NULL
               WHERE id = $1""", uuid.UUID(p["message_id"]))
        await _bump_seq(conn, session_id, p["seq"])


async def participant_added(conn, events) -> None:
    for event in events:
        p = event.payload
        session_id = uuid.UUID(p["session_id"])
        await conn.execute(
            """INSERT INTO participants (session_id, user_id, role, added_at)
               VALUES ($1, $2, $3, $4)""", session_id, p["user_id"], p["role"], event.occurred_at)
        # A newcomer sees the history but owes no reading of it.
        await conn.execute(
            """INSERT INTO receipts (session_id, user_id, delivered_seq, read_seq)
               VALUES ($1, $2, $3, $3)
               ON CONFLICT (session_id, user_id) DO UPDATE
                 SET delivered_seq = EXCLUDED.delivered_seq, read_seq = EXCLUDED.read_seq""",
            session_id, p["user_id"], p["seq"])
        await _bump_seq(conn, session_id, p["seq"])


async def participant_removed(conn, events) -> None:
    for event in events:
        p = event.payload
        session_id = uuid.UUID(p["session_id"])
        await conn.execute("DELETE FROM participants WHERE session_id = $1 AND user_id = $2",
                           session_id, p["user_id"])
        await conn.execute("DELETE FROM receipts WHERE session_id = $1 AND user_id = $2",
                           session_id, p["user_id"])
        if p.get("new_owner"):
            await conn.execute(
                """UPDATE participants SET role = 'owner'
                   WHERE session_id = $1 AND user_id = $2""", session_id, p["new_owner"])
        await _bump_seq(conn, session_id, p["seq"])


async def messages_delivered(conn, events) -> None:
    await _move_markers(conn, *_marker_columns(events), read=None)


async def messages_read(conn, events) -> None:
    sessions, users, seqs = _marker_columns(events)
    await _move_markers(conn, sessions, users, seqs, seqs)


def _marker_columns(events):
    return ([uuid.UUID(e.payload["session_id"]) for e in events],
            [e.payload["user_id"] for e in events], [e.payload["up_to_seq"] for e in events])


async def _move_markers(conn, sessions, users, delivered, read) -> None:
    """Markers only move forward; a read marker also covers delivered."""
    await conn.execute(
        """INSERT INTO receipts AS r (session_id, user_id, delivered_seq, read_seq)
           SELECT session_id, user_id, max(d), COALESCE(max(rd), 0)
           FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[]) AS u(session_id, user_id,
                                                                        d, rd)
           GROUP BY session_id, user_id
           ON CONFLICT (session_id, user_id) DO UPDATE
             SET delivered_seq = GREATEST(r.delivered_seq, EXCLUDED.delivered_seq),
                 read_seq = GREATEST(r.read_seq, EXCLUDED.read_seq)""",
        sessions, users, delivered, read if read is not None else [None] * len(sessions))


async def _bump_seq(conn, session_id: uuid.UUID, seq: int) -> None:
    await conn.execute("UPDATE sessions SET last_seq = GREATEST(last_seq, $2) WHERE id = $1",
                       session_id, seq)


APPLIERS = {
    "session_created": session_created,
    "message_sent": message_sent,
    "message_deleted": message_deleted,
    "participant_added": participant_added,
    "participant_removed": participant_removed,
    "messages_delivered": messages_delivered,
    "messages_read": messages_read,
}


class _StoredEvent:
    __slots__ = ("stream_id", "type", "payload", "version", "occurred_at")

    def __init__(self, row):
        self.stream_id, self.type, self.payload = row["stream_id"], row["type"], row["payload"]
        self.version, self.occurred_at = row["version"], row["occurred_at"]


async def rebuild(conn: asyncpg.Connection, batch: int = 2000) -> int:
    """Empty the projections and replay every event in commit order; returns the count.
    Runs in one transaction holding the append lock, so no write interleaves."""
    from .store import lock_appends
    async with conn.transaction():
        await lock_appends(conn)
        await conn.execute(f"TRUNCATE {', '.join(PROJECTION_TABLES)}")
        position, count = 0, 0
        while True:
            rows = await conn.fetch(
                """SELECT position, stream_id, type, payload, version, occurred_at FROM events
                   WHERE position > $1 ORDER BY position LIMIT $2""", position, batch)
            if not rows:
                return count
            await apply(conn, [_StoredEvent(r) for r in rows])
            position, count = rows[-1]["position"], count + len(rows)
