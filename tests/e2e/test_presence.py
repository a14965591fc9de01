"""Presence and typing through the gateway, as client apps see them (SPEC capabilities 5, 6).

The shared stack runs presence with its defaults: offline grace 3 s, typing expiry 6 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ..support.client import Ws

pytestmark = pytest.mark.e2e

TYPING = ("typing_start", "typing_stop")


async def connect(http, stack, user_id) -> Ws:
    return await Ws.connect(http, stack.ws_url, stack.token(user_id))


def presence_of(user_id, status=None):
    return lambda f: (f["type"] == "presence_changed" and f["user_id"] == user_id
                      and (status is None or f["status"] == status))


async def test_typing_reaches_the_others_never_the_typist_and_ends_when_a_message_is_sent(
        stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a, b = await connect(http, stack, alice), await connect(http, stack, bob)
    await a.join(sid)
    await b.join(sid)

    ack = await a.request({"type": "typing_start", "session_id": sid})
    assert ack["type"] == "ack" and ack["session_id"] == sid
    started = await b.until(lambda f: f["type"] == "typing_start")
    assert started == {"type": "typing_start", "session_id": sid, "user_id": alice}

    sent = await a.request({"type": "send_message", "session_id": sid, "client_msg_id": "t1",
                            "body": "done typing"})
    assert sent["type"] == "ack"
    stopped = await b.until(lambda f: f["type"] == "typing_stop")
    assert stopped == {"type": "typing_stop", "session_id": sid, "user_id": alice}
    await b.until(lambda f: f["type"] == "new_message")
    # The typist's own socket saw its message but never its own typing.
    await a.until(lambda f: f["type"] == "new_message")
    assert await a.request({"type": "ping"}) == {"type": "pong", "ref": a.received[-1]["ref"]}
    assert not [f for f in a.received if f["type"] in TYPING]
    await a.close()
    await b.close()


async def test_typing_not_refreshed_ends_by_itself_after_six_seconds(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a, b = await connect(http, stack, alice), await connect(http, stack, bob)
    await a.join(sid)
    await b.join(sid)
    assert (await a.request({"type": "typing_start", "session_id": sid}))["type"] == "ack"
    await b.until(lambda f: f["type"] == "typing_start")
    began = time.monotonic()
    stopped = await b.until(lambda f: f["type"] == "typing_stop", timeout=12)
    waited = time.monotonic() - began
    assert stopped["user_id"] == alice
    assert 4.5 <= waited <= 9.0, waited
    assert not [f for f in a.received if f["type"] in TYPING]
    await a.close()
    await b.close()


async def test_typing_is_rate_limited_per_connection_and_session(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a, b = await connect(http, stack, alice), await connect(http, stack, bob)
    await a.join(sid)
    await b.join(sid)
    answers = [await a.request({"type": "typing_start", "session_id": sid}) for _ in range(5)]
    assert answers[0]["type"] == "ack"
    assert [x["code"] for x in answers[1:]] == ["rate_limited"] * 4
    assert all(0 < x["retry_after"] <= 2.0 for x in answers[1:])
    await b.until(lambda f: f["type"] == "typing_start")
    # Hammering cost one event: bob sees the stop next, and no second start before it.
    assert (await a.request({"type": "typing_stop", "session_id": sid}))["type"] == "ack"
    await b.until(lambda f: f["type"] == "typing_stop")
    assert [f["type"] for f in b.received if f["type"] in TYPING] == list(TYPING)
    await a.close()
    await b.close()


async def test_a_stop_sent_right_behind_its_start_ends_the_typing_at_once(stack, http, api,
                                                                           user):
    """The frames are handled side by side; the stop belongs to the start before it, not a
    stop of nothing (which would count against the typing limit)."""
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a, b = await connect(http, stack, alice), await connect(http, stack, bob)
    await a.join(sid)
    await b.join(sid)
    await a.send({"type": "typing_start", "session_id": sid, "ref": "start"})
    await a.send({"type": "typing_stop", "session_id": sid, "ref": "stop"})
    assert (await a.until(lambda f: f.get("ref") == "start"))["type"] == "ack"
    stopped = await a.until(lambda f: f.get("ref") == "stop")
    assert stopped["type"] == "ack", stopped
    await b.until(lambda f: f["type"] == "typing_stop")
    assert [f["type"] for f in b.received if f["type"] in TYPING] == list(TYPING)
    await a.close()
    await b.close()


async def test_a_join_and_a_leave_sent_together_are_answered_in_order(stack, http, api, user):
    """The leave waits for the join: both get their answer, and the others see the user come
    and go (presence is not left thinking the session open)."""
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    a, b = await connect(http, stack, alice), await connect(http, stack, bob)
    await a.join(sid)
    await b.send({"type": "join_session", "session_id": sid, "after_seq": 0, "ref": "join"})
    await b.send({"type": "leave_session", "session_id": sid, "ref": "leave"})
    answers = [await b.until(lambda f: f.get("ref") in ("join", "leave")) for _ in range(2)]
    assert [(f["ref"], f["type"]) for f in answers] == [("join", "ack"), ("leave", "ack")]
    assert [f["type"] for f in b.received if f["type"] in ("joined", "ack")][:2] == [
        "ack", "joined"]
    await a.until(lambda f: f["type"] == "user_joined" and f["user_id"] == bob)
    await a.until(lambda f: f["type"] == "user_left" and f["user_id"] == bob)
    await a.close()
    await b.close()


async def test_bad_presence_frames_get_the_spec_error_and_change_nothing(stack, http, api, user):
    alice, bob, eve = user("alice"), user("bob"), user("eve")
    sid = (await api(alice).create_session(bob))["id"]
    b = await connect(http, stack, bob)
    await b.join(sid)
    e = await connect(http, stack, eve)

    outsider = await e.request({"type": "typing_start", "session_id": sid})
    assert outsider["type"] == "error" and outsider["code"] == "not_found"
    unknown = await e.request({"type": "typing_start", "session_id": str(uuid.uuid4())})
    assert unknown["code"] == "not_found"
    bad_status = await e.request({"type": "set_presence", "status": "invisible"})
    assert bad_status["type"] == "error" and bad_status["code"] == "invalid"
    no_session = await e.request({"type": "typing_start"})
    assert no_session["code"] == "invalid"
    # The socket stays open and nothing reached the session.
    assert (await e.request({"type": "ping"}))["type"] == "pong"
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in b.received if f["type"] in TYPING]
    a = await connect(http, stack, alice)
    joined = await a.join(sid)
    assert joined["typing"] == []
    await a.close()
    await b.close()
    await e.close()


async def test_join_tells_who_is_online_and_typing_and_others_see_joins_and_leaves(
        stack, http, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    sid = (await api(alice).create_session(bob, carol))["id"]
    a = await connect(http, stack, alice)
    await a.join(sid)
    assert (await a.request({"type": "typing_start", "session_id": sid}))["type"] == "ack"

    b = await connect(http, stack, bob)
    joined = await b.join(sid)
    assert set(joined["online_users"]) == {alice, bob}  # carol is not connected
    assert joined["typing"] == [alice]
    came = await a.until(lambda f: f["type"] == "user_joined")
    assert came == {"type": "user_joined", "session_id": sid, "user_id": bob}

    assert (await b.request({"type": "leave_session", "session_id": sid}))["type"] == "ack"
    went = await a.until(lambda f: f["type"] == "user_left")
    assert went == {"type": "user_left", "session_id": sid, "user_id": bob}
    # Nobody is told about themself.
    assert not [f for f in a.received if f["type"] in ("user_joined", "user_left")
                and f["user_id"] == alice]
    await a.close()
    await b.close()


async def test_presence_changed_reaches_only_users_who_share_a_session(stack, http, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    sid = (await api(alice).create_session(bob))["id"]
    await api(carol).create_session(user("dan"))  # carol shares nothing with alice
    b, c = await connect(http, stack, bob), await connect(http, stack, carol)
    await b.join(sid)

    a = await connect(http, stack, alice)
    online = await b.until(presence_of(alice, "online"))
    assert online["last_seen"]
    online_list = await b.until(lambda f: f["type"] == "online_users"
                                and alice in f["user_ids"])
    assert online_list["session_id"] == sid and bob in online_list["user_ids"]

    assert (await a.request({"type": "set_presence", "status": "away"}))["type"] == "ack"
    await b.until(presence_of(alice, "away"))
    assert (await a.request({"type": "set_presence", "status": "online"}))["type"] == "ack"
    await b.until(presence_of(alice, "online"))

    await a.close()
    offline = await b.until(presence_of(alice, "offline"), timeout=10)
    assert offline["last_seen"]
    await b.until(lambda f: f["type"] == "online_users" and alice not in f["user_ids"])
    # Carol shares no session with alice: she heard nothing about her.
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in c.received if f["type"] == "presence_changed"
                and f["user_id"] == alice]
    await b.close()
    await c.close()


async def test_a_short_reconnect_does_not_flap_the_status_others_see(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    b = await connect(http, stack, bob)
    await b.join(sid)
    a = await connect(http, stack, alice)
    await b.until(presence_of(alice, "online"))
    await a.close()
    a = await connect(http, stack, alice)  # back within the grace (3 s)
    # Showing that something did *not* happen takes waiting past the grace; then a change we
    # cause must be the next thing bob hears about alice.
    await asyncio.sleep(3.5)
    assert (await a.request({"type": "set_presence", "status": "away"}))["type"] == "ack"
    nxt = await b.until(presence_of(alice))
    assert nxt["status"] == "away"
    assert [f["status"] for f in b.received if presence_of(alice)(f)] == ["online", "away"]
    await a.close()
    await b.close()
