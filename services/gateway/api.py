"""The HTTP API of the SPEC. Every handler: authenticate, validate at the edge, call the owning
service, shape the answer. ``ROUTES`` lists every endpoint at a glance."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from shared.contracts.base import Contract
from shared.contracts.commands import (
    AddParticipant,
    CreateSession,
    DeleteMessage,
    GetEvents,
    GetMessages,
    GetSession,
    ListSessions,
    MarkReceipt,
    RemoveParticipant,
    SendMessage,
)
from shared.contracts.errors import ErrorCode, ServiceError, not_found
from shared.contracts.fields import USER_ID_PATTERN
from shared.contracts.http import (
    AddParticipantBody,
    CreateSessionBody,
    EventsQuery,
    ListSessionsQuery,
    MessagesQuery,
    SendMessageBody,
)
from shared.contracts.media import EraseMessageAttachments, ForgetParticipant
from shared.contracts.registry import error_list, first_error
from shared.logging import get_logger

from . import rpc
from .appkeys import AUTH, BROKER, RATE_MESSAGES
from .auth import Principal
from .errors import REQUEST_ID

log = get_logger(__name__)

USER_ID = re.compile(USER_ID_PATTERN)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def principal_of(request: web.Request) -> Principal:
    return await request.app[AUTH].from_request(request)


async def read_body(request: web.Request, model: type[Contract]) -> Contract:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ServiceError(ErrorCode.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ServiceError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    return validate(model, data, strict=True)


def read_query(request: web.Request, model: type[Contract]) -> Contract:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise ServiceError(ErrorCode.INVALID, f"{key}: given more than once")
        data[key] = values[0]
    return validate(model, data)


def validate(model: type[Contract], data: dict, *, strict: bool = False) -> Contract:
    """``strict`` for JSON, whose values have their types (a query string's are all text)."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise ServiceError(ErrorCode.INVALID, first_error(exc), {"errors": error_list(exc)}) \
            from None


def session_id_of(request: web.Request) -> uuid.UUID:
    """A path id that is not a UUID names no session: 404, as for any unknown id."""
    try:
        return uuid.UUID(request.match_info["session_id"])
    except ValueError:
        raise not_found() from None


async def call(request: web.Request, principal: Principal, command: Contract) -> Any:
    return await rpc.call(request.app[BROKER], command, principal, request[REQUEST_ID])


# ---- sessions --------------------------------------------------------------------------------

async def create_session(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    body = await read_body(request, CreateSessionBody)
    session = await call(request, principal, CreateSession(
        session_id=uuid.uuid4(), participant_ids=body.participant_ids, title=body.title))
    return json_response(session, 201)


async def list_sessions(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    query = read_query(request, ListSessionsQuery)
    return json_response(await call(request, principal, ListSessions(
        limit=query.limit, cursor=query.cursor, all=query.all)))


async def get_session(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    return json_response(await call(request, principal, GetSession(session_id=session_id)))


# ---- messages --------------------------------------------------------------------------------

async def list_messages(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    query = read_query(request, MessagesQuery)
    return json_response(await call(request, principal, GetMessages(
        session_id=session_id, before_seq=query.before_seq, after_seq=query.after_seq,
        limit=query.limit)))


async def list_events(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    query = read_query(request, EventsQuery)
    return json_response(await call(request, principal, GetEvents(
        session_id=session_id, after_seq=query.after_seq, limit=query.limit)))


async def send_message(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    body = await read_body(request, SendMessageBody)
    wait = request.app[RATE_MESSAGES].take(principal.user_id)
    if wait:
        raise ServiceError(ErrorCode.RATE_LIMITED, "too many messages", retry_after=wait)
    result = await call(request, principal, SendMessage(
        session_id=session_id, message_id=uuid.uuid4(), client_msg_id=body.client_msg_id,
        body=body.body))
    return json_response(result["message"], 201 if result["created"] else 200)


def message_id_of(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["message_id"])
    except ValueError:
        raise not_found("message") from None


async def mark_read(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    result = await call(request, principal, MarkReceipt(message_id=message_id_of(request),
                                                        marker="read"))
    return json_response({k: result[k] for k in ("session_id", "user_id", "read_seq")})


async def delete_message(request: web.Request) -> web.Response:
    """Messaging deletes (and erases the text); a message with an attachment also has its
    objects erased by media before the answer, so its old URLs stop working at once. If media
    does not answer, the deletion stands and media erases them when its event comes."""
    principal = await principal_of(request)
    message_id = message_id_of(request)
    deleted = await call(request, principal, DeleteMessage(message_id=message_id))
    if deleted.get("attachment"):
        await _tell_media(request, principal, EraseMessageAttachments(message_id=message_id))
    return web.Response(status=204)


# ---- participants ----------------------------------------------------------------------------

async def add_participant(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    body = await read_body(request, AddParticipantBody)
    return json_response(await call(request, principal, AddParticipant(
        session_id=session_id, user_id=body.user_id)))


async def remove_participant(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    session_id = session_id_of(request)
    user_id = request.match_info["user_id"]
    if not USER_ID.fullmatch(user_id):
        raise not_found("participant")
    removed = await call(request, principal,
                         RemoveParticipant(session_id=session_id, user_id=user_id))
    # No attachment URL for them from the moment the removal is answered (media would also
    # learn it from the event, a little later).
    await _tell_media(request, principal, ForgetParticipant(
        session_id=session_id, user_id=user_id, seq=removed["seq"]))
    return web.Response(status=204)


async def _tell_media(request: web.Request, principal: Principal, command: Contract) -> None:
    """Have media apply a change before the client is answered. If media does not answer,
    the change stands and media applies it when messaging's event comes."""
    try:
        await call(request, principal, command)
    except ServiceError as exc:
        log.warning("media_update_deferred", type=command.TYPE, error=exc.message)


ROUTES = [
    ("POST", "/api/chat/sessions", create_session),
    ("GET", "/api/chat/sessions", list_sessions),
    ("GET", "/api/chat/sessions/{session_id}", get_session),
    ("GET", "/api/chat/sessions/{session_id}/messages", list_messages),
    ("POST", "/api/chat/sessions/{session_id}/messages", send_message),
    ("GET", "/api/chat/sessions/{session_id}/events", list_events),
    ("POST", "/api/chat/sessions/{session_id}/participants", add_participant),
    ("DELETE", "/api/chat/sessions/{session_id}/participants/{user_id}", remove_participant),
    ("PUT", "/api/chat/messages/{message_id}/read", mark_read),
    ("DELETE", "/api/chat/messages/{message_id}", delete_message),
]
