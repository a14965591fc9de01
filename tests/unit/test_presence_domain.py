"""The timing rules of presence and typing, as pure functions of (state, now): no sleeps."""

from __future__ import annotations

from services.gateway.ratelimit import TokenBucket
from services.presence import domain
from services.presence.domain import AWAY, OFFLINE, ONLINE, ConnState, Rules, UserRecord

RULES = Rules(away_after_s=300, offline_grace_s=3, lease_ttl_s=25, typing_ttl_s=6)
T = 1_000_000.0


def conn(cid="c1", lease_until=T + 25, last_active=T, away=False) -> ConnState:
    return ConnState(cid, lease_until, last_active, away)


def test_a_new_connection_makes_an_offline_user_online():
    d = domain.decide(UserRecord(), [conn()], T, RULES)
    assert d.publish == ONLINE
    assert d.record.shown == ONLINE and d.record.last_seen == T
    assert d.next_check == T + 300  # the away deadline


def test_nothing_is_announced_while_the_status_stays():
    d = domain.decide(UserRecord(shown=ONLINE, last_seen=T), [conn()], T + 10, RULES)
    assert d.publish is None and d.record.shown == ONLINE


def test_away_after_five_minutes_without_activity_and_back_on_activity():
    record = UserRecord(shown=ONLINE, last_seen=T)
    assert domain.decide(record, [conn(lease_until=T + 400)], T + 299.9, RULES).publish is None
    d = domain.decide(record, [conn(lease_until=T + 400)], T + 300, RULES)
    assert d.publish == AWAY and d.next_check is None
    back = domain.decide(d.record, [conn(lease_until=T + 400, last_active=T + 310)], T + 310,
                         RULES)
    assert back.publish == ONLINE and back.next_check == T + 610


def test_away_when_the_client_says_so_unless_another_device_is_active():
    record = UserRecord(shown=ONLINE, last_seen=T)
    assert domain.decide(record, [conn(away=True)], T + 1, RULES).publish == AWAY
    both = [conn("phone", away=True), conn("desk")]
    assert domain.decide(record, both, T + 1, RULES).publish is None


def test_last_connection_closed_goes_offline_only_after_the_grace():
    record = UserRecord(shown=ONLINE, last_seen=T)
    d = domain.decide(record, [], T + 5, RULES)
    assert d.publish is None and d.next_check == T + 8
    assert d.record.gone_at == T + 5 and d.record.offline_at == T + 8
    assert domain.decide(d.record, [], T + 7.9, RULES).publish is None
    final = domain.decide(d.record, [], T + 8, RULES)
    assert final.publish == OFFLINE and final.record.last_seen == T + 5  # when it went
    assert final.next_check is None


def test_a_short_reconnect_does_not_flap():
    record = UserRecord(shown=ONLINE, last_seen=T)
    closed = domain.decide(record, [], T + 5, RULES).record
    reopened = domain.decide(closed, [conn("c2", T + 31, T + 6)], T + 6, RULES)
    assert reopened.publish is None
    assert reopened.record.offline_at is None and reopened.record.shown == ONLINE


def test_a_lapsed_lease_is_offline_at_once_with_last_seen_at_the_last_renewal():
    record = UserRecord(shown=ONLINE, last_seen=T)
    lapsed = conn(lease_until=T + 25)  # renewed at T, gateway died right after
    assert domain.decide(record, [lapsed], T + 24.9, RULES).publish is None
    d = domain.decide(record, [lapsed], T + 25.5, RULES)
    assert d.publish == OFFLINE and d.record.last_seen == T


def test_one_lapsed_connection_does_not_hide_a_live_one():
    record = UserRecord(shown=ONLINE, last_seen=T)
    conns = [conn("dead", lease_until=T + 1), conn("alive", lease_until=T + 50)]
    assert domain.decide(record, conns, T + 10, RULES).publish is None


def test_an_offline_user_without_connections_stays_quiet():
    d = domain.decide(UserRecord(shown=OFFLINE, last_seen=T), [], T + 100, RULES)
    assert d.publish is None and d.next_check is None


def test_typing_lasts_six_seconds_unless_refreshed():
    until = domain.typing_until(T, RULES)
    assert domain.is_typing(until, T + 5.9) and not domain.is_typing(until, T + 6)
    assert not domain.is_typing(None, T)
    entries = {"a": T + 6, "b": T + 1, "c": T + 3}
    assert domain.typing_users(entries, T + 2) == ["a", "c"]


def test_typing_rate_limit_allows_one_event_per_interval():
    bucket = TokenBucket(1 / 2.0, 1, now=T)
    assert bucket.take(T) == 0.0
    assert bucket.take(T + 0.5) == 1.5  # seconds to wait
    assert bucket.take(T + 2.0) == 0.0
