"""Every bad input the session and text-message endpoints take gets the SPEC's status and code,
and leaves every store as it was."""

from __future__ import annotations

import time

import aiohttp
import jwt
import orjson
import pytest

from ..support.client import Api, Ws
from ..support.stack import JWT_SECRET

pytestmark = pytest.mark.e2e


async def snapshot(api: Api, sid: str) -> tuple:
    """What a participant can observe of a session and of their listing."""
    _, session = await api.request("GET", f"/api/chat/sessions/{sid}")
    _, page = await api.request("GET", f"/api/chat/sessions/{sid}/messages")
    _, events = await api.request("GET", f"/api/chat/sessions/{sid}/events")
    _, listing = await api.request("GET", "/api/chat/sessions")
    return session, page, events, [s["id"] for s in listing["sessions"]]


def token(claims: dict, key: str = JWT_SECRET, alg: str = "HS256") -> str:
    base = {"sub": "mallory", "role": "client", "aud": "chat", "exp": int(time.time()) + 600}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


def unsigned(claims: dict) -> str:
    import base64
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")
    base = {"sub": "mallory", "role": "client", "aud": "chat", "exp": int(time.time()) + 600}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**base, **claims})}."


BAD_TOKENS = {
    "expired": token({"exp": int(time.time()) - 3600}),
    "alg none": unsigned({}),
    "other key": token({}, key="another-secret-that-is-also-long-enough!!"),
    "other audience": token({"aud": "not-chat"}),
    "no exp": jwt.encode({"sub": "mallory", "role": "client", "aud": "chat"}, JWT_SECRET,
                         algorithm="HS256"),
    "unknown role": token({"role": "superuser"}),
    "bad sub": token({"sub": "has space"}),
    "sub ending in a newline": token({"sub": "mallory\n"}),
    "garbage": "not.a.token",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_are_401_over_http_and_before_the_websocket_upgrade(
        stack, http, api, user, case):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    before = await snapshot(api(alice), sid)
    bad = Api(http, stack.url, BAD_TOKENS[case])
    for method, path, body in [
            ("GET", "/api/chat/sessions", None),
            ("POST", "/api/chat/sessions", {"participant_ids": [bob]}),
            ("POST", f"/api/chat/sessions/{sid}/messages", {"client_msg_id": "x", "body": "y"}),
            ("GET", f"/api/chat/sessions/{sid}/messages", None)]:
        status, answer = await bad.request(method, path, json=body)
        assert status == 401 and answer["error"]["code"] == "unauthenticated", (case, path)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(stack.ws_url, headers={"Authorization": f"Bearer {bad.token}"})
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{stack.ws_url}?token={bad.token}")
    assert refused.value.status == 401
    assert await snapshot(api(alice), sid) == before


async def test_missing_token_is_401(stack, http):
    status, body = await Api(http, stack.url, None).request("GET", "/api/chat/sessions")
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(stack.ws_url)
    assert refused.value.status == 401


LONG = "x" * 4001
BAD_SENDS = [
    (b"{not json", 400, "bad_request"),
    (b"[1, 2]", 400, "bad_request"),
    (b'"a string"', 400, "bad_request"),
    (orjson.dumps({"body": "no id"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "hi", "extra": 1}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": 5, "body": "hi"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": 5}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "   \n\t "}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": LONG}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "bell\x07"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "nul\x00"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "c1\x85mid"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "a", "body": "del\x7f"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "", "body": "hi"}), 422, "invalid"),
    (orjson.dumps({"client_msg_id": "i" * 129, "body": "hi"}), 422, "invalid"),
]


@pytest.mark.parametrize("raw,status,code", BAD_SENDS)
async def test_bad_message_bodies_change_nothing(stack, api, user, raw, status, code):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    await api(alice).send(sid, "the only message")
    before = await snapshot(api(alice), sid)
    got, body = await api(alice).request("POST", f"/api/chat/sessions/{sid}/messages", data=raw,
                                         headers={"Content-Type": "application/json"})
    assert (got, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"]
    assert await snapshot(api(alice), sid) == before


async def test_exactly_4000_code_points_and_bidi_marks_are_accepted(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await api(alice).send(sid, "é" * 4000)
    assert status == 201 and len(message["body"]) == 4000
    status, message = await api(alice).send(sid, "\u200fمرحبا\u200e ok\twith tab")
    assert status == 201 and message["body"] == "\u200fمرحبا\u200e ok\twith tab"


BAD_SESSIONS = [
    (b"nope", 400, "bad_request"),
    (orjson.dumps({}), 422, "invalid"),
    (orjson.dumps({"participant_ids": []}), 422, "invalid"),
    (orjson.dumps({"participant_ids": "bob"}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["has space"]}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["x" * 129]}), 422, "invalid"),
    (orjson.dumps({"participant_ids": [f"u{i}" for i in range(50)]}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["bob"], "title": "t" * 201}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["bob"], "title": "line\nbreak"}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["bob"], "owner": "me"}), 422, "invalid"),
    (orjson.dumps({"participant_ids": ["SELF"]}), 422, "invalid"),
]


@pytest.mark.parametrize("raw,status,code", BAD_SESSIONS)
async def test_bad_session_creation_creates_nothing(stack, api, user, raw, status, code):
    me = user("creator")
    raw = raw.replace(b"SELF", me.encode())
    got, body = await api(me).request("POST", "/api/chat/sessions", data=raw)
    assert (got, body["error"]["code"]) == (status, code), body
    _, listing = await api(me).request("GET", "/api/chat/sessions")
    assert listing["sessions"] == []


async def test_fifty_participants_with_the_creator_is_the_limit(stack, api, user):
    me = user("big")
    others = [f"{me}-{i}" for i in range(49)]
    session = await api(me).create_session(*others)
    assert len(session["participants"]) == 50


BAD_QUERIES = [
    ("messages", {"limit": "0"}), ("messages", {"limit": "101"}), ("messages", {"limit": "x"}),
    ("messages", {"before_seq": "3", "after_seq": "1"}), ("messages", {"before_seq": "-1"}),
    ("messages", {"color": "red"}), ("events", {"limit": "1001"}), ("events", {"after_seq": "x"}),
    # Numbers are plain digits (a lax parse would take these), and seqs lie in the stream.
    ("messages", {"limit": "5.0"}), ("messages", {"limit": " 5"}), ("events", {"after_seq": "+1"}),
    ("events", {"after_seq": "1_0"}), ("messages", {"after_seq": "99"}),
    ("messages", {"before_seq": "99"}), ("events", {"after_seq": "99"}),
]


@pytest.mark.parametrize("what,params", BAD_QUERIES)
async def test_bad_paging_is_422(stack, api, user, what, params):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, body = await api(alice).request("GET", f"/api/chat/sessions/{sid}/{what}",
                                            params=params)
    assert status == 422 and body["error"]["code"] == "invalid", body


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"cursor": "garbage!"},
                                    {"x": "1"}])
async def test_bad_listing_query_is_422(stack, api, user, params):
    status, body = await api(user()).request("GET", "/api/chat/sessions", params=params)
    assert status == 422 and body["error"]["code"] == "invalid", body


# ---- WebSocket -------------------------------------------------------------------------------

async def test_bad_frames_get_error_frames_and_the_socket_stays_open(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    await api(alice).send(sid, "keep")
    before = await snapshot(api(alice), sid)
    ws = await Ws.connect(http, stack.ws_url, stack.token(alice))
    cases = [
        ("{oops", "bad_request"),
        ("[1]", "bad_request"),
        ('{"type": "launch_rockets", "ref": "r"}', "invalid"),
        ('{"ref": "r"}', "invalid"),
        (f'{{"type": "send_message", "ref": "r", "session_id": "{sid}"}}', "invalid"),
        (f'{{"type": "send_message", "ref": "r", "session_id": "{sid}", "client_msg_id": "a",'
         ' "body": ""}', "invalid"),
        (f'{{"type": "send_message", "ref": "r", "session_id": "{sid}", "client_msg_id": "a",'
         ' "body": "x", "extra": true}', "invalid"),
        ('{"type": "join_session", "ref": "r", "session_id": "not-a-uuid"}', "invalid"),
        (f'{{"type": "join_session", "ref": "r", "session_id": "{sid}", "after_seq": -1}}',
         "invalid"),
        # Past the last seq: the live messages after it would never be sent.
        (f'{{"type": "join_session", "ref": "r", "session_id": "{sid}", "after_seq": 50}}',
         "invalid"),
        # The wrong types, though a lax parse would read them as numbers.
        (f'{{"type": "join_session", "ref": "r", "session_id": "{sid}", "after_seq": "1"}}',
         "invalid"),
        (f'{{"type": "mark_read", "ref": "r", "session_id": "{sid}", "up_to_seq": "1"}}',
         "invalid"),
        (f'{{"type": "mark_read", "ref": "r", "session_id": "{sid}", "up_to_seq": true}}',
         "invalid"),
        (f'{{"type": "mark_read", "ref": "r", "session_id": "{sid}", "up_to_seq": 1.0}}',
         "invalid"),
    ]
    for raw, code in cases:
        await ws.ws.send_str(raw)
        frame = await ws.until(lambda f: f["type"] == "error")
        assert frame["code"] == code, (raw, frame)
        assert frame["message"]
    await ws.ws.send_bytes(b"\x00\x01")
    assert (await ws.until(lambda f: f["type"] == "error"))["code"] == "bad_request"
    assert (await ws.request({"type": "ping"}))["type"] == "pong"
    assert await snapshot(api(alice), sid) == before
    await ws.close()


async def test_frame_over_64_kib_closes_with_1009(stack, http, user):
    ws = await Ws.connect(http, stack.ws_url, stack.token(user()))
    padded = '{"type": "ping", "ref": "r"}'
    padded += " " * (64 * 1024 - len(padded))  # exactly 64 KiB: not over the limit
    await ws.ws.send_str(padded)
    assert await ws.until(lambda f: f["type"] == "pong") == {"type": "pong", "ref": "r"}
    await ws.ws.send_str(padded + " ")
    assert await ws.closed() == 1009


async def test_foreign_origin_is_refused_before_upgrade(stack, http, user):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(stack.ws_url, origin="https://evil.example",
                              headers={"Authorization": f"Bearer {stack.token(user())}"})
    assert refused.value.status == 403
    ws = await Ws.connect(http, stack.ws_url, stack.token(user()), origin="http://localhost:8080")
    assert ws.hello["type"] == "hello"
    await ws.close()


async def test_token_expiring_while_connected_closes_with_1008(stack, http, user):
    ws = await Ws.connect(http, stack.ws_url, stack.token(user(), ttl_s=2))
    assert await ws.closed(timeout=15) == 1008


async def test_sending_past_the_rate_limit_gets_rate_limited_with_retry_after(stack, http, api,
                                                                             user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    ws = await Ws.connect(http, stack.ws_url, stack.token(alice))
    for i in range(30):
        await ws.send({"type": "send_message", "session_id": sid, "client_msg_id": f"r{i}",
                       "body": f"burst {i}", "ref": f"r{i}"})
    answers = [await ws.until(lambda f: f.get("ref", "").startswith("r")
                              and f["type"] in ("ack", "error")) for _ in range(30)]
    limited = [a for a in answers if a["type"] == "error"]
    assert limited and all(a["code"] == "rate_limited" and a["retry_after"] > 0
                           for a in limited)
    acked = [a for a in answers if a["type"] == "ack"]
    assert 20 <= len(acked) < 30
    _, page = await api(alice).request("GET", f"/api/chat/sessions/{sid}/messages",
                                       params={"limit": "100"})
    assert len(page["messages"]) == len(acked)
    # HTTP shares the bucket. It refills at 10 tokens/s, so while the answers above came in,
    # a token may have come back: of a few quick sends one is refused.
    for _ in range(3):
        status, body = await api(alice).send(sid, "one more over HTTP")
        if status != 201:
            break
    assert status == 429 and body["error"]["code"] == "rate_limited"
    await ws.close()
