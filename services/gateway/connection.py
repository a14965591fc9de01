"""One client WebSocket: its outbound queue and, per joined session, what it has been sent.

Invariant: for each joined session a connection is sent every stream event exactly once and in
seq order. ``last_seq`` is the highest seq sent; while a join (or a catch-up) is fetching the
backlog, live events wait in ``pending`` and are sent after it, dropping seqs already sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import WSCloseCode, web

from shared.logging import get_logger

from .auth import Principal

log = get_logger(__name__)


@dataclass
class SessionView:
    last_seq: int = 0
    # Live events held back while the backlog is fetched; None once live.
    pending: list[dict] | None = field(default_factory=list)


class Connection:
    def __init__(self, ws: web.WebSocketResponse, principal: Principal, queue_limit: int,
                 on_gap: Callable[[Connection, str], None]):
        self.id = uuid.uuid4().hex
        self.on_gap = on_gap
        self.ws = ws
        self.principal = principal
        self.sessions: dict[str, SessionView] = {}
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queue_limit = queue_limit
        self._writer = asyncio.create_task(self._write_loop())
        self.closed = False

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    def send(self, frame: dict) -> None:
        self.send_text(orjson.dumps(frame).decode())

    def send_text(self, text: str) -> None:
        """Queue a frame. A client that falls this far behind is cut off; it reconnects and
        resumes from its last seq, which is cheaper than buffering without bound."""
        if self.closed:
            return
        if self._queue.qsize() >= self._queue_limit:
            log.warning("slow_client_disconnected", connection_id=self.id, user_id=self.user_id)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")
            return
        self._queue.put_nowait(text)

    def deliver(self, session_id: str, frame: dict, text: str) -> None:
        """Send a session event unless it was already sent (seq) or the join is in progress."""
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
        self.send_text(text)

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
        if self.closed:
            return
        self.closed = True
        self._queue.put_nowait(None)
        asyncio.get_running_loop().create_task(
            self.ws.close(code=code, message=message.encode()))

    async def _write_loop(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                if text is None:
                    return
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the read loop ends the connection
        except asyncio.CancelledError:
            pass

    async def finish(self) -> None:
        self.closed = True
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
