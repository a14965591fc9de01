"""Presence state in Redis. Every key starts with the configured prefix (``presence:``).

Connections and users (ephemeral, rebuilt from live connections):

- ``c:<conn>`` hash ``user``, ``gw``, ``last_active``, ``away`` (0/1); ``cs:<conn>`` set of the
  sessions it has open; ``uc:<user>`` set of the user's connections.
- ``leases`` sorted set ``conn -> lease deadline``. One ``ZADD`` per gateway heartbeat renews all
  of that gateway's leases, so an idle connection costs presence almost nothing.
- ``u:<user>`` hash ``shown``, ``last_seen``, ``offline_at``, ``gone_at`` (30-day TTL: ``last_seen``
  is kept that long after the user was last seen).
- ``due`` sorted set ``user -> when to decide again`` (away deadlines, offline grace).
- ``open:<session>`` hash ``conn -> user``: who has the session open (user_joined / user_left).
- ``ty:<session>`` sorted set ``user -> typing until`` (TTL a minute past the last refresh) and
  ``tydue`` sorted set ``"<session> <user>" -> typing until`` for the scheduler.

Membership projection (from messaging's events, never from its database):

- ``m:<session>`` set of participants; ``mv:<session>`` the last applied seq (idempotent,
  ordered); ``us:<user>`` set of the user's sessions.
- ``mk`` set of the users whose sessions were loaded from messaging (``messaging.memberships``)
  since Redis last lost its data. Absent after FLUSHALL or a restart: users with live
  connections are then looked up again (``heal.MembershipHealer``), so ``presence_changed``
  reaches co-participants of sessions nobody has open.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from . import scripts
from .domain import ConnState, UserRecord

USER_RECORD_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class NewConnection:
    connection_id: str
    user_id: str
    gateway_id: str
    lease_until: float
    last_active: float
    away: bool = False
    sessions: tuple[str, ...] = ()


class PresenceStore:
    def __init__(self, redis: Redis, prefix: str = "presence:"):
        self.r = redis
        self.p = prefix
        self._open_session = redis.register_script(scripts.OPEN_SESSION)
        self._load_user = redis.register_script(scripts.LOAD_USER)
        self._co_participants = redis.register_script(scripts.CO_PARTICIPANTS)
        self._online_in_opened = redis.register_script(scripts.ONLINE_IN_OPENED)

    # ---- keys -------------------------------------------------------------------------------

    def k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    # ---- connections ------------------------------------------------------------------------

    async def add_connections(self, conns: list[NewConnection]) -> None:
        if not conns:
            return
        pipe = self.r.pipeline(transaction=False)
        for c in conns:
            pipe.hset(self.k("c", c.connection_id), mapping={
                "user": c.user_id, "gw": c.gateway_id, "last_active": c.last_active,
                "away": int(c.away)})
            pipe.sadd(self.k("uc", c.user_id), c.connection_id)
            for sid in c.sessions:
                pipe.sadd(self.k("cs", c.connection_id), sid)
                pipe.hset(self.k("open", sid), c.connection_id, c.user_id)
        pipe.zadd(self.k("leases"), {c.connection_id: c.lease_until for c in conns})
        await pipe.execute()

    async def connection_user(self, connection_id: str) -> str | None:
        return await self.r.hget(self.k("c", connection_id), "user")

    async def remove_connection(self, connection_id: str) -> tuple[str | None, list[str]]:
        """Forget a connection; its user and the sessions it had open."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.k("c", connection_id), "user")
        pipe.smembers(self.k("cs", connection_id))
        user, sessions = await pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.k("c", connection_id), self.k("cs", connection_id))
        pipe.zrem(self.k("leases"), connection_id)
        if user is not None:
            pipe.srem(self.k("uc", user), connection_id)
        for sid in sessions:
            pipe.hdel(self.k("open", sid), connection_id)
        await pipe.execute()
        return user, sorted(sessions)

    async def update_connection(self, connection_id: str, **fields) -> bool:
        """Set fields of a known connection; False if presence does not know it."""
        key = self.k("c", connection_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(key)
        pipe.hset(key, mapping=fields)
        exists, _ = await pipe.execute()
        if not exists:
            await self.r.delete(key)
        return bool(exists)

    async def touch_connections(self, last_active: dict[str, float]) -> None:
        """Record activity reported by a heartbeat (connections known to exist)."""
        if not last_active:
            return
        pipe = self.r.pipeline(transaction=False)
        for cid, moment in last_active.items():
            pipe.hset(self.k("c", cid), "last_active", moment)
        await pipe.execute()

    async def renew_leases(self, deadlines: dict[str, float]) -> set[str]:
        """Renew leases in one command; return the connections that had no lease (unknown:
        never seen, lapsed, or lost with Redis's data). Two commands per heartbeat."""
        if not deadlines:
            return set()
        ids = list(deadlines)
        pipe = self.r.pipeline(transaction=False)
        pipe.zmscore(self.k("leases"), ids)
        pipe.zadd(self.k("leases"), deadlines)
        scores, _ = await pipe.execute()
        return {cid for cid, score in zip(ids, scores, strict=True) if score is None}

    async def lapsed_leases(self, now: float, limit: int = 1000) -> list[str]:
        return await self.r.zrangebyscore(self.k("leases"), "-inf", now, start=0, num=limit)

    # ---- users ------------------------------------------------------------------------------

    async def load_user(self, user_id: str) -> tuple[UserRecord, list[ConnState], list[str]]:
        """The user's record, their connections (lapsed ones included) and orphans (a
        connection hash without a lease: forget it). One round trip."""
        raw, found = await self._load_user(args=[self.p, user_id])
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
        record = UserRecord(
            shown=raw.get("shown", "offline"), last_seen=_float(raw.get("last_seen")),
            offline_at=_float(raw.get("offline_at")), gone_at=_float(raw.get("gone_at")))
        conns, orphans = [], []
        for cid, last_active, away, score in sorted(found):
            if score is None or last_active is None:
                orphans.append(cid)
                continue
            conns.append(ConnState(cid, float(score), float(last_active), away == "1"))
        return record, conns, orphans

    async def forget_orphans(self, user_id: str, orphans: list[str]) -> None:
        if orphans:
            await self.r.srem(self.k("uc", user_id), *orphans)

    async def save_user(self, user_id: str, record: UserRecord, next_check: float | None
                        ) -> None:
        key = self.k("u", user_id)
        values = {"shown": record.shown, "last_seen": record.last_seen,
                  "offline_at": record.offline_at, "gone_at": record.gone_at}
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping={k: v for k, v in values.items() if v is not None})
        gone = [k for k, v in values.items() if v is None]
        if gone:
            pipe.hdel(key, *gone)
        pipe.expire(key, USER_RECORD_TTL_S)
        if next_check is None:
            pipe.zrem(self.k("due"), user_id)
        else:
            pipe.zadd(self.k("due"), {user_id: next_check})
        await pipe.execute()

    async def due_users(self, now: float, limit: int = 1000) -> list[str]:
        return await self.r.zrangebyscore(self.k("due"), "-inf", now, start=0, num=limit)

    # ---- sessions opened by connections -----------------------------------------------------

    async def open_session(self, session_id: str, connection_id: str, user_id: str,
                           participants: list[str]) -> tuple[bool, list[str], dict[str, float]]:
        """Record that the connection has the session open (learning its ``participants``
        if the projection does not know the session: messaging checked them). Answers
        whether the user had it open on no other connection before (-> user_joined), the
        participants online or away, and ``{user: typing until}``. One round trip."""
        first, online, typing = await self._open_session(
            args=[self.p, session_id, connection_id, user_id, *participants])
        return (bool(first), sorted(online),
                {u: float(t) for u, t in zip(typing[::2], typing[1::2], strict=True)})

    async def close_session(self, session_id: str, connection_id: str, user_id: str) -> bool:
        """Forget that the connection has the session open; True if it was the user's last
        connection with it open (-> user_left)."""
        key = self.k("open", session_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(key, connection_id)
        pipe.srem(self.k("cs", connection_id), session_id)
        pipe.hvals(key)
        removed, _, remaining = await pipe.execute()
        return bool(removed) and user_id not in remaining

    async def user_has_open(self, session_id: str, user_id: str) -> bool:
        return user_id in await self.r.hvals(self.k("open", session_id))

    async def online_in_opened(self, *, user_id: str | None = None,
                               session_ids: list[str] = ()) -> dict[str, list[str]]:
        """For each session of the user's (or of ``session_ids``) that some connection has
        open: its participants online or away. One round trip."""
        args = ["user", user_id] if user_id is not None else ["sessions", *session_ids]
        rows = await self._online_in_opened(args=[self.p, *args])
        return {row[0]: sorted(row[1:]) for row in rows}

    # ---- membership projection --------------------------------------------------------------

    async def apply_membership(self, session_id: str, seq: int, added: list[str],
                               removed: list[str]) -> bool:
        """Apply a membership event once and in order (by the session's seq); False if it
        was already applied (a redelivery)."""
        applied = await self.r.get(self.k("mv", session_id))
        if applied is not None and int(applied) >= seq:
            return False
        pipe = self.r.pipeline(transaction=True)
        if added:
            pipe.sadd(self.k("m", session_id), *added)
        if removed:
            pipe.srem(self.k("m", session_id), *removed)
        for uid in added:
            pipe.sadd(self.k("us", uid), session_id)
        for uid in removed:
            pipe.srem(self.k("us", uid), session_id)
        pipe.set(self.k("mv", session_id), seq)
        await pipe.execute()
        return True

    async def membership_unknown(self, user_ids: list[str]) -> list[str]:
        """Those of the users whose sessions were not loaded since Redis lost its data."""
        if not user_ids:
            return []
        flags = await self.r.smismember(self.k("mk"), user_ids)
        return [uid for uid, known in zip(user_ids, flags, strict=True) if not known]

    async def load_memberships(self, user_ids: list[str],
                               snapshot: dict[str, tuple[int, list[str]]]) -> list[str]:
        """Replace the projection of each session by messaging's snapshot ``{session: (seq,
        participants)}`` unless events newer than it were applied already; mark the users
        known if every session could be taken. Idempotent. Returns the sessions skipped (the
        caller asks again later: a newer snapshot will cover them)."""
        skipped = []
        for sid, (seq, users) in snapshot.items():
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.k("mv", sid))
            pipe.smembers(self.k("m", sid))
            applied, before = await pipe.execute()
            if applied is not None and int(applied) > seq:
                skipped.append(sid)
                continue
            pipe = self.r.pipeline(transaction=True)
            gone = before - set(users)
            if gone:
                pipe.srem(self.k("m", sid), *gone)
            for uid in gone:
                pipe.srem(self.k("us", uid), sid)
            if users:
                pipe.sadd(self.k("m", sid), *users)
            for uid in users:
                pipe.sadd(self.k("us", uid), sid)
            pipe.set(self.k("mv", sid), seq)
            await pipe.execute()
        if not skipped and user_ids:
            await self.r.sadd(self.k("mk"), *user_ids)
        return skipped

    async def is_member(self, session_id: str, user_id: str) -> bool | None:
        """True / False; None when the projection does not know the session."""
        pipe = self.r.pipeline(transaction=False)
        pipe.sismember(self.k("m", session_id), user_id)
        pipe.exists(self.k("m", session_id))
        member, known = await pipe.execute()
        return bool(member) if known else None

    async def members(self, session_id: str) -> list[str]:
        """Reads of the projection as it stands (the tests check it with these)."""
        return sorted(await self.r.smembers(self.k("m", session_id)))

    async def sessions_of(self, user_id: str) -> list[str]:
        return sorted(await self.r.smembers(self.k("us", user_id)))

    async def co_participants(self, user_id: str) -> list[str]:
        """Everyone who shares a session with the user (the user excluded)."""
        users = set(await self._co_participants(args=[self.p, user_id]))
        users.discard(user_id)
        return sorted(users)

    # ---- typing -----------------------------------------------------------------------------

    async def start_typing(self, session_id: str, user_id: str, until: float
                           ) -> float | None:
        """Set or refresh a typing state; the previous deadline (None: was not typing)."""
        key = self.k("ty", session_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.zscore(key, user_id)
        pipe.zadd(key, {user_id: until})
        pipe.expire(key, 60)
        pipe.zadd(self.k("tydue"), {f"{session_id} {user_id}": until})
        before, *_ = await pipe.execute()
        return before

    async def stop_typing(self, session_id: str, user_id: str) -> float | None:
        """End a typing state; the deadline it had (None: there was none)."""
        key = self.k("ty", session_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.zscore(key, user_id)
        pipe.zrem(key, user_id)
        pipe.zrem(self.k("tydue"), f"{session_id} {user_id}")
        before, *_ = await pipe.execute()
        return before

    async def lapsed_typing(self, now: float, limit: int = 1000) -> list[tuple[str, str]]:
        members = await self.r.zrangebyscore(self.k("tydue"), "-inf", now, start=0, num=limit)
        return [tuple(m.split(" ", 1)) for m in members]

    # ---- scheduler --------------------------------------------------------------------------

    async def take_tick(self, owner: str, hold_s: float) -> bool:
        """One scheduler tick at a time across replicas."""
        return bool(await self.r.set(self.k("tick"), owner, nx=True,
                                     px=max(1, int(hold_s * 1000))))

    async def forget_all(self) -> int:
        """Delete every key under the prefix (tests: simulate Redis losing its data)."""
        count = 0
        async for key in self.r.scan_iter(match=self.p + "*", count=1000):
            count += await self.r.delete(key)
        return count


def _float(value) -> float | None:
    return None if value is None else float(value)
