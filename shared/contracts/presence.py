"""Presence and typing: the gateway's commands to the presence service, and the events it
publishes (SPEC capabilities 5 and 6).

Commands travel on ``chat.commands`` with routing keys ``presence.<command>``. Those that need
an answer (``typing_start``, ``typing_stop``, ``set_presence``, ``open_session``) go by
request/reply; the rest are fire-and-forget and the gateway sends them in batches, one AMQP
message per batch, with the routing key ``presence.updates`` (each envelope keeps its own type).
They are not persistent: a lost one is repaired by the next lease renewal (every gateway
heartbeat lists its live connections).

Events travel on ``chat.events``:

- ``user.<id>.presence_changed`` (one AMQP message, the recipients' keys in ``BCC``):
  ``{user_id, status, last_seen}``; the envelope's ``recipients`` are the users who share a
  session with ``user_id`` (the gateway's user-level routing, see ``services.gateway.hub``).
- ``session.<id>.typing_start|typing_stop|user_joined|user_left``:
  ``{session_id, user_id, exclude_user_id}``; the gateway never sends them to
  ``exclude_user_id`` (the typist, the one who joined or left).
- ``session.<id>.online_users``: ``{session_id, online}`` (participants connected, online or away).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from .base import Contract
from .fields import MAX_PARTICIPANTS, UserId

Status = Literal["online", "away", "offline"]
ConnectionId = str  # the gateway's connection id (hex)


class ConnectionOpened(Contract):
    """A WebSocket of ``actor`` opened on gateway ``gateway_id``."""
    TYPE = "presence.connection_opened"
    connection_id: ConnectionId = Field(min_length=1, max_length=64)
    gateway_id: str = Field(min_length=1, max_length=128)


class ConnectionClosed(Contract):
    TYPE = "presence.connection_closed"
    connection_id: ConnectionId = Field(min_length=1, max_length=64)


class ConnectionActive(Contract):
    """The client did something after a quiet spell (sent at once, so away ends at once)."""
    TYPE = "presence.connection_active"
    connection_id: ConnectionId = Field(min_length=1, max_length=64)


class LiveConnection(Contract):
    TYPE = "presence.live_connection"
    connection_id: ConnectionId = Field(min_length=1, max_length=64)
    user_id: UserId
    # Seconds since the client's last frame; presence records it only when ``active`` (the
    # client did something since the last renewal), so idle connections cost it no write.
    idle_s: float = Field(default=0.0, ge=0)
    active: bool = False
    away: bool = False
    sessions: list[UUID] = Field(default_factory=list, max_length=10_000)


class RenewLeases(Contract):
    """The gateway's heartbeat: every live connection it holds. Leases not renewed expire, so
    a dead gateway's users go offline by themselves; unknown connections are re-created (this
    is how presence heals after Redis lost its data)."""
    TYPE = "presence.renew_leases"
    gateway_id: str = Field(min_length=1, max_length=128)
    connections: list[LiveConnection] = Field(max_length=200_000)


class SetPresence(Contract):
    TYPE = "presence.set_presence"
    connection_id: ConnectionId = Field(min_length=1, max_length=64)
    status: Literal["online", "away"]


class TypingStart(Contract):
    TYPE = "presence.typing_start"
    session_id: UUID
    # The connection has joined the session at the gateway (messaging checked membership):
    # accepted even when presence's membership projection does not know the session.
    joined: bool = False


class TypingStop(Contract):
    TYPE = "presence.typing_stop"
    session_id: UUID


class OpenSession(Contract):
    """A connection joined the session: answers ``{online_users, typing}`` for ``joined``."""
    TYPE = "presence.open_session"
    session_id: UUID
    connection_id: ConnectionId = Field(min_length=1, max_length=64)
    participants: list[UserId] = Field(default_factory=list, max_length=MAX_PARTICIPANTS)


class CloseSession(Contract):
    TYPE = "presence.close_session"
    session_id: UUID
    connection_id: ConnectionId = Field(min_length=1, max_length=64)


PRESENCE_COMMANDS: tuple[type[Contract], ...] = (
    ConnectionOpened, ConnectionClosed, ConnectionActive, RenewLeases, SetPresence,
    TypingStart, TypingStop, OpenSession, CloseSession,
)
# Routing key of the gateway's fire-and-forget batches.
UPDATES_ROUTING_KEY = "presence.updates"


# ---- events ---------------------------------------------------------------------------------

class PresenceChanged(Contract):
    TYPE = "presence_changed"
    user_id: UserId
    status: Status
    last_seen: str | None


class TypingStarted(Contract):
    TYPE = "typing_start"
    session_id: UUID
    user_id: UserId
    exclude_user_id: UserId


class TypingStopped(Contract):
    TYPE = "typing_stop"
    session_id: UUID
    user_id: UserId
    exclude_user_id: UserId


class UserJoined(Contract):
    TYPE = "user_joined"
    session_id: UUID
    user_id: UserId
    exclude_user_id: UserId


class UserLeft(Contract):
    TYPE = "user_left"
    session_id: UUID
    user_id: UserId
    exclude_user_id: UserId


class OnlineUsers(Contract):
    TYPE = "online_users"
    session_id: UUID
    online: list[UserId]


PRESENCE_EVENTS: tuple[type[Contract], ...] = (
    PresenceChanged, TypingStarted, TypingStopped, UserJoined, UserLeft, OnlineUsers,
)
