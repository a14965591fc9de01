"""Fan-out: which connections of this gateway see which session's events.

This instance has one exclusive queue, ``gateway.<instance>``. It is bound to the shard key
of a session (``shared.topology.session_binding``) while at least one of its connections has
joined a session of that shard, and to a user's shard key while a user of that shard has a
connection here; events of sessions and users it does not serve are dropped by their ids.
An AMQP message is a batch of event envelopes (possibly of many sessions); each event is turned
into its frame once and queued on every joined connection.

User-level delivery: an envelope may name ``recipients`` (user ids). Their connections that
have *not* joined the event's session get the event's user-level frame: a ``notification`` for
a new message, the ``participant_added`` / ``participant_removed`` frame for a membership
change. Joined connections get the session frame instead, never both. An event about no
session (``presence_changed``) reaches every connection of its recipients.

A session event whose payload has ``exclude_user_id`` is not sent to that user's connections
(typing and user_joined / user_left are never echoed to their subject).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from shared.broker import Broker
from shared.contracts.errors import ServiceError, unavailable
from shared.contracts.frames import frame_from_event, user_frame
from shared.logging import get_logger
from shared.topology import EVENTS, session_binding, user_binding

from .connection import Connection, SessionView, text_frame

log = get_logger(__name__)

# fetch_events(connection, session_id, after_seq) -> (frames, has_more)
FetchEvents = Callable[[Connection, str, int], Awaitable[tuple[list[dict], bool]]]


class Hub:
    def __init__(self, broker: Broker, instance_id: str):
        self.broker = broker
        self.queue_name = f"gateway.{instance_id}"
        self.queue: AbstractQueue | None = None
        self.connections: set[Connection] = set()
        self.joined: dict[str, set[Connection]] = defaultdict(set)
        self.users: dict[str, set[Connection]] = defaultdict(set)
        self._bound: set[str] = set()  # binding keys bound now
        self._needed: dict[str, int] = {}  # binding key -> sessions and users here needing it
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetch_events: FetchEvents | None = None
        self._tasks: set[asyncio.Task] = set()
        # Told when a removed participant's connection is dropped from a session (presence).
        self.on_removed: Callable[[Connection, str], None] | None = None

    async def start(self, fetch_events: FetchEvents) -> None:
        self.fetch_events = fetch_events
        # A channel of its own: queue.bind is a slow, synchronous broker operation, and on the
        # publishing channel a storm of joins would hold back every publish's confirm.
        channel = await self.broker.connection.channel(publisher_confirms=False)
        self.queue = await self.broker.declare_exclusive(self.queue_name, channel)
        await self.broker.consume_raw(self.queue, self.on_events)
        self.broker.connection.reconnect_callbacks.add(self._on_reconnect)

    # ---- membership of this instance ------------------------------------------------------

    async def add(self, conn: Connection) -> None:
        """Register a connection; returns once its user's events are routed here."""
        self.connections.add(conn)
        if not self.users[conn.user_id]:
            self._count(user_binding(conn.user_id), +1)
        self.users[conn.user_id].add(conn)
        await self._sync(user_binding(conn.user_id))

    async def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for session_id in list(conn.sessions):
            await self.leave(conn, session_id)
        members = self.users.get(conn.user_id)
        if members is not None and conn in members:
            members.discard(conn)
            if not members:
                del self.users[conn.user_id]
                self._count(user_binding(conn.user_id), -1)
            await self._sync(user_binding(conn.user_id))

    async def join(self, conn: Connection, session_id: str) -> None:
        """Register the connection (its view starts in backlog mode) and make sure the queue
        is bound before the caller fetches the backlog, so nothing falls between the two."""
        conn.sessions[session_id] = conn.sessions.get(session_id) or SessionView()
        if not self.joined[session_id]:
            self._count(session_binding(session_id), +1)
        self.joined[session_id].add(conn)
        try:
            await self._sync(session_binding(session_id))
        except BaseException:
            await self.leave(conn, session_id)
            raise

    async def leave(self, conn: Connection, session_id: str) -> None:
        conn.sessions.pop(session_id, None)
        members = self.joined.get(session_id)
        if members is not None and conn in members:
            members.discard(conn)
            if not members:
                del self.joined[session_id]
                self._count(session_binding(session_id), -1)
            await self._sync(session_binding(session_id))

    def receives(self, session_id: str) -> bool:
        """Whether this instance's queue is bound to the session's events."""
        return session_binding(session_id) in self._bound

    def hold(self, session_id: str) -> None:
        """Keep the session's events coming while a send answered by its event is out (its
        connection may leave the session, the last here to do so, before the event comes)."""
        self._count(session_binding(session_id), +1)

    def release(self, session_id: str) -> None:
        key = session_binding(session_id)
        self._count(key, -1)
        if not self._needed.get(key):
            self._spawn(self._sync(key))

    # ---- bindings: one per shard key, bound while a session or user here needs it --------

    def _count(self, key: str, change: int) -> None:
        """Sessions joined here and users connected here that need ``key`` (kept in step
        with ``joined`` and ``users``, before any await)."""
        needed = self._needed.get(key, 0) + change
        if needed:
            self._needed[key] = needed
        else:
            self._needed.pop(key, None)

    async def _sync(self, key: str) -> None:
        """Bind or unbind ``key`` as it is needed now; returns once a needed key is bound."""
        async with self._lock(key):
            if self._needed.get(key):
                if key not in self._bound:
                    await self._bind(key)
                    self._bound.add(key)
            elif key in self._bound:
                self._bound.discard(key)
                await self._unbind(key)
        if not self._needed.get(key) and key not in self._bound:
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]

    async def _bind(self, key: str) -> None:
        try:
            await self.queue.bind(self.broker.exchanges[EVENTS], key)
        except Exception as exc:  # the broker is away: the client retries
            raise unavailable("message broker unavailable") from exc

    async def _unbind(self, key: str) -> None:
        try:
            await self.queue.unbind(self.broker.exchanges[EVENTS], key)
        except Exception as exc:  # events for it are ignored anyway
            log.warning("unbind_failed", routing_key=key, error=repr(exc))

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # ---- events in ------------------------------------------------------------------------

    async def on_events(self, message: AbstractIncomingMessage) -> None:
        try:
            envelopes = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            log.error("malformed_event_message")
            return
        for envelope in envelopes:
            type_ = envelope.get("type", "")
            payload = envelope.get("payload") or {}
            session_id = payload.get("session_id")
            members = self.joined.get(session_id) if session_id else None
            if members:
                frame = frame_from_event(type_, payload)
                if frame is not None:
                    data = text_frame(orjson.dumps(frame))
                    # Presence events are never echoed to their subject (the typist).
                    exclude = payload.get("exclude_user_id")
                    for conn in tuple(members):
                        if exclude is None or conn.user_id != exclude:
                            conn.deliver(session_id, frame, data)
                if type_ == "participant_removed":
                    self._drop_removed(session_id, payload["user_id"])
            if type_ == "message_sent":
                # A send of ours awaiting this event is answered by it (shared.requests).
                message = payload["message"]
                self.broker.requests.answer_from_event(message["id"],
                                                       {"message": message, "created": True})
            recipients = envelope.get("recipients")
            if recipients:
                self._deliver_to_users(type_, payload, session_id, recipients)

    def _deliver_to_users(self, type_: str, payload: dict, session_id: str | None,
                          recipients: list[str]) -> None:
        # Usually every recipient's connection here has joined the session and got the
        # session frame: the user-level frame is only made for one that has not.
        data = None
        for user_id in recipients:
            for conn in tuple(self.users.get(user_id, ())):
                if session_id not in conn.sessions:
                    if data is None:
                        frame = user_frame(type_, payload)
                        if frame is None:
                            return
                        data = text_frame(orjson.dumps(frame))
                    conn.send_framed(data)

    def _drop_removed(self, session_id: str, user_id: str) -> None:
        """A removed participant stops receiving the session at once (the removal itself was
        just delivered to them)."""
        for conn in tuple(self.joined.get(session_id, ())):
            if conn.user_id == user_id:
                self._spawn(self.leave(conn, session_id))
                if self.on_removed is not None:
                    self.on_removed(conn, session_id)

    # ---- catching up after a gap ----------------------------------------------------------

    def on_gap(self, conn: Connection, session_id: str) -> None:
        self._spawn(self.catch_up(conn, session_id))

    async def catch_up(self, conn: Connection, session_id: str) -> None:
        """Fetch from the store everything after what the connection was last sent, then
        release the live events held meanwhile."""
        view = conn.sessions.get(session_id)
        if view is None:
            return
        if view.pending is None:
            view.pending = []
        try:
            while not conn.closed and session_id in conn.sessions:
                frames, has_more = await self.fetch_events(conn, session_id, view.last_seq)
                self._answer_sends(frames)
                conn.send_backlog(session_id, frames)
                if not has_more:
                    break
        except ServiceError as exc:
            # The store is unreachable: the client must resume by itself.
            log.warning("catch_up_failed", connection_id=conn.id, error=exc.message)
            conn.close(1011, "please reconnect")
            return
        conn.go_live(session_id)

    def _answer_sends(self, frames: list[dict]) -> None:
        """Sends of ours waiting for their event (lost while the broker was away) are
        answered from the store's copy."""
        for frame in frames:
            if frame["type"] == "new_message":
                self.broker.requests.answer_from_event(
                    frame["message"]["id"], {"message": frame["message"], "created": True})

    def _on_reconnect(self, *_args) -> None:
        """The broker connection came back: events published meanwhile never reached our
        (re-created) queue. Catch every joined connection up from the store."""
        log.info("broker_reconnected_catching_up", connections=len(self.connections))
        for conn in tuple(self.connections):
            for session_id in tuple(conn.sessions):
                self._spawn(self.catch_up(conn, session_id))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
