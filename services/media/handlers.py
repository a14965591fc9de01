"""Entry points of the media service.

- ``COMMAND_HANDLERS``: ``media.ingest`` (the claim check, see ``ingest.py``),
  ``media.get_attachment_url``, and what the gateway has media do before it answers a
  deletion or a removal (``media.erase_message_attachments``, ``media.forget_participant``).
  Each command of a batch runs concurrently and gets its own result or error; nothing is
  retried behind the caller's back (an unreachable store is a 503 and the client retries
  idempotently).
- ``EVENT_HANDLERS``: messaging's events that media keeps a projection of (membership) or acts
  on (``message_deleted``: the attachment's objects and metadata are erased). A batch applies in
  one transaction with its inbox rows; objects are deleted before it commits, so a failure
  retries the whole batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from shared.broker import TransientError
from shared.contracts.commands import GetSession
from shared.contracts.envelope import Envelope, failed, new_envelope, ok
from shared.contracts.errors import ErrorCode, ServiceError, not_found, unavailable
from shared.contracts.fields import rfc3339
from shared.contracts.media import (
    QUARANTINE_PREFIX,
    EraseMessageAttachments,
    ForgetParticipant,
    GetAttachmentUrl,
    IngestUpload,
    attachment_key,
)
from shared.contracts.registry import payload_of
from shared.db import UNREACHABLE
from shared.logging import get_logger
from shared.metrics import ENVELOPES_HANDLED
from shared.s3 import StorageError

from . import domain, store
from .deps import Deps
from .ingest import complete, discard, ingest

log = get_logger(__name__)


# ---- queries ---------------------------------------------------------------------------------

async def get_attachment_url(query: GetAttachmentUrl, envelope: Envelope, deps: Deps) -> dict:
    """A signed GET URL (5 minutes) for a participant or an admin; 404 for anyone else."""
    actor = envelope.actor
    async with deps.pool.acquire() as conn:
        row = await store.get(conn, query.attachment_id)
        if row is None or row["state"] == "processing":
            raise not_found("attachment")
        allowed = domain.may_read(actor.role, await store.membership(
            conn, row["session_id"], actor.user_id))
    if allowed is None:  # the projection has not seen this pair yet: ask the owner
        allowed = await _participant_per_messaging(row["session_id"], envelope, deps)
    if not allowed:
        raise not_found("attachment")
    if query.thumbnail:
        if row["thumbnail_key"] is None:
            raise not_found("thumbnail")
        key, kind, name, content_type = (row["thumbnail_key"], "image",
                                         f"thumbnail-{row['filename']}.jpg", "image/jpeg")
    else:
        key, kind, name, content_type = (row["object_key"], row["kind"], row["filename"],
                                         row["content_type"])
    now = deps.clock()
    url = deps.objects.presign_get(key, deps.url_ttl, {
        "response-content-disposition": domain.content_disposition(kind, name),
        "response-content-type": content_type})
    async with deps.pool.acquire() as conn:
        await store.add_outbox(
            conn, attachment_key(row["id"], "url_issued"), "attachment_url_issued", 1,
            {"session_id": str(row["session_id"]), "attachment_id": str(row["id"]),
             "user_id": actor.user_id, "reason": "thumbnail" if query.thumbnail else None},
            actor=actor, correlation_id=envelope.correlation_id, now=now)
    deps.wake_outbox()
    return {"url": url, "expires_at": rfc3339(now + deps.url_ttl),
            "inline": kind in domain.INLINE_KINDS}


async def _participant_per_messaging(session_id: uuid.UUID, envelope: Envelope,
                                     deps: Deps) -> bool:
    query = GetSession(session_id=session_id)
    try:
        await deps.broker.request(new_envelope(
            query.TYPE, query.VERSION, query.model_dump(mode="json"), actor=envelope.actor,
            correlation_id=envelope.correlation_id), routing_key=query.TYPE)
    except ServiceError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            return False
        raise
    return True


async def erase_message_attachments(command: EraseMessageAttachments, envelope: Envelope,
                                    deps: Deps) -> dict:
    """The message was deleted (messaging answered the gateway so): erase its attachment now,
    before the client is answered. Idempotent."""
    async with deps.pool.acquire() as conn, conn.transaction():
        erased = await _erase(conn, [command.message_id], deps)
    return {"erased": erased}


async def forget_participant(command: ForgetParticipant, envelope: Envelope, deps: Deps
                             ) -> dict:
    """The participant was removed (messaging answered the gateway so): no URL for them from
    now on, before the removal is answered."""
    async with deps.pool.acquire() as conn:
        await store.apply_membership(conn, [(command.session_id, command.user_id, False,
                                             command.seq)])
    return {}


COMMAND_HANDLERS: dict[type, Callable[[Any, Envelope, Deps], Awaitable[dict]]] = {
    IngestUpload: ingest,
    GetAttachmentUrl: get_attachment_url,
    EraseMessageAttachments: erase_message_attachments,
    ForgetParticipant: forget_participant,
}


async def handle_commands(envelopes: list[Envelope], deps: Deps) -> list[dict]:
    return list(await asyncio.gather(*(_handle_one(e, deps) for e in envelopes)))


async def _handle_one(envelope: Envelope, deps: Deps) -> dict:
    try:
        if envelope.actor is None:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "command has no actor")
        command = payload_of(envelope)
        handler = COMMAND_HANDLERS.get(type(command))
        if handler is None:
            raise ServiceError(ErrorCode.INVALID, f"media does not handle {envelope.type}")
        result = await handler(command, envelope, deps)
    except ServiceError as exc:
        ENVELOPES_HANDLED.labels(envelope.type, exc.code.value).inc()
        return failed(exc)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, StorageError) as exc:
        log.warning("store_unavailable", type=envelope.type, error=repr(exc),
                    correlation_id=envelope.correlation_id)
        ENVELOPES_HANDLED.labels(envelope.type, "unavailable").inc()
        return failed(unavailable("media storage is unavailable"))
    except Exception:
        log.exception("command_failed", type=envelope.type,
                      correlation_id=envelope.correlation_id)
        ENVELOPES_HANDLED.labels(envelope.type, "unavailable").inc()
        return failed(unavailable("internal error in the media service"))
    ENVELOPES_HANDLED.labels(envelope.type, "ok").inc()
    return ok(result)


# ---- events ----------------------------------------------------------------------------------

def _membership(envelope: Envelope) -> list[tuple[uuid.UUID, str, bool, int]]:
    p = envelope.payload
    session_id = uuid.UUID(str(p["session_id"]))
    if envelope.type == "session_created":
        return [(session_id, part["user_id"], True, 0) for part in p["participants"]]
    present = envelope.type == "participant_added"
    return [(session_id, p["user_id"], present, int(p["seq"]))]


EVENT_HANDLERS = {
    "session_created": _membership,
    "participant_added": _membership,
    "participant_removed": _membership,
    "message_deleted": None,  # collected and erased together, below
}


async def handle_events(envelopes: list[Envelope], deps: Deps) -> list[dict]:
    relevant = [e for e in envelopes if e.type in EVENT_HANDLERS]
    if relevant:
        try:
            await _apply_events(relevant, deps)
        except (*UNREACHABLE, StorageError) as exc:
            raise TransientError(str(exc)) from exc
    return [ok(None) for _ in envelopes]


async def _apply_events(envelopes: list[Envelope], deps: Deps) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        fresh = await store.new_in_inbox(conn, [e.message_id for e in envelopes])
        changes, deleted = [], []
        for e in envelopes:
            if e.message_id not in fresh:
                continue
            if e.type == "message_deleted":
                deleted.append(uuid.UUID(str(e.payload["message_id"])))
            else:
                changes += EVENT_HANDLERS[e.type](e)
        await store.apply_membership(conn, changes)
        if deleted:
            await _erase(conn, deleted, deps)


async def _erase(conn, message_ids: list[uuid.UUID], deps: Deps) -> int:
    """Delete the objects and rows of these messages' attachments (inside the caller's
    transaction; the objects go first, so a failure leaves the rows to try again)."""
    rows = await store.rows_for_messages(conn, message_ids)
    keys = [k for r in rows for k in (r["object_key"], r["thumbnail_key"]) if k]
    await deps.objects.delete(*keys)
    await store.delete_rows(conn, [r["id"] for r in rows])
    if rows:
        log.info("attachments_erased", count=len(rows))
    return len(rows)


# ---- sweeper ---------------------------------------------------------------------------------

async def sweep(deps: Deps, stale_after_s: float, quarantine_ttl_s: float) -> None:
    """Finish or clean up what a crash left: ``stored`` rows get their message (the same
    idempotent command), ``processing`` rows and old quarantine objects are deleted."""
    before = deps.clock() - timedelta(seconds=stale_after_s)
    async with deps.pool.acquire() as conn:
        stored = await store.unfinished(conn, "stored", before)
        processing = await store.unfinished(conn, "processing", before)
    for row in stored:
        try:
            await complete(row, deps, row["correlation_id"])
            log.info("sweeper_completed", attachment_id=str(row["id"]))
        except ServiceError as exc:
            log.warning("sweeper_complete_failed", attachment_id=str(row["id"]),
                        code=exc.code.value)
    for row in processing:
        await discard(row, deps)
        log.info("sweeper_discarded", attachment_id=str(row["id"]))
    old = await deps.objects.list_keys(
        QUARANTINE_PREFIX, deps.clock() - timedelta(seconds=quarantine_ttl_s))
    if old:
        await deps.objects.delete(*old)
        log.info("sweeper_quarantine_deleted", count=len(old))
