"""Receipts, redaction, membership, notifications, moderation and projection rebuilds,
driven through the gateway."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg
import pytest

from ..support.client import Ws

pytestmark = pytest.mark.e2e


async def test_receipts_move_forward_only_and_everyone_sees_them(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    for i in range(3):
        await api(alice).send(sid, f"m{i}")
    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await a.join(sid)
    joined = await b.join(sid)
    assert joined["receipts"][alice] == {"delivered_seq": 3, "read_seq": 3}
    assert joined["receipts"][bob] == {"delivered_seq": 0, "read_seq": 0}
    status, listing = await api(bob).request("GET", f"/api/chat/sessions/{sid}")
    assert listing["unread_count"] == 3

    ack = await b.request({"type": "mark_delivered", "session_id": sid, "up_to_seq": 3})
    assert ack == {"type": "ack", "ref": ack["ref"], "session_id": sid, "user_id": bob,
                   "delivered_seq": 3, "read_seq": 0}
    seen = await a.until(lambda f: f["type"] == "messages_delivered")
    assert seen == {"type": "messages_delivered", "session_id": sid, "user_id": bob,
                    "up_to_seq": 3}
    ack = await b.request({"type": "mark_read", "session_id": sid, "up_to_seq": 2})
    assert (ack["delivered_seq"], ack["read_seq"]) == (3, 2)
    assert (await a.until(lambda f: f["type"] == "messages_read"))["up_to_seq"] == 2
    _, session = await api(bob).request("GET", f"/api/chat/sessions/{sid}")
    assert session["unread_count"] == 1

    # Backward: answered with the stored markers, nothing changes, nobody is told.
    ack = await b.request({"type": "mark_read", "session_id": sid, "up_to_seq": 1})
    assert (ack["delivered_seq"], ack["read_seq"]) == (3, 2)
    # Beyond the last seq: invalid.
    error = await b.request({"type": "mark_read", "session_id": sid, "up_to_seq": 99})
    assert error["type"] == "error" and error["code"] == "invalid"

    _, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    last_id = page["messages"][-1]["id"]
    status, marker = await api(bob).request("PUT", f"/api/chat/messages/{last_id}/read")
    assert status == 200 and marker == {"session_id": sid, "user_id": bob, "read_seq": 3}
    assert (await a.until(lambda f: f["type"] == "messages_read"))["up_to_seq"] == 3
    _, session = await api(bob).request("GET", f"/api/chat/sessions/{sid}")
    assert session["unread_count"] == 0
    assert not [f for f in a.received if f["type"] == "messages_read" and f["up_to_seq"] == 1]
    status, _ = await api(user("eve")).request("PUT", f"/api/chat/messages/{last_id}/read")
    assert status == 404
    await a.close()
    await b.close()


async def test_deleting_erases_the_text_from_every_table(stack, http, api, user, backends):
    alice, bob, admin = user("alice"), user("bob"), user("admin")
    sid = (await api(alice).create_session(bob))["id"]
    secret = f"secret-{uuid.uuid4().hex}"
    status, message = await api(alice).send(sid, f"my {secret} here")
    await api(bob).send(sid, "reply stays")
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await b.join(sid)

    status, body = await api(bob).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api(user("eve")).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 404
    status, _ = await api(alice).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 204
    live = await b.until(lambda f: f["type"] == "message_deleted")
    assert live == {"type": "message_deleted", "session_id": sid, "seq": 3,
                    "message_id": message["id"], "message_seq": 1}
    status, _ = await api(alice).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 204  # already deleted

    _, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    tomb = page["messages"][0]
    assert (tomb["seq"], tomb["deleted"], tomb["body"], tomb["attachment"]) == (1, True, None,
                                                                                None)
    _, events = await api(bob).request("GET", f"/api/chat/sessions/{sid}/events",
                                       params={"after_seq": "0"})
    assert events["events"][0]["message"]["deleted"] is True
    assert events["events"][-1]["type"] == "message_deleted"
    assert secret not in str(events)
    fresh = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await fresh.join(sid, after_seq=0)
    backlog = [await fresh.until(lambda f, n=n: f.get("seq") == n) for n in (1, 2, 3)]
    assert backlog[0]["message"]["body"] is None and backlog[2]["type"] == "message_deleted"

    # An admin moderates: deletes bob's message in a session the admin is not in.
    _, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    status, _ = await api(admin, "admin").request(
        "DELETE", f"/api/chat/messages/{page['messages'][1]['id']}")
    assert status == 204

    conn = await asyncpg.connect(stack.base_env()["CHAT_MESSAGING_DATABASE_URL"])
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        assert {"events", "messages", "sessions", "receipts", "participants"} <= set(tables)
        for table in tables:
            hits = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE $1', f"%{secret}%")
            assert hits == 0, f"{table} still holds the deleted text"
    finally:
        await conn.close()
    await b.close()
    await fresh.close()


async def test_membership_changes_are_stream_events_and_removal_cuts_off_at_once(
        stack, http, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    sid = (await api(alice).create_session(bob))["id"]
    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))  # connected, not joined
    c = await Ws.connect(http, stack.ws_url, stack.token(carol))
    await a.join(sid)

    status, session = await api(alice).request("POST", f"/api/chat/sessions/{sid}/participants",
                                               json={"user_id": carol})
    assert status == 200 and carol in [p["user_id"] for p in session["participants"]]
    added = await a.until(lambda f: f["type"] == "participant_added")
    assert added == {"type": "participant_added", "session_id": sid, "seq": 1,
                     "user_id": carol, "by": alice}
    # Carol has not joined it yet, nor has Bob: their sockets are told at user level.
    assert (await c.until(lambda f: f["type"] == "participant_added"))["user_id"] == carol
    assert await b.until(lambda f: f["type"] == "participant_added") == added

    await c.join(sid)
    await api(alice).send(sid, "welcome carol")
    assert (await c.until(lambda f: f["type"] == "new_message"))["seq"] == 2

    status, body = await api(bob).request("POST", f"/api/chat/sessions/{sid}/participants",
                                          json={"user_id": user("dave")})
    assert status == 403  # members do not manage
    status, body = await api(alice).request("POST", f"/api/chat/sessions/{sid}/participants",
                                            json={"user_id": carol})
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await api(alice).request("POST", f"/api/chat/sessions/{sid}/participants",
                                            json={"user_id": "no spaces allowed"})
    assert status == 422
    status, body = await api(alice).request(
        "DELETE", f"/api/chat/sessions/{sid}/participants/{carol}%0A")  # no such user id
    assert status == 404 and body["error"]["code"] == "not_found", body

    status, _ = await api(alice).request("DELETE",
                                         f"/api/chat/sessions/{sid}/participants/{carol}")
    assert status == 204
    removed = await c.until(lambda f: f["type"] == "participant_removed")
    assert removed["user_id"] == carol and removed["seq"] == 3
    await api(alice).send(sid, "carol cannot see this")
    assert (await a.until(lambda f: f["type"] == "new_message" and f["seq"] == 4))
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in c.received if f.get("seq") == 4]
    status, _ = await api(carol).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert status == 404

    # Leaving: bob removes himself; the owner cannot be left alone with nobody.
    status, _ = await api(bob).request("DELETE", f"/api/chat/sessions/{sid}/participants/{bob}")
    assert status == 204
    status, body = await api(alice).request("DELETE",
                                            f"/api/chat/sessions/{sid}/participants/{alice}")
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await api(alice).request("DELETE",
                                            f"/api/chat/sessions/{sid}/participants/{carol}")
    assert status == 404
    _, session = await api(alice).request("GET", f"/api/chat/sessions/{sid}")
    assert [p["user_id"] for p in session["participants"]] == [alice]
    assert session["last_seq"] == 5
    await a.close()
    await b.close()
    await c.close()


async def test_notifications_reach_sockets_that_have_not_joined_never_both(stack, http, api,
                                                                          user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    bob_joined = await Ws.connect(http, stack.ws_url, stack.token(bob))
    bob_elsewhere = await Ws.connect(http, stack.ws_url, stack.token(bob))
    alice_elsewhere = await Ws.connect(http, stack.ws_url, stack.token(alice))
    await bob_joined.join(sid)
    long_text = "n" * 150
    _, message = await api(alice).send(sid, long_text)
    note = await bob_elsewhere.until(lambda f: f["type"] == "notification")
    assert note == {"type": "notification", "session_id": sid, "message": {
        "id": message["id"], "seq": 1, "sender_id": alice, "kind": "text",
        "preview": "n" * 100}}
    assert (await bob_joined.until(lambda f: f["type"] == "new_message"))["seq"] == 1
    for ws in (bob_joined, bob_elsewhere, alice_elsewhere):
        assert (await ws.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in bob_joined.received if f["type"] == "notification"]
    assert not [f for f in bob_elsewhere.received if f["type"] == "new_message"]
    assert not [f for f in alice_elsewhere.received if f["type"] == "notification"]
    for ws in (bob_joined, bob_elsewhere, alice_elsewhere):
        await ws.close()


async def test_admin_lists_and_reads_every_session(stack, api, user):
    alice, bob, admin = user("alice"), user("bob"), user("admin")
    sid = (await api(alice).create_session(bob))["id"]
    status, listing = await api(admin, "admin").request("GET", "/api/chat/sessions",
                                                        params={"all": "true", "limit": "100"})
    assert status == 200 and sid in [s["id"] for s in listing["sessions"]]
    status, body = await api(alice).request("GET", "/api/chat/sessions", params={"all": "true"})
    assert status == 403
    status, session = await api(admin, "admin").request("GET", f"/api/chat/sessions/{sid}")
    assert status == 200 and session["id"] == sid


async def test_rebuilt_projections_equal_the_live_ones(stack, http, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    sid = (await api(alice).create_session(bob, title="rebuild"))["id"]
    other = (await api(bob).create_session(carol))["id"]
    ids = []
    for i in range(6):
        _, m = await api(alice if i % 2 else bob).send(sid, f"text {i}")
        ids.append(m["id"])
    await api(alice).request("POST", f"/api/chat/sessions/{sid}/participants",
                             json={"user_id": carol})
    await api(carol).send(sid, "hi all")
    await api(alice).request("DELETE", f"/api/chat/messages/{ids[1]}")
    await api(bob).request("PUT", f"/api/chat/messages/{ids[3]}/read")
    await api(alice).request("DELETE", f"/api/chat/sessions/{sid}/participants/{bob}")
    await api(carol).send(other, "second session")
    b = await Ws.connect(http, stack.ws_url, stack.token(carol))
    await b.request({"type": "mark_delivered", "session_id": sid, "up_to_seq": 8})
    await b.close()

    url = stack.base_env()["CHAT_MESSAGING_DATABASE_URL"]
    before = await projection_rows(url)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.messaging", "rebuild-projections"],
        env=stack.base_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "rebuilt projections from" in result.stdout
    after = await projection_rows(url)
    assert after == before and len(after["messages"]) >= 8


async def projection_rows(url: str) -> dict[str, list]:
    conn = await asyncpg.connect(url)
    try:
        return {table: [tuple(r) for r in await conn.fetch(
            f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in ("sessions", "participants", "messages", "receipts")}
    finally:
        await conn.close()
