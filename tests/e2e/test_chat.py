"""Two users chat through the gateway, over HTTP and WebSocket, as client apps do."""

from __future__ import annotations

import uuid

import pytest

from ..support.client import Ws

pytestmark = pytest.mark.e2e


async def test_two_users_chat_live_over_websocket(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    session = await api(alice).create_session(bob, title="Reading")
    sid = session["id"]
    assert [p["role"] for p in session["participants"]] == ["owner", "member"]
    assert session["last_seq"] == 0 and session["last_message"] is None

    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    assert a.hello["user_id"] == alice and a.hello["connection_id"]
    joined_a, joined_b = await a.join(sid), await b.join(sid)
    assert joined_a["last_seq"] == 0
    assert {p["user_id"] for p in joined_b["participants"]} == {alice, bob}
    assert joined_b["backlog_truncated"] is False

    ack = await a.request({"type": "send_message", "session_id": sid,
                           "client_msg_id": "m1", "body": "  Hello, Bob\r\nأهلا  "})
    assert ack["type"] == "ack"
    message = ack["message"]
    assert message["seq"] == 1 and message["body"] == "Hello, Bob\nأهلا"
    assert message["sender_id"] == alice and message["kind"] == "text"

    got_b = await b.until(lambda f: f["type"] == "new_message")
    got_a = await a.until(lambda f: f["type"] == "new_message")
    assert got_b["message"] == message and got_b["seq"] == 1 and got_b["session_id"] == sid
    assert got_a["message"]["id"] == message["id"]

    reply = await b.request({"type": "send_message", "session_id": sid,
                             "client_msg_id": "r1", "body": "Hi Alice"})
    got = await a.until(lambda f: f["type"] == "new_message" and f["seq"] == 2)
    assert got["message"]["id"] == reply["message"]["id"]
    await a.close()
    await b.close()


async def test_join_with_after_seq_delivers_backlog_then_live_without_gaps(stack, http, api,
                                                                           user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    for i in range(5):
        status, _ = await api(alice).send(sid, f"m{i}")
        assert status == 201
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    joined = await b.join(sid, after_seq=2)
    assert joined["last_seq"] == 5
    backlog = [await b.until(lambda f: f["type"] == "new_message") for _ in range(3)]
    assert [f["seq"] for f in backlog] == [3, 4, 5]
    status, _ = await api(alice).send(sid, "live")
    live = await b.until(lambda f: f["type"] == "new_message")
    assert live["seq"] == 6 and live["message"]["body"] == "live"
    # Nothing was sent twice.
    seqs = [f["seq"] for f in b.received if f["type"] == "new_message"]
    assert seqs == [3, 4, 5, 6]
    await b.close()


async def test_join_without_after_seq_sends_no_backlog(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    await api(alice).send(sid, "before")
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    joined = await b.join(sid)
    assert joined["last_seq"] == 1
    await api(alice).send(sid, "after")
    live = await b.until(lambda f: f["type"] == "new_message")
    assert live["seq"] == 2
    assert [f["seq"] for f in b.received if f["type"] == "new_message"] == [2]
    await b.close()


async def test_leave_session_stops_live_events(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await b.join(sid)
    assert (await b.request({"type": "leave_session", "session_id": sid}))["type"] == "ack"
    await api(alice).send(sid, "you left")
    # A ping round trip after the send: anything for the session would have come first.
    status, _ = await api(alice).send(sid, "and again")
    assert status == 201
    pong = await b.request({"type": "ping"})
    assert pong["type"] == "pong"
    assert not [f for f in b.received if f["type"] == "new_message"]
    await b.close()


async def test_history_pages_by_seq(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    for i in range(1, 8):
        await api(alice if i % 2 else bob).send(sid, f"message {i}")
    path = f"/api/chat/sessions/{sid}/messages"
    status, page = await api(bob).request("GET", path, params={"limit": "3"})
    assert status == 200
    assert [m["seq"] for m in page["messages"]] == [5, 6, 7] and page["has_more"] is True
    status, page = await api(bob).request("GET", path, params={"limit": "3", "before_seq": "5"})
    assert [m["seq"] for m in page["messages"]] == [2, 3, 4] and page["has_more"] is True
    status, page = await api(bob).request("GET", path, params={"limit": "3", "before_seq": "2"})
    assert [m["seq"] for m in page["messages"]] == [1] and page["has_more"] is False
    status, page = await api(bob).request("GET", path, params={"after_seq": "4", "limit": "2"})
    assert [m["seq"] for m in page["messages"]] == [5, 6] and page["has_more"] is True
    status, page = await api(bob).request("GET", path, params={"after_seq": "6"})
    assert [m["seq"] for m in page["messages"]] == [7] and page["has_more"] is False
    status, page = await api(bob).request("GET", path)
    assert [m["seq"] for m in page["messages"]] == list(range(1, 8))

    status, events = await api(bob).request("GET", f"/api/chat/sessions/{sid}/events",
                                            params={"after_seq": "5"})
    assert status == 200 and events["has_more"] is False
    assert [(e["type"], e["seq"]) for e in events["events"]] == [("new_message", 6),
                                                                 ("new_message", 7)]


async def test_retried_send_creates_nothing_and_conflicts_on_other_body(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, first = await api(alice).send(sid, "once", client_msg_id="same")
    assert status == 201
    status, again = await api(alice).send(sid, "once", client_msg_id="same")
    assert status == 200 and again == first
    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    ack = await a.request({"type": "send_message", "session_id": sid, "client_msg_id": "same",
                           "body": "once"})
    assert ack["message"] == first
    status, error = await api(alice).send(sid, "something else", client_msg_id="same")
    assert status == 409 and error["error"]["code"] == "conflict"
    status, page = await api(alice).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert [m["body"] for m in page["messages"]] == ["once"]
    status, session = await api(alice).request("GET", f"/api/chat/sessions/{sid}")
    assert session["last_seq"] == 1
    await a.close()


async def test_session_listing_newest_first_with_unread_counts_and_cursor(stack, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    first = (await api(alice).create_session(bob, title="first"))["id"]
    second = (await api(alice).create_session(bob, carol, title="second"))["id"]
    third = (await api(carol).create_session(bob, title="third"))["id"]
    await api(alice).send(first, "newest activity is here")
    await api(bob).send(first, "bob's own message is not unread for bob")
    status, page = await api(bob).request("GET", "/api/chat/sessions", params={"limit": "2"})
    assert status == 200
    assert [s["id"] for s in page["sessions"]] == [first, third]
    assert page["sessions"][0]["unread_count"] == 0  # bob sent the last one: read marker moved
    assert page["sessions"][0]["last_message"]["body"].startswith("bob's own")
    assert page["next_cursor"]
    status, rest = await api(bob).request("GET", "/api/chat/sessions",
                                          params={"limit": "2", "cursor": page["next_cursor"]})
    assert [s["id"] for s in rest["sessions"]] == [second] and rest["next_cursor"] is None
    status, alice_view = await api(alice).request("GET", "/api/chat/sessions")
    by_id = {s["id"]: s for s in alice_view["sessions"]}
    assert set(by_id) == {first, second}
    assert by_id[first]["unread_count"] == 1


async def test_outsider_sees_nothing(stack, http, api, user):
    alice, bob, eve = user("alice"), user("bob"), user("eve")
    sid = (await api(alice).create_session(bob))["id"]
    await api(alice).send(sid, "private")
    for method, path in [("GET", f"/api/chat/sessions/{sid}"),
                         ("GET", f"/api/chat/sessions/{sid}/messages"),
                         ("GET", f"/api/chat/sessions/{sid}/events")]:
        status, body = await api(eve).request(method, path)
        assert status == 404 and body["error"]["code"] == "not_found", (path, body)
        assert "private" not in str(body)
    status, body = await api(eve).send(sid, "let me in")
    assert status == 404
    status, listing = await api(eve).request("GET", "/api/chat/sessions")
    assert listing["sessions"] == []
    e = await Ws.connect(http, stack.ws_url, stack.token(eve))
    answer = await e.request({"type": "join_session", "session_id": sid, "after_seq": 0})
    assert answer["type"] == "error" and answer["code"] == "not_found"
    answer = await e.request({"type": "send_message", "session_id": sid, "client_msg_id": "x",
                              "body": "hi"})
    assert answer["code"] == "not_found"
    # Bob keeps chatting; eve's socket never sees any of it.
    await api(bob).send(sid, "still private")
    assert (await e.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in e.received if f["type"] == "new_message"]
    status, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert [m["body"] for m in page["messages"]] == ["private", "still private"]
    await e.close()


async def test_admin_reads_any_session_but_does_not_post(stack, api, user):
    alice, bob, admin = user("alice"), user("bob"), user("admin")
    sid = (await api(alice).create_session(bob))["id"]
    await api(alice).send(sid, "hello")
    status, page = await api(admin, "admin").request("GET", f"/api/chat/sessions/{sid}/messages")
    assert status == 200 and [m["body"] for m in page["messages"]] == ["hello"]
    status, body = await api(admin, "admin").send(sid, "I am not in this session")
    assert status == 403 and body["error"]["code"] == "forbidden"


async def test_unknown_session_id_is_not_found(stack, api, user):
    me = user()
    for sid in (str(uuid.uuid4()), "not-a-uuid"):
        status, body = await api(me).request("GET", f"/api/chat/sessions/{sid}")
        assert status == 404 and body["error"]["code"] == "not_found"


async def test_a_send_followed_at_once_by_leaving_the_session_is_still_acked(stack, http, api,
                                                                            user):
    """The ack of a send from a joined connection comes with the message's own event; leaving
    the session right after sending must not stop that event from coming (the ack would
    otherwise be a 503 although the message was stored)."""
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    await a.join(sid)
    await a.send({"type": "send_message", "session_id": sid, "client_msg_id": "m1",
                  "body": "bye", "ref": "send"})
    await a.send({"type": "leave_session", "session_id": sid, "ref": "leave"})
    acked = await a.until(lambda f: f.get("ref") == "send")
    left = await a.until(lambda f: f.get("ref") == "leave")
    assert acked["type"] == "ack" and acked["message"]["body"] == "bye", acked
    assert left["type"] == "ack"
    _, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert [m["id"] for m in page["messages"]] == [acked["message"]["id"]]
    await a.close()
