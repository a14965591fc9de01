"""SQL of the media service: attachment metadata, the membership projection, inbox, outbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from shared.contracts.envelope import Actor, new_envelope

from .domain import Existing

COLUMNS = """id, session_id, uploader_id, uploader_role, client_msg_id, message_id, purpose,
    state, sha256, object_key, thumbnail_key, kind, content_type, filename, size, width, height,
    duration_ms, waveform, message_seq, correlation_id, created_at, updated_at"""


def attachment_view(row) -> dict:
    """An attachment as clients see it (SPEC: Message.attachment)."""
    view = {"id": str(row["id"]), "kind": row["kind"], "filename": row["filename"],
            "content_type": row["content_type"], "size": row["size"],
            "has_thumbnail": row["thumbnail_key"] is not None}
    for name in ("width", "height", "duration_ms", "waveform"):
        if row[name] is not None:
            view[name] = row[name]
    return view


def existing_of(row) -> Existing | None:
    if row is None:
        return None
    return Existing(row["id"], row["message_id"], row["sha256"], row["state"])


async def find_by_client_msg_id(conn, session_id: uuid.UUID, user_id: str, client_msg_id: str):
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM attachments WHERE session_id = $1 AND uploader_id = $2"
        " AND client_msg_id = $3", session_id, user_id, client_msg_id)


async def get(conn, attachment_id: uuid.UUID):
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM attachments WHERE id = $1",
                               attachment_id)


async def insert_processing(conn, *, attachment_id: uuid.UUID, session_id: uuid.UUID,
                            actor: Actor, client_msg_id: str, message_id: uuid.UUID,
                            purpose: str, sha256: str, object_key: str, correlation_id,
                            now: datetime) -> bool:
    """False when another try of the same upload got there first."""
    inserted = await conn.fetchval(
        """INSERT INTO attachments (id, session_id, uploader_id, uploader_role, client_msg_id,
                                    message_id, purpose, state, sha256, object_key,
                                    correlation_id, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'processing', $8, $9, $10, $11, $11)
           ON CONFLICT DO NOTHING RETURNING true""",
        attachment_id, session_id, actor.user_id, actor.role, client_msg_id, message_id,
        purpose, sha256, object_key, correlation_id, now)
    return bool(inserted)


async def mark_stored(conn, attachment_id: uuid.UUID, *, object_key: str,
                      thumbnail_key: str | None, kind: str, content_type: str, filename: str,
                      size: int, width, height, duration_ms, waveform, now: datetime):
    return await conn.fetchrow(
        f"""UPDATE attachments SET state = 'stored', object_key = $2, thumbnail_key = $3,
                  kind = $4, content_type = $5, filename = $6, size = $7, width = $8,
                  height = $9, duration_ms = $10, waveform = $11, updated_at = $12
            WHERE id = $1 RETURNING {COLUMNS}""",
        attachment_id, object_key, thumbnail_key, kind, content_type, filename, size, width,
        height, duration_ms, waveform, now)


async def mark_linked(conn, attachment_id: uuid.UUID, seq: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE attachments SET state = 'linked', message_seq = $2, updated_at = $3"
        " WHERE id = $1", attachment_id, seq, now)


async def delete_rows(conn, attachment_ids: Iterable[uuid.UUID]) -> None:
    await conn.execute("DELETE FROM attachments WHERE id = ANY($1::uuid[])",
                       list(attachment_ids))


async def rows_for_messages(conn, message_ids: list[uuid.UUID]) -> list:
    return await conn.fetch(f"SELECT {COLUMNS} FROM attachments WHERE message_id = ANY($1)",
                            message_ids)


async def unfinished(conn, state: str, before: datetime, limit: int = 100) -> list:
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE state = $1 AND updated_at < $2"
        " ORDER BY updated_at LIMIT $3", state, before, limit)


# ---- membership projection -------------------------------------------------------------------

async def apply_membership(conn, changes: list[tuple[uuid.UUID, str, bool, int]]) -> None:
    """(session, user, present, seq): a change older than the stored one is ignored."""
    if not changes:
        return
    await conn.execute(
        """INSERT INTO members AS m (session_id, user_id, present, seq)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::int[])
           ON CONFLICT (session_id, user_id) DO UPDATE
             SET present = EXCLUDED.present, seq = EXCLUDED.seq
             WHERE m.seq < EXCLUDED.seq""",
        [c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes],
        [c[3] for c in changes])


async def membership(conn, session_id: uuid.UUID, user_id: str) -> bool | None:
    """True or False when the projection knows the pair; None when it has not seen it."""
    return await conn.fetchval(
        "SELECT present FROM members WHERE session_id = $1 AND user_id = $2",
        session_id, user_id)


# ---- inbox and outbox ------------------------------------------------------------------------

async def new_in_inbox(conn, message_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Of these event ids, those not applied yet; records them all."""
    rows = await conn.fetch(
        """INSERT INTO inbox (message_id) SELECT * FROM unnest($1::uuid[])
           ON CONFLICT DO NOTHING RETURNING message_id""", message_ids)
    return {r["message_id"] for r in rows}


async def add_outbox(conn, routing_key: str, type_: str, version: int, payload: dict, *,
                     actor: Actor | None, correlation_id: str | None, now: datetime) -> None:
    envelope = new_envelope(type_, version, payload, actor=actor, correlation_id=correlation_id,
                            occurred_at=now)
    await conn.execute("INSERT INTO outbox (routing_key, envelope) VALUES ($1, $2)",
                       routing_key, envelope.model_dump(mode="json"))
    await conn.execute("SELECT pg_notify('media_outbox', '')")


async def take_outbox(conn: asyncpg.Connection, limit: int) -> list:
    """The oldest unpublished events, locked for this transaction (replicas skip them)."""
    return await conn.fetch(
        """SELECT position, routing_key, envelope FROM outbox ORDER BY position LIMIT $1
           FOR UPDATE SKIP LOCKED""", limit)


async def drop_outbox(conn: asyncpg.Connection, positions: list[int]) -> None:
    await conn.execute("DELETE FROM outbox WHERE position = ANY($1::bigint[])", positions)
