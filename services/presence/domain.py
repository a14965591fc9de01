"""The timing rules of presence and typing: pure functions of ``(state, now)``.

``now`` is a Unix time in seconds (float). Nothing here touches Redis or the clock, so every
rule is unit-tested without sleeps.

A user's status is derived from their connections:

- a connection is *live* while its lease runs (``lease_until > now``); the gateway renews the
  leases of its connections on every heartbeat, so a dead gateway's connections lapse;
- a live connection is *active* unless its client said ``away`` or it has been quiet for
  ``away_after_s``;
- the user is ``online`` if any live connection is active, ``away`` if they have live
  connections but none active, ``offline`` if none is live.

What other users are told (``shown``) follows that, with one exception against flapping: when
the last connection closes, ``offline`` is announced only after ``offline_grace_s`` (a reconnect
within it changes nothing anyone sees). When the last connections lapsed instead (their gateway
died), the grace has long passed: ``offline`` is announced at once, with ``last_seen`` the last
sign of life (the last renewal).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ONLINE, AWAY, OFFLINE = "online", "away", "offline"


@dataclass(frozen=True)
class Rules:
    away_after_s: float = 300.0
    offline_grace_s: float = 3.0
    lease_ttl_s: float = 25.0
    typing_ttl_s: float = 6.0


@dataclass(frozen=True)
class ConnState:
    connection_id: str
    lease_until: float
    last_active: float
    away: bool = False  # the client said so


@dataclass(frozen=True)
class UserRecord:
    shown: str = OFFLINE             # the status other users were last told
    last_seen: float | None = None   # when the user was last seen connected
    offline_at: float | None = None  # a pending offline announcement (anti-flap)
    gone_at: float | None = None     # when the last connection went


@dataclass(frozen=True)
class Decision:
    record: UserRecord
    publish: str | None          # a status to announce now, or None
    next_check: float | None     # when to decide again if nothing else happens


def is_live(conn: ConnState, now: float) -> bool:
    return conn.lease_until > now


def is_active(conn: ConnState, now: float, rules: Rules) -> bool:
    return not conn.away and now - conn.last_active < rules.away_after_s


def actual_status(conns: list[ConnState], now: float, rules: Rules) -> str:
    live = [c for c in conns if is_live(c, now)]
    if not live:
        return OFFLINE
    return ONLINE if any(is_active(c, now, rules) for c in live) else AWAY


def decide(record: UserRecord, conns: list[ConnState], now: float, rules: Rules) -> Decision:
    """What to announce about a user now, and when to look again.

    ``conns`` are the connections presence still holds for the user, lapsed ones included
    (their ``lease_until`` is in the past); connections closed by their client are gone.
    """
    live = [c for c in conns if is_live(c, now)]
    if live:
        status = actual_status(live, now, rules)
        # Only the away deadline of active connections can change the status by itself
        # (lease expiry is watched separately, per connection).
        deadlines = [c.last_active + rules.away_after_s for c in live
                     if is_active(c, now, rules)]
        next_check = min(deadlines) if deadlines else None
        new = UserRecord(shown=status, last_seen=now)
        return Decision(new, status if status != record.shown else None, next_check)
    if record.shown == OFFLINE:
        return Decision(replace(record, offline_at=None, gone_at=None), None, None)
    lapsed = [c for c in conns if not is_live(c, now)]
    if lapsed:
        # The gateway stopped renewing: the grace is over; last seen at the last renewal.
        last_renewal = max(c.lease_until for c in lapsed) - rules.lease_ttl_s
        gone_at = min(record.gone_at or last_renewal, last_renewal)
        return _offline(gone_at)
    gone_at = record.gone_at if record.gone_at is not None else now
    offline_at = record.offline_at if record.offline_at is not None \
        else now + rules.offline_grace_s
    if now >= offline_at:
        return _offline(gone_at)
    return Decision(replace(record, offline_at=offline_at, gone_at=gone_at), None, offline_at)


def _offline(gone_at: float) -> Decision:
    return Decision(UserRecord(shown=OFFLINE, last_seen=gone_at), OFFLINE, None)


# ---- typing ----------------------------------------------------------------------------------

def typing_until(now: float, rules: Rules) -> float:
    """A typing state lasts ``typing_ttl_s`` unless refreshed."""
    return now + rules.typing_ttl_s


def is_typing(until: float | None, now: float) -> bool:
    return until is not None and until > now


def typing_users(entries: dict[str, float], now: float) -> list[str]:
    """Who is typing now, from ``{user_id: until}`` (lapsed entries not yet swept excluded)."""
    return sorted(user for user, until in entries.items() if is_typing(until, now))


def lease_until(now: float, rules: Rules) -> float:
    return now + rules.lease_ttl_s
