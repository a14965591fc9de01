"""Gateway rules that need no network: rate limits, tokens, per-connection delivery."""

from __future__ import annotations

import time

import jwt
import orjson
import pytest

from services.gateway.auth import Authenticator, mint_token
from services.gateway.connection import Connection, SessionView, text_frame
from services.gateway.heartbeat import Action, next_action
from services.gateway.ratelimit import PerKeyBuckets, TokenBucket
from services.gateway.settings import GatewaySettings
from shared.contracts.errors import ErrorCode, ServiceError

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


def test_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert [bucket.take(0.0) for _ in range(20)] == [0.0] * 20
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0          # one token back after 100 ms
    assert bucket.take(0.1) > 0


def test_buckets_are_per_user():
    buckets = PerKeyBuckets(rate=1, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0


def settings(**kw) -> GatewaySettings:
    return GatewaySettings(jwt_secret=SECRET, **kw)


async def test_valid_dev_token_gives_the_principal():
    auth = Authenticator(settings())
    principal = await auth.verify(mint_token(SECRET, "user.1@x", "reader"))
    assert principal.user_id == "user.1@x" and principal.actor.role == "reader"


def bad(claims: dict, key: str = SECRET, alg: str = "HS256", drop: str | None = None) -> str:
    base = {"sub": "u", "role": "client", "aud": "chat", "exp": int(time.time()) + 60}
    base.update(claims)
    if drop:
        base.pop(drop)
    return jwt.encode(base, key, algorithm=alg)


@pytest.mark.parametrize("token", [
    bad({"exp": int(time.time()) - 120}),
    bad({"aud": "other"}),
    bad({}, key="another-secret-that-is-long-enough-for-hs256!"),
    bad({}, drop="exp"),
    bad({}, drop="aud"),
    bad({"role": "root"}),
    bad({"sub": ""}),
    bad({"sub": "x" * 129}),
    jwt.encode({"sub": "u", "role": "client", "aud": "chat", "exp": int(time.time()) + 60},
               None, algorithm="none"),
    "garbage",
])
async def test_bad_tokens_are_unauthenticated(token):
    with pytest.raises(ServiceError) as refused:
        await Authenticator(settings()).verify(token)
    assert refused.value.code == ErrorCode.UNAUTHENTICATED


def test_jwks_mode_accepts_only_asymmetric_algorithms():
    with pytest.raises(ValueError):
        GatewaySettings(jwt_algorithms="HS256")
    assert GatewaySettings(jwt_algorithms="RS256,ES256").jwt_algorithms == ["RS256", "ES256"]


class FakeConnection(Connection):
    """The delivery rule of ``Connection`` with the socket replaced by a list."""

    def __init__(self):
        self.sessions = {}
        self.sent: list[dict] = []
        self.gaps: list[str] = []
        self.closed = False
        self.on_gap = lambda _conn, session_id: self.gaps.append(session_id)

    def send(self, frame):
        self.sent.append(frame)

    def send_framed(self, data):
        self.sent.append(orjson.loads(unframe(data)))


def unframe(data: bytes) -> bytes:
    """The payload of one unmasked text frame (RFC 6455)."""
    assert data[0] == 0x81
    size = data[1]
    start = {126: 4, 127: 10}.get(size, 2)
    return data[start:]


def test_frames_are_final_unmasked_text_frames_of_every_length():
    for size in (0, 125, 126, 65535, 65536):
        payload = b"x" * size
        assert unframe(text_frame(payload)) == payload


def ev(seq):
    return {"type": "new_message", "session_id": "s", "seq": seq}


def deliver(conn, seq):
    conn.deliver("s", ev(seq), text_frame(orjson.dumps(ev(seq))))


def test_join_buffers_live_events_then_sends_each_seq_once_in_order():
    conn = FakeConnection()
    conn.sessions["s"] = SessionView(last_seq=2)   # pending: joining
    deliver(conn, 5)
    deliver(conn, 4)
    conn.send_backlog("s", [ev(3), ev(4)])
    conn.go_live("s")
    deliver(conn, 5)
    deliver(conn, 6)
    assert [f["seq"] for f in conn.sent] == [3, 4, 5, 6]


def test_a_gap_in_live_events_asks_for_a_catch_up():
    conn = FakeConnection()
    conn.sessions["s"] = SessionView(last_seq=1, pending=None)
    deliver(conn, 2)
    deliver(conn, 4)
    assert [f["seq"] for f in conn.sent] == [2] and conn.gaps == ["s"]
    conn.send_backlog("s", [ev(3), ev(4)])
    conn.go_live("s")
    assert [f["seq"] for f in conn.sent] == [2, 3, 4]


def test_keep_alive_pings_a_silent_connection_then_cuts_it_off():
    assert next_action(heard=True, pinged=False) is Action.NONE
    assert next_action(heard=True, pinged=True) is Action.NONE  # it answered
    assert next_action(heard=False, pinged=False) is Action.PING
    assert next_action(heard=False, pinged=True) is Action.CLOSE
