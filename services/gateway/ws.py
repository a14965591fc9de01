"""``GET /ws``: one shape for every connection: authenticate, check Origin, prepare, register,
read frames, deregister in ``finally``.

A slow request never stalls the socket: each client frame is handled in its own task, except
``send_message``, the hot path, which joins the next request batch at once and is answered by
a callback when its reply comes back. Either way frames are started in arrival order, so one
connection's sends reach messaging in the order they were sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from shared.contracts.commands import GetEvents, JoinSession, MarkReceipt, SendMessage
from shared.contracts.errors import ErrorCode, ServiceError, not_found, unavailable
from shared.contracts.frames import (
    ClientFrame,
    JoinSessionFrame,
    LeaveSessionFrame,
    MarkDeliveredFrame,
    MarkReadFrame,
    PingFrame,
    SendMessageFrame,
    error_frame,
)
from shared.contracts.registry import CLIENT_FRAMES_BY_TYPE, first_error
from shared.ids import new_uuid_str
from shared.logging import get_logger
from shared.requests import result_of

from . import audit_events, rpc
from .appkeys import AUTH, BROKER, HUB, RATE_MESSAGES, SETTINGS
from .connection import Connection, pong_frame
from .hub import Hub
from .presence import PRESENCE
from .ratelimit import TokenBucket
from .ws_presence import PRESENCE_FRAME_HANDLERS

log = get_logger(__name__)
MAX_TASKS_PER_CONNECTION = 64


class Context:
    """What a frame handler may use."""

    def __init__(self, app: web.Application, conn: Connection):
        self.app = app
        self.conn = conn
        self.broker = app[BROKER]
        self.hub: Hub = app[HUB]
        self.presence = app[PRESENCE]
        self.rate_messages = app[RATE_MESSAGES]

    async def call(self, command):
        return await rpc.call(self.broker, command, self.conn.principal, None)


# ---- frame handlers --------------------------------------------------------------------------

async def join_session(frame: JoinSessionFrame, ctx: Context) -> None:
    """A leave_session of the same session that comes meanwhile waits for the join to be
    answered (frames run as tasks of their own), so the client sees both answered in order."""
    session_id = str(frame.session_id)
    conn = ctx.conn
    joined = asyncio.get_running_loop().create_future()
    conn.joining[session_id] = joined
    try:
        await _join(frame, ctx, session_id)
    finally:
        if conn.joining.get(session_id) is joined:
            del conn.joining[session_id]
        joined.set_result(None)


async def _join(frame: JoinSessionFrame, ctx: Context, session_id: str) -> None:
    conn, hub = ctx.conn, ctx.hub
    await hub.join(conn, session_id)
    try:
        state = await ctx.call(JoinSession(session_id=frame.session_id,
                                           after_seq=frame.after_seq))
    except ServiceError:
        await hub.leave(conn, session_id)
        raise
    # Who is online and typing (never waits long: presence being away does not block joins).
    seen = await ctx.app[PRESENCE].session_opened(
        conn, session_id, [p["user_id"] for p in state["participants"]])
    view = conn.sessions.get(session_id)
    if view is None:  # removed from the session meanwhile (hub._drop_removed)
        ctx.app[PRESENCE].session_closed(conn, session_id)
        raise not_found()
    view.last_seq = frame.after_seq if frame.after_seq is not None else state["last_seq"]
    conn.send({"type": "ack", "ref": frame.ref, "session_id": session_id})
    conn.send({
        "type": "joined", "session_id": session_id, "last_seq": state["last_seq"],
        "participants": state["participants"], "online_users": seen["online_users"],
        "receipts": state["receipts"], "typing": seen["typing"],
        "backlog_truncated": state["backlog_truncated"],
    })
    conn.send_backlog(session_id, state["backlog"])
    if state["backlog_truncated"]:
        # The client pages the rest from /events; live events continue from here on.
        view.last_seq = max(view.last_seq, state["last_seq"])
    conn.go_live(session_id)


async def leave_session(frame: LeaveSessionFrame, ctx: Context) -> None:
    joining = ctx.conn.joining.get(str(frame.session_id))
    if joining is not None:
        await asyncio.shield(joining)
    await ctx.hub.leave(ctx.conn, str(frame.session_id))
    ctx.app[PRESENCE].session_closed(ctx.conn, str(frame.session_id))
    ctx.conn.send({"type": "ack", "ref": frame.ref, "session_id": str(frame.session_id)})


def send_message(frame: SendMessageFrame, ctx: Context, data: str) -> None:
    """The hot path, without a task: the command joins the next request batch at once, and
    the reply's callback answers the client. The frame is validated; messaging validates the
    command again.

    One connection's messages keep the order they were sent in: a send waits while an earlier
    one of the connection is in a batch on its way (two batches in flight may reach two
    messaging replicas) or in the other lane (see ``_submit_send``), and leaves when that
    one is answered."""
    wait = ctx.rate_messages.take(ctx.conn.user_id)
    if wait:
        raise ServiceError(ErrorCode.RATE_LIMITED, "too many messages", retry_after=wait)
    conn = ctx.conn
    if conn.held_sends or _must_wait(conn.last_send, ctx.hub.receives(str(frame.session_id))):
        conn.held_sends.append((frame, data))
        return
    _submit_send(ctx, frame, data)


def _must_wait(earlier, by_events: bool) -> bool:
    """Whether a send must wait for the connection's previous one, ``earlier``."""
    return (earlier is not None and not earlier.answered
            and (earlier.sent or earlier.by_events != by_events))


def _submit_send(ctx: Context, frame: SendMessageFrame, data: str) -> None:
    session_id = str(frame.session_id)
    message_id = new_uuid_str()
    # Bound to the session's events, this gateway answers from the message's own event (the
    # sender's ack then leaves with its new_message, in one write); else from the reply. The
    # binding is held until then, even if the connection leaves the session meanwhile.
    by_events = ctx.hub.receives(session_id)
    if by_events:
        ctx.hub.hold(session_id)
    ctx.conn.last_send = rpc.submit_raw(ctx.broker, SendMessage.TYPE, SendMessage.VERSION, {
        "session_id": session_id, "message_id": message_id,
        "client_msg_id": frame.client_msg_id, "body": frame.body,
    }, ctx.conn.principal, None,
        partial(_message_sent, ctx, frame.ref, session_id, data, by_events),
        event_key=message_id if by_events else None)


def _message_sent(ctx: Context, ref: str | None, session_id: str, data: str, by_events: bool,
                  reply: dict) -> None:
    """The reply to a send (a closed connection sends nothing more: see Connection)."""
    if by_events:
        ctx.hub.release(session_id)
    try:
        result = result_of(reply)
    except ServiceError as exc:
        refuse(ctx, data, ref, exc)
    else:
        ctx.presence.stop_typing_now(ctx.conn, session_id)
        ctx.conn.send({"type": "ack", "ref": ref, "message": result["message"]})
    _send_held(ctx)


def _send_held(ctx: Context) -> None:
    """Submit the sends that waited for the one just answered, in order, as far as they may
    go now (those that follow one another in a lane leave in one batch)."""
    conn = ctx.conn
    while conn.held_sends and not conn.closed:
        frame, data = conn.held_sends[0]
        if _must_wait(conn.last_send, ctx.hub.receives(str(frame.session_id))):
            return
        del conn.held_sends[0]
        _submit_send(ctx, frame, data)


async def mark_receipt(frame: MarkDeliveredFrame | MarkReadFrame, ctx: Context) -> None:
    marker = "read" if frame.type == "mark_read" else "delivered"
    result = await ctx.call(MarkReceipt(session_id=frame.session_id, marker=marker,
                                        up_to_seq=frame.up_to_seq))
    ctx.conn.send({"type": "ack", "ref": frame.ref, **result})


async def ping(frame: PingFrame, ctx: Context) -> None:
    ctx.conn.send({"type": "pong", "ref": frame.ref})


# Frames handled at once, in the read loop: ``handler(frame, ctx, raw_text)``.
IMMEDIATE_FRAME_HANDLERS: dict[type[ClientFrame], Callable[[ClientFrame, Context, str], None]] = {
    SendMessageFrame: send_message,
}
# Frames handled in a task of their own.
FRAME_HANDLERS: dict[type[ClientFrame], Callable[[ClientFrame, Context], Awaitable[None]]] = {
    JoinSessionFrame: join_session,
    LeaveSessionFrame: leave_session,
    MarkDeliveredFrame: mark_receipt,
    MarkReadFrame: mark_receipt,
    PingFrame: ping,
    **PRESENCE_FRAME_HANDLERS,
}


# ---- the connection --------------------------------------------------------------------------

async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    origin = request.headers.get("Origin")
    if origin is not None and origin not in settings.allowed_origins:
        log.info("ws_origin_refused", origin=origin)
        raise ServiceError(ErrorCode.FORBIDDEN, "origin not allowed")
    principal = await app[AUTH].from_request(request, allow_query=True)
    if not app[BROKER].is_connected:  # no live subscriptions possible: say so before upgrading
        raise unavailable("message broker unavailable")

    # Pings are ours (heartbeat.py: one timer for every connection), and so are pongs.
    # aiohttp refuses a frame of max_msg_size bytes or more; only frames over the limit go.
    ws = web.WebSocketResponse(heartbeat=None, autoping=False,
                               max_msg_size=settings.ws_max_frame_bytes + 1, compress=False)
    await ws.prepare(request)
    hub: Hub = app[HUB]
    conn = Connection(ws, request.transport, principal, settings.ws_send_buffer_bytes,
                      hub.on_gap)
    ctx = Context(app, conn)
    frames = TokenBucket(settings.rate_frames_per_s, settings.rate_frames_burst)
    tasks: set[asyncio.Task] = set()
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, principal.expires_at - time.time()), conn.close,
        WSCloseCode.POLICY_VIOLATION, "token expired")
    try:
        await hub.add(conn)
    except ServiceError:
        expiry.cancel()
        await conn.finish()
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"try again")
        return ws
    app[PRESENCE].connected(conn)
    log.info("ws_connected", connection_id=conn.id, user_id=conn.user_id)
    conn.send({"type": "hello", "user_id": conn.user_id, "connection_id": conn.id})
    try:
        async for msg in ws:
            conn.heard = True
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.PING:
                    conn.send_framed(pong_frame(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    conn.send(error_frame(None, "bad_request", "frames must be JSON text"))
                continue
            if frames.take():
                log.warning("ws_flood_closed", connection_id=conn.id, user_id=conn.user_id)
                conn.close(WSCloseCode.POLICY_VIOLATION, "rate limit exceeded")
                break
            handling = take_frame(msg.data, ctx)
            if handling is None:
                continue  # answered, or a send on its way
            while len(tasks) >= MAX_TASKS_PER_CONNECTION:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(handling)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        expiry.cancel()
        for task in tasks:
            task.cancel()
        app[PRESENCE].disconnected(conn)
        await hub.remove(conn)
        await conn.finish()
        if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            log.warning("ws_frame_too_big", connection_id=conn.id, user_id=conn.user_id)
        log.info("ws_disconnected", connection_id=conn.id, user_id=conn.user_id,
                 code=ws.close_code)
    return ws


def take_frame(data: str, ctx: Context) -> Coroutine[Any, Any, None] | None:
    """Parse and validate a client frame and start on it: a send at once (see
    ``send_message``), any other frame as the coroutine that handles it, which the caller runs
    as a task (tasks start in arrival order). A frame refused here is answered here."""
    ref = None
    try:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ServiceError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
        if not isinstance(raw, dict):
            raise ServiceError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
        ref = raw.get("ref") if isinstance(raw.get("ref"), str) else None
        cls = CLIENT_FRAMES_BY_TYPE.get(raw.get("type"))
        if cls is None or (cls not in FRAME_HANDLERS and cls not in IMMEDIATE_FRAME_HANDLERS):
            raise ServiceError(ErrorCode.INVALID, f"unknown frame type {raw.get('type')!r}")
        try:  # strict: a number sent as text, or true for 1, is the wrong type
            frame = cls.model_validate_json(data, strict=True)
        except ValidationError as exc:
            raise ServiceError(ErrorCode.INVALID, first_error(exc)) from None
        if cls is not PingFrame:  # an app's keep-alive pings are not the user's activity
            ctx.presence.touch(ctx.conn)
        immediate = IMMEDIATE_FRAME_HANDLERS.get(cls)
        if immediate is not None:
            immediate(frame, ctx, data)
            return None
        return _handle(FRAME_HANDLERS[cls](frame, ctx), ctx, data, ref)
    except ServiceError as exc:
        refuse(ctx, data, ref, exc)
    except Exception:
        _failed(ctx, ref)
    return None


async def _handle(handling: Awaitable[None], ctx: Context, data: str, ref: str | None) -> None:
    try:
        await handling
    except ServiceError as exc:
        refuse(ctx, data, ref, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        _failed(ctx, ref)


def _failed(ctx: Context, ref: str | None) -> None:
    """A frame's handler broke (logged with its traceback): the client may try again."""
    log.exception("ws_frame_failed", connection_id=ctx.conn.id)
    ctx.conn.send(error_frame(ref, "unavailable", "internal error, try again", 1.0))


def refuse(ctx: Context, data: str, ref: str | None, exc: ServiceError) -> None:
    """Answer a refused frame with its error (and audit a denial)."""
    log.info("ws_frame_refused", connection_id=ctx.conn.id, user_id=ctx.conn.user_id,
             code=exc.code.value, reason=exc.message)
    ctx.conn.send(error_frame(ref, exc.code.value, exc.message, exc.retry_after))
    audit_events.frame_refused(ctx.app, ctx.conn.principal.actor, data, exc)


async def fetch_events(app: web.Application, conn: Connection, session_id: str, after_seq: int
                       ) -> tuple[list[dict], bool]:
    result = await rpc.call(app[BROKER], GetEvents(session_id=session_id, after_seq=after_seq,
                                                   limit=1000), conn.principal, None)
    return result["events"], result["has_more"]
