"""Uploads, voice messages and attachment downloads (SPEC capabilities 7 and 8).

``POST /api/chat/sessions/{id}/upload`` and ``/voice`` take ``multipart/form-data`` with the
field ``file`` and an optional ``client_msg_id``. The claim check:

1. authenticate, check that the caller is a participant (messaging; a stranger gets 404 before
   a byte is read);
2. stream the file part into ``quarantine/<attachment_id>`` of the bucket, counting and hashing
   as it arrives; one byte past ``CHAT_UPLOAD_MAX_BYTES`` stops the reading: 413, the multipart
   upload is aborted and nothing is stored. A body that ends early (a Content-Length that lies,
   a client that goes away or stalls) is a 400 and leaves nothing either. The declared
   Content-Type and the name are only passed along, never trusted;
3. ``media.ingest`` with the claim (key, size, sha256): media decides, stores and has messaging
   create the message: 201 with the message (200 when the same client_msg_id and bytes were
   stored before; 409 for other bytes; 415/422 for a type not allowed or a file that does not
   decode).

``GET /api/chat/attachments/{id}`` (``?thumbnail=1``, ``?redirect=0``): 302 to a signed URL
valid 5 minutes, or ``{"url", "expires_at"}``; 404 for anyone but participants and admins.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import hdrs, web
from pydantic import TypeAdapter, ValidationError

from shared.contracts.commands import GetSession
from shared.contracts.errors import ErrorCode, ServiceError, not_found
from shared.contracts.fields import ClientMsgId
from shared.contracts.media import (
    AttachmentQuery,
    GetAttachmentUrl,
    IngestUpload,
    quarantine_key,
)
from shared.logging import get_logger
from shared.s3 import ObjectStore, StorageError, StreamPipe

from . import rpc
from .api import call, json_response, principal_of, read_query, session_id_of
from .appkeys import BROKER, RATE_MESSAGES, SETTINGS
from .auth import Principal
from .errors import REQUEST_ID

log = get_logger(__name__)
OBJECTS = web.AppKey("objects", ObjectStore)
UPLOAD_SLOTS = web.AppKey("upload_slots", asyncio.Semaphore)
CHUNK = 64 * 1024
# Multipart framing around the file: boundaries, part headers, the client_msg_id field.
MULTIPART_SLACK = 64 * 1024
_CLIENT_MSG_ID = TypeAdapter(ClientMsgId)


async def media_ctx(app: web.Application):
    """``cleanup_ctx``: the S3 client of the quarantine uploads."""
    settings = app[SETTINGS]
    app[OBJECTS] = ObjectStore(settings)
    app[UPLOAD_SLOTS] = asyncio.Semaphore(settings.upload_concurrency)
    yield
    app[OBJECTS].close()


@dataclass
class Received:
    filename: str
    size: int
    sha256: str
    client_msg_id: str | None


def too_large(limit: int) -> ServiceError:
    return ServiceError(ErrorCode.TOO_LARGE, f"the file is larger than {limit} bytes",
                        {"max_bytes": limit})


def cut_short(reason: str) -> ServiceError:
    return ServiceError(ErrorCode.BAD_REQUEST, f"the upload did not arrive whole: {reason}")


async def upload(request: web.Request) -> web.Response:
    return await _upload(request, "upload")


async def voice(request: web.Request) -> web.Response:
    return await _upload(request, "voice")


async def _upload(request: web.Request, purpose: str) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    settings = request.app[SETTINGS]
    declared = request.content_length
    if declared is not None and declared > settings.upload_max_bytes + MULTIPART_SLACK:
        raise too_large(settings.upload_max_bytes)  # certain from the header alone
    wait = request.app[RATE_MESSAGES].take(principal.user_id)
    if wait:
        raise ServiceError(ErrorCode.RATE_LIMITED, "too many messages", retry_after=wait)
    await _check_poster(request, principal, session_id)
    attachment_id, message_id = uuid.uuid4(), uuid.uuid4()
    objects = request.app[OBJECTS]
    key = quarantine_key(attachment_id)
    try:
        async with request.app[UPLOAD_SLOTS]:
            received = await _receive(request, objects, key)
        result = await rpc.call(
            request.app[BROKER],
            IngestUpload(session_id=session_id, attachment_id=attachment_id,
                         message_id=message_id,
                         client_msg_id=received.client_msg_id or uuid.uuid4().hex,
                         purpose=purpose, filename=received.filename[:1024],
                         size=received.size, sha256=received.sha256),
            principal, request[REQUEST_ID], timeout=settings.media_ingest_timeout_s)
    except BaseException:
        await _forget(objects, key)  # media deletes it too; this covers what it never saw
        raise
    return json_response(result["message"], 201 if result["created"] else 200)


async def _check_poster(request: web.Request, principal: Principal, session_id: uuid.UUID
                        ) -> None:
    """Participants post; a stranger learns nothing (404), an admin who is not in the session
    may read it but not post (403), before any byte of the file is read."""
    session = await call(request, principal, GetSession(session_id=session_id))
    if principal.user_id not in {p["user_id"] for p in session["participants"]}:
        raise ServiceError(ErrorCode.FORBIDDEN, "admins post only in sessions they are in")


async def _receive(request: web.Request, objects: ObjectStore, key: str) -> Received:
    settings = request.app[SETTINGS]
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise ServiceError(ErrorCode.INVALID, "expected multipart/form-data with a field "
                                              "'file'") from None
    received: Received | None = None
    client_msg_id: str | None = None
    while True:
        part = await _guard(reader.next(), settings.upload_idle_timeout_s)
        if part is None:
            break
        if part.name == "client_msg_id":
            client_msg_id = await _read_field(part, settings.upload_idle_timeout_s)
        elif part.name == "file":
            if received is not None:
                raise ServiceError(ErrorCode.INVALID, "file: send one file per upload")
            received = await _stream_file(part, objects, key, settings)
        else:
            raise ServiceError(ErrorCode.INVALID, f"{part.name}: unknown field",
                               {"errors": [{"loc": [str(part.name)],
                                            "msg": "extra fields are not allowed"}]})
    if received is None:
        raise ServiceError(ErrorCode.INVALID, "file: field required")
    received.client_msg_id = client_msg_id
    return received


async def _guard(awaitable, timeout_s: float):
    """A read of the request body: a stall, a body cut short or malformed framing is a 400."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise cut_short(f"nothing received for {timeout_s:g} s") from None
    except (ValueError, AssertionError, RuntimeError, ConnectionError, EOFError,
            web.HTTPException) as exc:
        raise cut_short(str(exc) or exc.__class__.__name__) from None
    except Exception as exc:  # aiohttp's payload errors (connection lost mid-body, ...)
        if exc.__class__.__module__.startswith("aiohttp"):
            raise cut_short(str(exc) or exc.__class__.__name__) from None
        raise


async def _read_field(part, timeout_s: float) -> str:
    raw = b""
    while chunk := await _guard(part.read_chunk(1024), timeout_s):
        raw += chunk
        if len(raw) > 1024:
            raise ServiceError(ErrorCode.INVALID, "client_msg_id: too long")
    try:
        return _CLIENT_MSG_ID.validate_python(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValidationError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not UTF-8"
        raise ServiceError(ErrorCode.INVALID, f"client_msg_id: {reason}") from None


async def _stream_file(part, objects: ObjectStore, key: str, settings) -> Received:
    """Into the quarantine object as it arrives; the limit is enforced on the bytes counted,
    whatever the headers said."""
    limit = settings.upload_max_bytes
    pipe = StreamPipe(asyncio.get_running_loop(), timeout_s=settings.upload_idle_timeout_s + 5)
    storing = asyncio.ensure_future(objects.put_stream(key, pipe, "application/octet-stream"))
    storing.add_done_callback(lambda _: pipe.abort())
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := await _guard(part.read_chunk(CHUNK), settings.upload_idle_timeout_s):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            digest.update(chunk)
            try:
                await pipe.put(chunk)
            except BrokenPipeError:
                await storing  # raises the storage error
                raise
        await pipe.finish()
        await storing
    except BaseException as exc:
        pipe.fail(exc)
        await asyncio.gather(storing, return_exceptions=True)
        if isinstance(exc, StorageError):
            log.warning("quarantine_write_failed", error=str(exc))
            raise ServiceError(ErrorCode.UNAVAILABLE, "file storage is unavailable",
                               retry_after=2) from None
        raise
    # Browsers send the name raw (with %22 for quotes), aiohttp and others percent-encode it.
    return Received(unquote(filename_of(part)), size, digest.hexdigest(), None)


_QUOTED_FILENAME = re.compile(r';\s*filename="([^"]*)"', re.IGNORECASE)


def filename_of(part) -> str:
    """The part's file name as the client wrote it. Browsers quote it as it is, backslashes
    included (an old one sends a Windows path, ``C:\\Users\\al\\doc.pdf``), where aiohttp
    reads each backslash as an escape and drops it (``C:Usersaldoc.pdf``): a quoted name with
    a backslash is taken from the header as written, so the path can be cut off."""
    header = part.headers.get(hdrs.CONTENT_DISPOSITION, "")
    quoted = _QUOTED_FILENAME.search(header)
    if quoted and "\\" in quoted.group(1) and "filename*" not in header.lower():
        return quoted.group(1)
    return part.filename or ""


async def _forget(objects: ObjectStore, key: str) -> None:
    try:
        await objects.delete(key)
    except StorageError as exc:  # media's sweeper removes old quarantine objects
        log.warning("quarantine_delete_failed", key=key, error=str(exc))


# ---- downloads -------------------------------------------------------------------------------

async def get_attachment(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    try:
        attachment_id = uuid.UUID(request.match_info["attachment_id"])
    except ValueError:
        raise not_found("attachment") from None
    query = read_query(request, AttachmentQuery)
    result = await call(request, principal, GetAttachmentUrl(
        attachment_id=attachment_id, thumbnail=query.thumbnail))
    if not query.redirect:
        return json_response({"url": result["url"], "expires_at": result["expires_at"]})
    return web.Response(status=302, headers={"Location": result["url"],
                                             "Cache-Control": "no-store"})


ROUTES = [
    ("POST", "/api/chat/sessions/{session_id}/upload", upload),
    ("POST", "/api/chat/sessions/{session_id}/voice", voice),
    ("GET", "/api/chat/attachments/{attachment_id}", get_attachment),
]
