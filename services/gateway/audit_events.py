"""Facts only the gateway knows, sent to the audit log (``shared.audit_facts``):

- ``auth.failed``: a missing or bad token, on HTTP or at the WebSocket handshake (outcome
  ``failed``; no actor, the reason in a few words; never the token).
- ``access.denied``: a refusal to touch a session or what is in it: 403, and the 404 a
  non-participant gets for a session, message or attachment (the gateway cannot tell "not yours"
  from "does not exist", and neither may the client). Outcome ``denied``, the caller as actor.

Recording never delays or fails the request: facts are queued and published in the background.
"""

from __future__ import annotations

import uuid

import orjson
from aiohttp import web

from shared.audit_facts import FactPublisher
from shared.contracts.envelope import Actor
from shared.contracts.errors import ErrorCode, ServiceError
from shared.logging import get_logger

from .appkeys import AUDIT_FACTS, AUTH, BROKER
from .errors import REQUEST_ID

log = get_logger(__name__)
# Path parameters that name something inside a session.
_SCOPED = ("session_id", "message_id", "attachment_id")


async def facts_ctx(app: web.Application):
    """``cleanup_ctx`` after the broker's: flushes pending facts before the broker closes."""
    app[AUDIT_FACTS] = FactPublisher(app[BROKER], "gateway")
    yield
    await app[AUDIT_FACTS].close()


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def _actor(request: web.Request) -> Actor | None:
    try:
        principal = await request.app[AUTH].from_request(request,
                                                         allow_query=request.path == "/ws")
    except ServiceError:
        return None
    return principal.actor


async def record_refusal(request: web.Request, exc: ServiceError) -> None:
    publisher = request.app.get(AUDIT_FACTS)
    if publisher is None:
        return
    correlation_id = request.get(REQUEST_ID)
    if exc.code == ErrorCode.UNAUTHENTICATED:
        publisher.record("auth.failed", "failed", correlation_id=correlation_id,
                         target_id=request.path[:200], reason=exc.message)
        return
    scoped = next((k for k in _SCOPED if k in request.match_info), None)
    if exc.code == ErrorCode.FORBIDDEN or (exc.code == ErrorCode.NOT_FOUND and scoped):
        target = request.match_info.get(scoped) if scoped else request.path
        session_id = _uuid(request.match_info["session_id"]) if scoped == "session_id" else None
        publisher.record("access.denied", "denied", actor=await _actor(request),
                         correlation_id=correlation_id, session_id=session_id,
                         target_id=(target or "")[:200], reason=exc.code.value)


@web.middleware
async def audit_middleware(request: web.Request, handler):
    """Inside ``errors_middleware``: sees the refusal before it becomes a response."""
    try:
        return await handler(request)
    except ServiceError as exc:
        if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND):
            try:
                await record_refusal(request, exc)
            except Exception:  # the audit never breaks a request
                log.exception("audit_fact_failed")
        raise


def frame_refused(app: web.Application, actor: Actor, data: str, exc: ServiceError) -> None:
    """A WebSocket frame refused with 403, or 404 for a session: ``access.denied``."""
    if exc.code not in (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND):
        return
    publisher = app.get(AUDIT_FACTS)
    try:
        raw = orjson.loads(data)
        session_id = _uuid(raw.get("session_id")) if isinstance(raw, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        session_id = None
    if publisher is None or (session_id is None and exc.code == ErrorCode.NOT_FOUND):
        return
    publisher.record("access.denied", "denied", actor=actor, correlation_id=uuid.uuid4().hex,
                     session_id=session_id, target_id=str(session_id) if session_id else None,
                     reason=exc.code.value)
