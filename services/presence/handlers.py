"""Entry points of the presence service: the gateway's commands, messaging's membership
events, and the expiries the scheduler finds.

Every entry point records the events it causes in an ``Outbox``; the caller publishes them as
one AMQP message per batch (``publish_events``). Status decisions are ``domain.decide``; this
module only loads state, applies the decision and says who must hear about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from shared.broker import Broker
from shared.contracts.envelope import Envelope, encode_batch, failed, new_envelope, ok
from shared.contracts.errors import ErrorCode, ServiceError, not_found
from shared.contracts.presence import (
    CloseSession,
    ConnectionActive,
    ConnectionClosed,
    ConnectionOpened,
    OpenSession,
    RenewLeases,
    SetPresence,
    TypingStart,
    TypingStop,
)
from shared.contracts.registry import payload_of
from shared.logging import get_logger
from shared.topology import EVENTS, session_key, user_key

from . import domain
from .domain import OFFLINE, Rules
from .store import NewConnection, PresenceStore

log = get_logger(__name__)
# Users whose commands are handled at once (each holds at most one Redis connection).
CONCURRENT_USERS = 16
EVENTS_PUBLISHED = Counter("chat_presence_events_total", "Presence events published", ["type"])


@dataclass
class Deps:
    store: PresenceStore
    rules: Rules
    clock: Callable[[], float] = time.time
    # Users with live connections: rebuild their memberships if Redis lost them (heal.py).
    check_memberships: Callable[[list[str]], Awaitable[None]] | None = None


@dataclass
class Outbox:
    """Events caused by one batch: ``(routing keys, envelope)``."""
    items: list[tuple[list[str], Envelope]] = field(default_factory=list)

    def session_event(self, type_: str, session_id: str, **payload: Any) -> None:
        self.items.append(([session_key(session_id, type_)],
                           new_envelope(type_, 1, {"session_id": session_id, **payload})))

    def presence_changed(self, user_id: str, status: str, last_seen: float | None,
                         recipients: list[str]) -> None:
        payload = {"user_id": user_id, "status": status, "last_seen": _rfc3339(last_seen)}
        envelope = new_envelope("presence_changed", 1, payload).model_copy(
            update={"recipients": recipients})
        self.items.append(([user_key(r, "presence_changed") for r in recipients], envelope))


async def publish_events(broker: Broker, outbox: Outbox) -> None:
    """One AMQP message for the whole batch; the routing keys beyond the first go in BCC.
    Not persistent and not mandatory: presence events are ephemeral and may have no audience."""
    if not outbox.items:
        return
    keys: list[str] = []
    seen: set[str] = set()
    for item_keys, _ in outbox.items:
        for key in item_keys:
            if key not in seen:
                seen.add(key)
                keys.append(key)
    envelopes = [env for _, env in outbox.items]
    await broker.publish(EVENTS, keys, encode_batch(envelopes), message_type="events",
                         persistent=False, mandatory=False)
    for env in envelopes:
        EVENTS_PUBLISHED.labels(env.type).inc()


def _rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


# ---- deciding about a user -------------------------------------------------------------------

async def evaluate_user(user_id: str, deps: Deps, out: Outbox) -> None:
    """Decide the user's status now; announce a change to everyone sharing a session."""
    now = deps.clock()
    record, conns, orphans = await deps.store.load_user(user_id)
    await deps.store.forget_orphans(user_id, orphans)
    decision = domain.decide(record, conns, now, deps.rules)
    await deps.store.save_user(user_id, decision.record, decision.next_check)
    if decision.publish is None:
        return
    recipients = await deps.store.co_participants(user_id)
    if recipients:
        out.presence_changed(user_id, decision.publish, decision.record.last_seen, recipients)
    if (record.shown == OFFLINE) != (decision.publish == OFFLINE):
        # Connected or disconnected: the online list of every open session of theirs changed.
        announce_online(await deps.store.online_in_opened(user_id=user_id), out)


def announce_online(online: dict[str, list[str]], out: Outbox) -> None:
    """``online_users`` to each session (``{session: online participants}``)."""
    for sid, users in online.items():
        out.session_event("online_users", sid, online=users)


async def forget_connection(connection_id: str, deps: Deps, out: Outbox) -> str | None:
    """Drop a connection; tell the sessions it had open if the user left them all."""
    user, sessions = await deps.store.remove_connection(connection_id)
    if user is None:
        return None
    for sid in sessions:
        if not await deps.store.user_has_open(sid, user):
            out.session_event("user_left", sid, user_id=user, exclude_user_id=user)
    return user


# ---- commands from the gateway ---------------------------------------------------------------

async def open_connection(cmd: ConnectionOpened, env: Envelope, deps: Deps, out: Outbox):
    now = deps.clock()
    await deps.store.add_connections([NewConnection(
        cmd.connection_id, env.actor.user_id, cmd.gateway_id,
        domain.lease_until(now, deps.rules), now)])
    if deps.check_memberships is not None:
        await deps.check_memberships([env.actor.user_id])
    await evaluate_user(env.actor.user_id, deps, out)
    return {}


async def close_connection(cmd: ConnectionClosed, env: Envelope, deps: Deps, out: Outbox):
    user = await forget_connection(cmd.connection_id, deps, out)
    if user is not None:
        await evaluate_user(user, deps, out)
    return {}


async def mark_active(cmd: ConnectionActive, env: Envelope, deps: Deps, out: Outbox):
    if await deps.store.update_connection(cmd.connection_id, last_active=deps.clock()):
        await evaluate_user(env.actor.user_id, deps, out)
    return {}


async def set_presence(cmd: SetPresence, env: Envelope, deps: Deps, out: Outbox):
    fields: dict[str, Any] = {"away": int(cmd.status == "away")}
    if cmd.status == "online":
        fields["last_active"] = deps.clock()
    if await deps.store.update_connection(cmd.connection_id, **fields):
        await evaluate_user(env.actor.user_id, deps, out)
    return {"status": cmd.status}


async def renew_leases(cmd: RenewLeases, env: Envelope, deps: Deps, out: Outbox):
    """Renew every lease of a gateway in one command; re-create what presence does not know
    (Redis lost its data, or a connection_opened was lost), silently for the sessions."""
    now = deps.clock()
    until = domain.lease_until(now, deps.rules)
    unknown = await deps.store.renew_leases({c.connection_id: until for c in cmd.connections})
    recreated = [NewConnection(c.connection_id, c.user_id, cmd.gateway_id, until,
                               now - c.idle_s, c.away, tuple(str(s) for s in c.sessions))
                 for c in cmd.connections if c.connection_id in unknown]
    await deps.store.add_connections(recreated)
    if deps.check_memberships is not None:
        await deps.check_memberships([c.user_id for c in cmd.connections])
    await deps.store.touch_connections({
        c.connection_id: now - c.idle_s for c in cmd.connections
        if c.active and c.connection_id not in unknown})
    if recreated:
        log.info("connections_recreated", gateway_id=cmd.gateway_id, count=len(recreated))
        for user in sorted({c.user_id for c in recreated}):
            await evaluate_user(user, deps, out)
    return {"renewed": len(cmd.connections), "recreated": len(recreated)}


async def start_typing(cmd: TypingStart, env: Envelope, deps: Deps, out: Outbox):
    sid, user = str(cmd.session_id), env.actor.user_id
    member = await deps.store.is_member(sid, user)
    if member is False or (member is None and not cmd.joined):
        raise not_found()
    now = deps.clock()
    before = await deps.store.start_typing(sid, user, domain.typing_until(now, deps.rules))
    if not domain.is_typing(before, now):
        out.session_event("typing_start", sid, user_id=user, exclude_user_id=user)
    return {"session_id": sid}


async def stop_typing(cmd: TypingStop, env: Envelope, deps: Deps, out: Outbox):
    sid, user = str(cmd.session_id), env.actor.user_id
    before = await deps.store.stop_typing(sid, user)
    if domain.is_typing(before, deps.clock()):
        out.session_event("typing_stop", sid, user_id=user, exclude_user_id=user)
    return {"session_id": sid}


async def open_session(cmd: OpenSession, env: Envelope, deps: Deps, out: Outbox):
    """A connection joined the session: user_joined to the others (if it is the user's first
    connection with it open); the answer is what ``joined`` shows."""
    sid, user = str(cmd.session_id), env.actor.user_id
    first, online, typing = await deps.store.open_session(sid, cmd.connection_id, user,
                                                          list(cmd.participants))
    if first:
        out.session_event("user_joined", sid, user_id=user, exclude_user_id=user)
    typing_now = domain.typing_users(typing, deps.clock())
    return {"online_users": sorted({*online, user}),
            "typing": [u for u in typing_now if u != user]}


async def close_session(cmd: CloseSession, env: Envelope, deps: Deps, out: Outbox):
    sid, user = str(cmd.session_id), env.actor.user_id
    if await deps.store.close_session(sid, cmd.connection_id, user):
        out.session_event("user_left", sid, user_id=user, exclude_user_id=user)
    return {}


Handler = Callable[[Any, Envelope, Deps, Outbox], Awaitable[dict]]

COMMAND_HANDLERS: dict[type, Handler] = {
    ConnectionOpened: open_connection,
    ConnectionClosed: close_connection,
    ConnectionActive: mark_active,
    SetPresence: set_presence,
    RenewLeases: renew_leases,
    TypingStart: start_typing,
    TypingStop: stop_typing,
    OpenSession: open_session,
    CloseSession: close_session,
}
# The heartbeat comes from a gateway, not from a user.
WITHOUT_ACTOR = (RenewLeases,)


async def handle_commands(envelopes: list[Envelope], deps: Deps, out: Outbox) -> list[dict]:
    """One result per envelope, in order; each command's error is its own.

    Commands of different users touch different keys, so they run concurrently (their Redis
    round trips overlap); each user's commands run in arrival order. Gateway heartbeats (no
    actor) run first: they were built before anything that follows them in the batch.
    """
    results: list[dict | None] = [None] * len(envelopes)
    by_user: dict[str, list[int]] = {}
    for index, env in enumerate(envelopes):
        if env.actor is None:
            results[index] = await _handle_one(env, deps, out)
        else:
            by_user.setdefault(env.actor.user_id, []).append(index)

    limit = asyncio.Semaphore(CONCURRENT_USERS)

    async def run_user(indices: list[int]) -> None:
        async with limit:
            for index in indices:
                results[index] = await _handle_one(envelopes[index], deps, out)

    await asyncio.gather(*(run_user(indices) for indices in by_user.values()))
    return results


async def _handle_one(env: Envelope, deps: Deps, out: Outbox) -> dict:
    try:
        command = payload_of(env)
        handler = COMMAND_HANDLERS.get(type(command))
        if handler is None:
            raise ServiceError(ErrorCode.INVALID, f"presence does not handle {env.type}")
        if env.actor is None and type(command) not in WITHOUT_ACTOR:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "command has no actor")
        return ok(await handler(command, env, deps, out))
    except ServiceError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:
            log.info("command_refused", type=env.type, code=exc.code.value,
                     reason=exc.message, correlation_id=env.correlation_id)
        return failed(exc)


# ---- messaging's events: the membership projection -------------------------------------------

async def session_created(payload: dict, deps: Deps, out: Outbox) -> None:
    await deps.store.apply_membership(
        payload["session_id"], 0, [p["user_id"] for p in payload["participants"]], [])


async def participant_added(payload: dict, deps: Deps, out: Outbox) -> None:
    sid = payload["session_id"]
    if await deps.store.apply_membership(sid, payload["seq"], [payload["user_id"]], []):
        await _membership_changed(sid, deps, out)


async def participant_removed(payload: dict, deps: Deps, out: Outbox) -> None:
    sid, user = payload["session_id"], payload["user_id"]
    if await deps.store.apply_membership(sid, payload["seq"], [], [user]):
        before = await deps.store.stop_typing(sid, user)
        if domain.is_typing(before, deps.clock()):
            out.session_event("typing_stop", sid, user_id=user, exclude_user_id=user)
        await _membership_changed(sid, deps, out)


async def _membership_changed(session_id: str, deps: Deps, out: Outbox) -> None:
    announce_online(await deps.store.online_in_opened(session_ids=[session_id]), out)


EVENT_HANDLERS: dict[str, Callable[[dict, Deps, Outbox], Awaitable[None]]] = {
    "session_created": session_created,
    "participant_added": participant_added,
    "participant_removed": participant_removed,
}
EVENT_BINDINGS = tuple(f"session.*.{name}" for name in EVENT_HANDLERS)


async def handle_events(envelopes: list[Envelope], deps: Deps, out: Outbox) -> list[dict]:
    for env in envelopes:
        handler = EVENT_HANDLERS.get(env.type)
        if handler is not None:
            await handler(env.payload, deps, out)
    return [ok(None) for _ in envelopes]


# ---- expiries (the scheduler) ----------------------------------------------------------------

async def expire(deps: Deps, out: Outbox) -> int:
    """Everything whose time has come: lapsed leases (a dead gateway), away deadlines and
    offline graces, typing states not refreshed. Returns how many things were handled."""
    now = deps.clock()
    handled = 0
    for cid in await deps.store.lapsed_leases(now):
        user = await deps.store.connection_user(cid)
        if user is not None:
            # Decided before the connection is dropped, so the decision sees a lapsed lease
            # (offline at once, last seen at the last renewal) rather than a closed one.
            await evaluate_user(user, deps, out)
        await forget_connection(cid, deps, out)
        handled += 1
    for user in await deps.store.due_users(now):
        await evaluate_user(user, deps, out)
        handled += 1
    for sid, user in await deps.store.lapsed_typing(now):
        before = await deps.store.stop_typing(sid, user)
        if before is not None and not domain.is_typing(before, now):
            out.session_event("typing_stop", sid, user_id=user, exclude_user_id=user)
        handled += 1
    return handled
