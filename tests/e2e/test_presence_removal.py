"""Presence when a participant is removed from a session they have open (SPEC capability 5):
the others see them leave, and the session's online list no longer has them."""

from __future__ import annotations

import pytest

from ..support.client import Ws

pytestmark = pytest.mark.e2e


async def test_a_removed_participant_with_the_session_open_is_seen_leaving(
        stack, http, api, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    sid = (await api(alice).create_session(bob, carol))["id"]
    a = await Ws.connect(http, stack.ws_url, stack.token(alice))
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await a.join(sid)
    await b.join(sid)
    await a.until(lambda f: f["type"] == "user_joined" and f["user_id"] == bob)

    status, _ = await api(alice).request("DELETE",
                                         f"/api/chat/sessions/{sid}/participants/{bob}")
    assert status == 204
    await b.until(lambda f: f["type"] == "participant_removed")
    went = await a.until(lambda f: f["type"] == "user_left")
    assert went == {"type": "user_left", "session_id": sid, "user_id": bob}
    c = await Ws.connect(http, stack.ws_url, stack.token(carol))
    assert set((await c.join(sid))["online_users"]) == {alice, carol}
    await a.close()
    await b.close()
    await c.close()
