"""One client WebSocket: its outbound queue and, per joined session, what it has been sent.

Invariant: for each joined session a connection is sent every stream event exactly once and in
seq order. ``last_seq`` is the highest seq sent; while a join (or a catch-up) is fetching the
backlog, live events wait in ``pending`` and are sent after it, dropping seqs already sent.

Outbound frames are encoded here (RFC 6455: unmasked, uncompressed text frames) and written
straight to the socket's transport: the frames queued in one loop iteration leave in one write,
with no task per connection and no await per frame. aiohttp still writes its own control frames
(ping, pong, close) to the same transport; every write is of whole frames, so they never
interleave inside one.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import WSCloseCode, web

from shared.ids import new_hex
from shared.logging import get_logger

from .auth import Principal

log = get_logger(__name__)


@dataclass
class SessionView:
    last_seq: int = 0
    # Live events held back while the backlog is fetched; None once live.
    pending: list[dict] | None = field(default_factory=list)


PING_FRAME = bytes((0x89, 0))  # a final ping with no payload


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping: a pong echoing its payload (at most 125 bytes)."""
    return bytes((0x8A, len(payload))) + payload


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (server to client) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Connection:
    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None,
                 principal: Principal, buffer_limit: int,
                 on_gap: Callable[[Connection, str], None]):
        self.id = new_hex()
        self.on_gap = on_gap
        self.ws = ws
        self.principal = principal
        self.user_id = principal.user_id
        self.sessions: dict[str, SessionView] = {}
        self._transport = transport
        self._buffer_limit = buffer_limit
        self._out: list[bytes] = []  # frames queued in this loop iteration
        # No transport: the client left during the handshake; the read loop ends at once.
        self.closed = transport is None
        # Keep-alive (see heartbeat.py): a frame came since the last look; a ping is owed.
        self.heard = True
        self.pinged = False
        # The connection's latest send (a request of shared.requests) and the sends waiting
        # for it, in order (see ws.send_message).
        self.last_send = None
        self.held_sends: list = []
        # Sessions being joined: the join's answer is awaited by a leave of the same session.
        self.joining: dict[str, asyncio.Future] = {}

    def send(self, frame: dict) -> None:
        self.send_framed(text_frame(orjson.dumps(frame)))

    def send_framed(self, data: bytes) -> None:
        """Queue a WebSocket frame already encoded (``text_frame``): an event's frame is
        encoded once and the same bytes go to every connection. Written at the end of this
        loop iteration."""
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        """Write the queued frames. A client whose unsent bytes pass the limit is cut off; it
        reconnects and resumes from its last seq, which is cheaper than buffering without
        bound."""
        out, self._out = self._out, []
        if self.closed or not out or self._transport.is_closing():
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._transport.get_write_buffer_size() > self._buffer_limit:
            log.warning("slow_client_disconnected", connection_id=self.id, user_id=self.user_id)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")

    def deliver(self, session_id: str, frame: dict, data: bytes) -> None:
        """Send a session event (``frame``, and ``data``: it as a ``text_frame``) unless it was
        already sent (seq) or the join is in progress."""
        view = self.sessions.get(session_id)
        if view is None:
            return
        if view.pending is not None:
            view.pending.append(frame)
            return
        seq = frame.get("seq")
        if seq is not None:
            if seq <= view.last_seq:
                return
            if seq > view.last_seq + 1:
                # Events went missing (the broker connection dropped): hold this one and
                # fetch what lies between from the store.
                view.pending = [frame]
                self.on_gap(self, session_id)
                return
            view.last_seq = seq
        self.send_framed(data)

    def send_backlog(self, session_id: str, frames: list[dict]) -> None:
        """Send stored events fetched for this connection, skipping seqs already sent."""
        view = self.sessions.get(session_id)
        if view is not None:
            self._send_new(view, frames)

    def _send_new(self, view: SessionView, frames: list[dict]) -> None:
        for frame in frames:
            seq = frame.get("seq")
            if seq is not None:
                if seq <= view.last_seq:
                    continue
                view.last_seq = seq
            self.send(frame)

    def go_live(self, session_id: str) -> None:
        """Send what arrived during the backlog fetch, in seq order, without doubles."""
        view = self.sessions.get(session_id)
        if view is None or view.pending is None:
            return
        pending, view.pending = view.pending, None
        pending.sort(key=lambda f: f.get("seq") or 0)
        self._send_new(view, pending)

    def close(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        """Send what is queued, then the close frame."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        asyncio.get_running_loop().create_task(
            self.ws.close(code=code, message=message.encode()))

    async def finish(self) -> None:
        """The socket is done: nothing more is written."""
        self.closed = True
        self._out = []
