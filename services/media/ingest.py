"""The claim check: take an upload from quarantine, decide what it is, promote it, record it,
and have messaging create the message.

Order, and what a crash at each step leaves (nothing half-made is ever visible):

1. fetch ``quarantine/<attachment_id>`` into a temp file (hash and size must match what the
   gateway counted) and probe it; a refusal deletes the quarantine object, records an
   ``attachment_rejected`` event, and answers 415/422: nothing else was written.
2. insert the row as ``processing`` (it names the keys), write the object (and thumbnail) under
   ``<session>/<user>/<attachment>/<name>``. A crash here leaves a ``processing`` row: a retry
   of the upload (same client_msg_id, same bytes) resumes under the same ids; the sweeper
   deletes what is left after ``media_stale_after_s``.
3. mark the row ``stored`` with its metadata and the ``attachment_stored`` event (one
   transaction). From here the attachment is complete; only its message may be missing.
4. ask messaging to append the message (request/reply, idempotent by client_msg_id), then mark
   the row ``linked``. A crash between 3 and 4 is finished by a retry or by the sweeper, which
   sends the same idempotent command.
5. delete the quarantine object (always, at the end).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import asyncpg

from shared import faults
from shared.contracts.commands import SendAttachmentMessage
from shared.contracts.envelope import Actor, Envelope, new_envelope
from shared.contracts.errors import ErrorCode, ServiceError, unavailable
from shared.contracts.media import IngestUpload, attachment_key, quarantine_key
from shared.logging import get_logger
from shared.s3 import ObjectMissing, StorageError

from . import domain, probe, store
from .deps import Deps

log = get_logger(__name__)


async def ingest(cmd: IngestUpload, envelope: Envelope, deps: Deps) -> dict:
    actor = envelope.actor
    try:
        async with deps.pool.acquire() as conn:
            row = await store.find_by_client_msg_id(conn, cmd.session_id, actor.user_id,
                                                    cmd.client_msg_id)
        try:
            decision = domain.retry_decision(store.existing_of(row), cmd.sha256)
        except ServiceError as exc:
            await record_rejection(cmd, envelope, exc, deps)
            raise
        if decision == "complete":
            return await complete(row, deps, envelope.correlation_id)
        return await promote(cmd, envelope, row, deps)
    finally:
        await _forget(deps, quarantine_key(cmd.attachment_id))


async def promote(cmd: IngestUpload, envelope: Envelope, previous, deps: Deps) -> dict:
    actor = envelope.actor
    attachment_id = previous["id"] if previous else cmd.attachment_id
    message_id = previous["message_id"] if previous else cmd.message_id
    with tempfile.TemporaryDirectory(prefix="ingest-", dir=deps.work_dir) as tmp:
        workdir = Path(tmp)
        upload = workdir / "upload"
        try:
            fetched = await deps.objects.fetch_to_file(
                quarantine_key(cmd.attachment_id), upload, deps.max_bytes)
        except ObjectMissing:
            raise unavailable("the upload is no longer in quarantine: send it again") from None
        except StorageError as exc:
            log.warning("quarantine_fetch_failed", error=str(exc))
            raise unavailable("file storage is unavailable") from None
        try:
            if (fetched.sha256, fetched.size) != (cmd.sha256, cmd.size):
                raise ServiceError(ErrorCode.INVALID,
                                   "the stored upload does not match what was received")
            probed = await asyncio.get_running_loop().run_in_executor(
                deps.probe_pool, probe.probe, upload, cmd.purpose, deps.limits, workdir)
        except ServiceError as exc:
            if previous is not None:
                await discard(previous, deps)
            await record_rejection(cmd, envelope, exc, deps)
            raise
        filename = domain.sanitise_filename(cmd.filename, probed.content_type)
        key = domain.object_key(cmd.session_id, actor.user_id, attachment_id, filename)
        thumb = (domain.thumbnail_key(cmd.session_id, actor.user_id, attachment_id)
                 if probed.thumbnail else None)
        async with deps.pool.acquire() as conn:
            if previous is not None:  # a try that died half-way: start it over, same ids
                await _delete_objects(deps, previous)
                await store.delete_rows(conn, [attachment_id])
            if not await store.insert_processing(
                    conn, attachment_id=attachment_id, session_id=cmd.session_id, actor=actor,
                    client_msg_id=cmd.client_msg_id, message_id=message_id,
                    purpose=cmd.purpose, sha256=cmd.sha256, object_key=key,
                    correlation_id=envelope.correlation_id, now=deps.clock()):
                raise unavailable("this upload is already being processed: try again shortly")
        try:
            await deps.objects.put_file(key, probed.path, probed.content_type)
            if thumb:
                await deps.objects.put_file(thumb, probed.thumbnail, "image/jpeg")
        except StorageError as exc:
            log.warning("object_write_failed", error=str(exc), attachment_id=str(attachment_id))
            raise unavailable("file storage is unavailable") from None
    faults.crash_point("media_crash_after_objects")
    now = deps.clock()
    async with deps.pool.acquire() as conn, conn.transaction():
        row = await store.mark_stored(
            conn, attachment_id, object_key=key, thumbnail_key=thumb, kind=probed.kind,
            content_type=probed.content_type, filename=filename, size=probed.size,
            width=probed.width, height=probed.height, duration_ms=probed.duration_ms,
            waveform=probed.waveform, now=now)
        if row is None:
            raise unavailable("the upload was cleaned up while it was processed: send it again")
        await store.add_outbox(conn, attachment_key(attachment_id, "stored"),
                               "attachment_stored", 1, _fact(row, None), actor=actor,
                               correlation_id=envelope.correlation_id, now=now)
    deps.wake_outbox()
    faults.crash_point("media_crash_after_stored")
    log.info("attachment_stored", attachment_id=str(attachment_id), kind=probed.kind,
             size=probed.size, correlation_id=envelope.correlation_id)
    return await complete(row, deps, envelope.correlation_id)


async def complete(row, deps: Deps, correlation_id: str | None) -> dict:
    """Have messaging append the message for a stored attachment (idempotent), then link it."""
    command = SendAttachmentMessage(
        session_id=row["session_id"], message_id=row["message_id"],
        client_msg_id=row["client_msg_id"], kind=domain.message_kind(row["purpose"], row["kind"]),
        attachment=store.attachment_view(row))
    envelope = new_envelope(command.TYPE, command.VERSION, command.model_dump(mode="json"),
                            actor=Actor(user_id=row["uploader_id"], role=row["uploader_role"]),
                            correlation_id=correlation_id)
    try:
        result = await deps.broker.request(envelope, routing_key=command.TYPE)
    except ServiceError as exc:
        if exc.code is not ErrorCode.UNAVAILABLE:
            await discard(row, deps)  # refused: no message will ever reference these objects
        raise
    message = result["message"]
    if (message.get("attachment") or {}).get("id") != str(row["id"]):
        await discard(row, deps)  # the client_msg_id names an earlier message (deleted since)
        return result
    async with deps.pool.acquire() as conn:
        await store.mark_linked(conn, row["id"], message["seq"], deps.clock())
    return result


async def discard(row, deps: Deps) -> None:
    """Delete an attachment's objects, then its row (a row stays while its objects may)."""
    try:
        await _delete_objects(deps, row)
    except StorageError as exc:
        log.warning("discard_postponed", attachment_id=str(row["id"]), error=str(exc))
        return
    async with deps.pool.acquire() as conn:
        await store.delete_rows(conn, [row["id"]])


async def record_rejection(cmd: IngestUpload, envelope: Envelope, exc: ServiceError,
                           deps: Deps) -> None:
    log.info("upload_rejected", attachment_id=str(cmd.attachment_id), code=exc.code.value,
             reason=exc.message, correlation_id=envelope.correlation_id)
    try:
        async with deps.pool.acquire() as conn:
            await store.add_outbox(
                conn, attachment_key(cmd.attachment_id, "rejected"), "attachment_rejected", 1,
                {"session_id": str(cmd.session_id), "attachment_id": str(cmd.attachment_id),
                 "user_id": envelope.actor.user_id,
                 "reason": f"{exc.code.value}: {exc.message}"[:200]},
                actor=envelope.actor, correlation_id=envelope.correlation_id, now=deps.clock())
        deps.wake_outbox()
    except (OSError, asyncpg.PostgresError) as err:
        log.warning("rejection_not_recorded", error=repr(err))


def _fact(row, reason: str | None) -> dict:
    return {"session_id": str(row["session_id"]), "attachment_id": str(row["id"]),
            "user_id": row["uploader_id"], "reason": reason}


async def _delete_objects(deps: Deps, row) -> None:
    thumb = row["thumbnail_key"] or domain.thumbnail_key(row["session_id"], row["uploader_id"],
                                                         row["id"])
    await deps.objects.delete(row["object_key"], thumb)


async def _forget(deps: Deps, key: str) -> None:
    try:
        await deps.objects.delete(key)
    except StorageError as exc:  # the sweeper deletes old quarantine objects
        log.warning("quarantine_delete_failed", key=key, error=str(exc))
