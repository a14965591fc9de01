"""The gateway's side of presence and typing: what it tells the presence service, and when.

- Connection opened / closed, a session opened / closed, activity after a quiet spell: one
  fire-and-forget command each, gathered for a few milliseconds and sent as one AMQP message
  (``presence.updates``, not persistent: the next heartbeat repairs a lost one).
- Heartbeat: every ``presence_heartbeat_s`` one ``presence.renew_leases`` listing every live
  connection of this gateway (with its open sessions, idle time and away flag). Presence lets
  the lease of a connection not listed lapse, so a gateway killed with ``kill -9`` turns its
  users offline by itself, and a presence that lost its Redis rebuilds from these lists.
- ``joined`` asks presence who is online and typing, waiting at most
  ``presence_join_timeout_ms``: without an answer the join goes on with what the gateway knows.
- Typing: ``typing_start`` is limited per connection and session (one per
  ``rate_typing_interval_s``); a message sent, a session left or the socket closed ends the
  connection's typing at once.

Pending updates are flushed before every request, so presence sees them in the order they
happened (one channel, one queue).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from shared.broker import Broker
from shared.contracts.base import Contract
from shared.contracts.envelope import Envelope, encode_batch, new_envelope
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.presence import (
    UPDATES_ROUTING_KEY,
    CloseSession,
    ConnectionActive,
    ConnectionClosed,
    ConnectionOpened,
    LiveConnection,
    OpenSession,
    RenewLeases,
    SetPresence,
    TypingStart,
    TypingStop,
)
from shared.logging import get_logger
from shared.topology import COMMANDS

from .appkeys import BROKER, HUB, SETTINGS
from .auth import Principal
from .connection import Connection
from .ratelimit import TokenBucket
from .settings import GatewaySettings

log = get_logger(__name__)
PRESENCE_JOIN_STATE = Counter(
    "chat_gateway_presence_join_state_total",
    "Joins whose presence answer (online, typing) was late (sent after joined) or unavailable",
    ["outcome"])

# Activity after this long without any is reported at once (so ``away`` ends at once); more
# frequent activity rides on the heartbeat.
ACTIVITY_REPORT_AFTER_S = 30.0
UPDATES_WINDOW_S = 0.005


@dataclass
class ConnPresence:
    """What this gateway knows of one connection's presence."""
    last_active: float                  # monotonic time of the client's last frame
    active: bool = True                 # a frame since the last heartbeat
    away: bool = False                  # the client said so
    typing: set[str] = field(default_factory=set)  # sessions it started typing in
    limits: dict[str, TokenBucket] = field(default_factory=dict)


class PresenceLink:
    def __init__(self, broker: Broker, settings: GatewaySettings):
        self.broker = broker
        self.settings = settings
        self.gateway_id = settings.instance_id
        self.conns: dict[str, tuple[Connection, ConnPresence]] = {}
        self._updates: list[Envelope] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._heartbeat: asyncio.Task | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self.flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- hooks called by the WebSocket handler --------------------------------------------

    def connected(self, conn: Connection) -> None:
        self.conns[conn.id] = (conn, ConnPresence(time.monotonic()))
        self._update(conn.principal, ConnectionOpened(connection_id=conn.id,
                                                      gateway_id=self.gateway_id))

    def disconnected(self, conn: Connection) -> None:
        entry = self.conns.pop(conn.id, None)
        if entry is None:
            return
        for session_id in sorted(entry[1].typing):
            self._update(conn.principal, TypingStop(session_id=session_id))
        self._update(conn.principal, ConnectionClosed(connection_id=conn.id))

    def touch(self, conn: Connection) -> None:
        """The client sent a frame (its own pings excepted)."""
        entry = self.conns.get(conn.id)
        if entry is None:
            return
        state, now = entry[1], time.monotonic()
        quiet_for = now - state.last_active
        state.last_active, state.active = now, True
        if quiet_for >= ACTIVITY_REPORT_AFTER_S and not state.away:
            self._update(conn.principal, ConnectionActive(connection_id=conn.id))

    async def session_opened(self, conn: Connection, session_id: str,
                             participants: list[str]) -> dict[str, list[str]]:
        """Tell presence (user_joined to the others) and get who is online and typing.

        Waits at most ``presence_join_timeout_ms``, then answers with what the gateway knows
        (the user alone). An answer that comes later, within the RPC timeout (a join storm
        after a gateway restart keeps presence busy), reaches the client as ``online_users``
        and ``typing_start`` frames after ``joined``: late, but never missing."""
        request = asyncio.ensure_future(self.request(
            conn.principal, OpenSession(session_id=session_id, connection_id=conn.id,
                                        participants=participants),
            self.settings.rpc_timeout_s))
        try:
            return await asyncio.wait_for(asyncio.shield(request),
                                          self.settings.presence_join_timeout_ms / 1000)
        except TimeoutError:
            self._tasks.add(request)
            request.add_done_callback(self._tasks.discard)
            request.add_done_callback(lambda done: self._late_join_state(conn, session_id, done))
            PRESENCE_JOIN_STATE.labels("late").inc()
        except ServiceError as exc:
            PRESENCE_JOIN_STATE.labels("unavailable").inc()
            log.warning("presence_join_state_unavailable", session_id=session_id,
                        connection_id=conn.id, error=exc.message)
        return {"online_users": [conn.user_id], "typing": []}

    def _late_join_state(self, conn: Connection, session_id: str, done: asyncio.Future) -> None:
        error = "cancelled" if done.cancelled() else done.exception()
        if error is not None:
            PRESENCE_JOIN_STATE.labels("unavailable").inc()
            log.warning("presence_join_state_unavailable", session_id=session_id,
                        connection_id=conn.id, error=repr(error))
            return
        if conn.closed or session_id not in conn.sessions:
            return
        seen = done.result()
        conn.send({"type": "online_users", "session_id": session_id,
                   "user_ids": sorted({*seen["online_users"], conn.user_id})})
        for user_id in seen["typing"]:
            conn.send({"type": "typing_start", "session_id": session_id, "user_id": user_id})

    def session_closed(self, conn: Connection, session_id: str) -> None:
        self.stop_typing_now(conn, session_id)
        self._update(conn.principal, CloseSession(session_id=session_id, connection_id=conn.id))

    def stop_typing_now(self, conn: Connection, session_id: str) -> None:
        """End the connection's typing in the session (a message was sent, the session left)."""
        entry = self.conns.get(conn.id)
        if entry is not None and session_id in entry[1].typing:
            entry[1].typing.discard(session_id)
            self._update(conn.principal, TypingStop(session_id=session_id))

    # ---- frames ---------------------------------------------------------------------------

    async def typing_start(self, conn: Connection, session_id: str) -> None:
        state = self._state(conn)
        wait = self._limit(state, session_id)
        if wait:
            raise ServiceError(ErrorCode.RATE_LIMITED, "too many typing events",
                               retry_after=round(wait, 3))
        # Typing from now on: a typing_stop sent right behind this frame ends this typing
        # (presence gets both in order), it is not a stop of nothing.
        state.typing.add(session_id)
        try:
            await self.request(conn.principal,
                               TypingStart(session_id=session_id,
                                           joined=session_id in conn.sessions),
                               self.settings.presence_timeout_s)
        except BaseException:
            state.typing.discard(session_id)
            raise

    async def typing_stop(self, conn: Connection, session_id: str) -> None:
        state = self._state(conn)
        if session_id in state.typing:
            state.typing.discard(session_id)
        else:
            # Not started here: a stop costs presence a request, so it counts as typing.
            wait = self._limit(state, session_id)
            if wait:
                raise ServiceError(ErrorCode.RATE_LIMITED, "too many typing events",
                                   retry_after=round(wait, 3))
        await self.request(conn.principal, TypingStop(session_id=session_id),
                           self.settings.presence_timeout_s)

    async def set_presence(self, conn: Connection, status: str) -> None:
        state = self._state(conn)
        await self.request(conn.principal, SetPresence(connection_id=conn.id, status=status),
                           self.settings.presence_timeout_s)
        state.away = status == "away"

    def _state(self, conn: Connection) -> ConnPresence:
        entry = self.conns.get(conn.id)
        if entry is None:
            raise ServiceError(ErrorCode.UNAVAILABLE, "connection is closing", retry_after=1.0)
        return entry[1]

    def _limit(self, state: ConnPresence, session_id: str) -> float:
        interval = self.settings.rate_typing_interval_s
        if interval <= 0:
            return 0.0
        bucket = state.limits.get(session_id)
        if bucket is None:
            bucket = state.limits[session_id] = TokenBucket(1.0 / interval, 1)
        return bucket.take()

    # ---- heartbeat ------------------------------------------------------------------------

    def renewal(self) -> RenewLeases:
        now = time.monotonic()
        live = []
        for conn, state in self.conns.values():
            live.append(LiveConnection(
                connection_id=conn.id, user_id=conn.user_id,
                idle_s=round(max(0.0, now - state.last_active), 3), active=state.active,
                away=state.away, sessions=sorted(conn.sessions)))
            state.active = False
        return RenewLeases(gateway_id=self.gateway_id, connections=live)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.presence_heartbeat_s)
            if not self.conns:
                continue
            renewal = self.renewal()
            self._updates.append(new_envelope(renewal.TYPE, renewal.VERSION,
                                              renewal.model_dump(mode="json")))
            await self.flush()

    # ---- sending --------------------------------------------------------------------------

    def _update(self, principal: Principal, command: Contract) -> None:
        self._updates.append(new_envelope(command.TYPE, command.VERSION,
                                          command.model_dump(mode="json"),
                                          actor=principal.actor))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                UPDATES_WINDOW_S, self._spawn_flush)

    def _spawn_flush(self) -> None:
        task = asyncio.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._updates = self._updates, []
        if not batch:
            return
        try:
            await self.broker.publish(COMMANDS, [UPDATES_ROUTING_KEY], encode_batch(batch),
                                      message_type=UPDATES_ROUTING_KEY, persistent=False,
                                      mandatory=False)
        except ServiceError as exc:  # the next heartbeat repairs what was lost
            log.warning("presence_updates_lost", updates=len(batch), error=exc.message)

    async def request(self, principal: Principal, command: Contract, wait_s: float) -> Any:
        if self._updates:
            await self.flush()  # what happened before reaches presence first
        envelope = new_envelope(command.TYPE, command.VERSION, command.model_dump(mode="json"),
                                actor=principal.actor)
        return await self.broker.request(envelope, routing_key=command.TYPE, timeout=wait_s)


PRESENCE = web.AppKey("presence", PresenceLink)


async def presence_ctx(app: web.Application):
    """``cleanup_ctx`` entry, after the broker's (it needs the broker, and closes first)."""
    link = PresenceLink(app[BROKER], app[SETTINGS])
    link.start()
    app[PRESENCE] = link
    app[HUB].on_removed = link.session_closed
    yield
    await link.close()
