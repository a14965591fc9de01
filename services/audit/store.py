"""SQL of the audit log. Appends are serialised by a transaction-level advisory lock: the
head of the chain is read, the batch is linked to it and inserted, and the lock is released at
commit, so replicas appending at once still build one linear chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from . import domain

APPEND_LOCK = 0x61756474  # "audt"
COLUMNS = ("seq, id, occurred_at, actor_id, actor_role, action, session_id, target_id, "
           "request_id, outcome, source_event_id, prev_hash, hash")


async def lock_appends(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)


async def head(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (row["seq"], row["hash"]) if row else (0, domain.GENESIS)


async def recorded(conn: asyncpg.Connection, source_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT source_event_id FROM audit_log WHERE source_event_id = ANY($1::uuid[])",
        source_ids)
    return {r["source_event_id"] for r in rows}


async def append(conn: asyncpg.Connection, drafts: list[domain.Draft]) -> list[domain.Entry]:
    """Append each draft not yet recorded, in order; call inside a transaction. Returns the
    entries written."""
    if not drafts:
        return []
    await lock_appends(conn)
    fresh = domain.unique_drafts(
        drafts, await recorded(conn, [d.source_event_id for d in drafts]))
    if not fresh:
        return []
    last_seq, last_hash = await head(conn)
    entries = domain.chain(fresh, last_seq, last_hash)
    await conn.copy_records_to_table(
        "audit_log", columns=[c.strip() for c in COLUMNS.split(",")],
        records=[(e.seq, e.id, e.draft.occurred_at, e.draft.actor_id, e.draft.actor_role,
                  e.draft.action, e.draft.session_id, e.draft.target_id, e.draft.request_id,
                  e.draft.outcome, e.draft.source_event_id, e.prev_hash, e.hash)
                 for e in entries])
    return entries


def entry_of(row) -> domain.Entry:
    draft = domain.Draft(row["source_event_id"], row["occurred_at"], row["actor_id"],
                         row["actor_role"], row["action"], row["session_id"], row["target_id"],
                         row["request_id"], row["outcome"])
    return domain.Entry(row["id"], row["seq"], draft, row["prev_hash"], row["hash"])


async def query(conn: asyncpg.Connection, *, after_seq: int, limit: int,
                session_id: uuid.UUID | None, actor_id: str | None, action: str | None,
                since: datetime | None) -> list[domain.Entry]:
    """Entries in ascending seq after ``after_seq`` that match every given filter."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM audit_log
            WHERE seq > $1
              AND ($2::uuid IS NULL OR session_id = $2)
              AND ($3::text IS NULL OR actor_id = $3)
              AND ($4::text IS NULL OR action = $4)
              AND ($5::timestamptz IS NULL OR occurred_at >= $5)
            ORDER BY seq LIMIT $6""",
        after_seq, session_id, actor_id, action, since, limit)
    return [entry_of(r) for r in rows]


async def count(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM audit_log")


async def walk(conn: asyncpg.Connection, chunk: int = 5000) -> AsyncIterator[domain.Entry]:
    """Every entry in seq order, read in chunks (the log may be large)."""
    after = 0
    while True:
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            after, chunk)
        for row in rows:
            yield entry_of(row)
        if len(rows) < chunk:
            return
        after = rows[-1]["seq"]
