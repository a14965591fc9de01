"""The audit log through the gateway: a scripted scenario leaves the expected entries, in order,
without any message text; admins query with filters and cursors; everyone else gets 403, and
every query is itself recorded."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson
import pytest

from shared.contracts.registry import REGISTRY

from ..support.client import Ws

pytestmark = pytest.mark.e2e


def rid(step: str) -> str:
    return f"{step}-{uuid.uuid4().hex[:12]}"


async def entry_for(stack, request_id: str, action: str | None = None,
                    within_s: float = 15.0) -> asyncpg.Record:
    """Wait until the audit has recorded the request (read straight from its database, so
    waiting does not itself add ``audit.queried`` entries)."""
    conn = await asyncpg.connect(stack.backends.database_url("audit"))
    try:
        deadline = time.monotonic() + within_s
        while True:
            row = await conn.fetchrow(
                "SELECT * FROM audit_log WHERE request_id = $1 "
                "AND ($2::text IS NULL OR action = $2) ORDER BY seq LIMIT 1",
                request_id, action)
            if row is not None:
                return row
            assert time.monotonic() < deadline, f"no audit entry for {request_id} {action}"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_scripted_scenario_is_audited_in_order_without_content(stack, api, user):
    alice, bob, root, eve = user("alice"), user("bob"), user("root"), user("eve")
    secret = f"the secret is {uuid.uuid4().hex}"
    started = datetime.now(UTC)
    expected: list[tuple[str, str, str]] = []  # (action, actor, outcome)

    create = rid("create")
    status, session = await api(alice).request(
        "POST", "/api/chat/sessions", json={"participant_ids": [bob]},
        headers={"X-Request-Id": create})
    assert status == 201
    sid = session["id"]
    await entry_for(stack, create, "session.created")
    expected.append(("session.created", alice, "ok"))

    send = rid("send")
    status, message = await api(alice).request(
        "POST", f"/api/chat/sessions/{sid}/messages",
        json={"client_msg_id": "c1", "body": secret}, headers={"X-Request-Id": send})
    assert status == 201
    sent = await entry_for(stack, send, "message.sent")
    assert sent["target_id"] == message["id"]
    expected.append(("message.sent", alice, "ok"))

    upload = rid("upload")
    form = aiohttp.FormData()
    form.add_field("file", f"file contents: {secret}\n".encode(), filename="notes.txt",
                   content_type="text/plain")
    form.add_field("client_msg_id", "u1")
    status, with_file = await api(alice).request(
        "POST", f"/api/chat/sessions/{sid}/upload", data=form,
        headers={"X-Request-Id": upload})
    if status == 201:  # media is part of this build
        attachment_id = with_file["attachment"]["id"]
        stored = await entry_for(stack, upload, "attachment.stored")
        file_sent = await entry_for(stack, upload, "message.sent")
        assert stored["target_id"] == attachment_id
        assert file_sent["target_id"] == with_file["id"]
        # Media and messaging publish through their own outboxes: either may come first.
        expected += [(row["action"], alice, "ok")
                     for row in sorted((stored, file_sent), key=lambda r: r["seq"])]
        url = rid("url")
        status, _ = await api(bob).request(
            "GET", f"/api/chat/attachments/{attachment_id}", params={"redirect": "0"},
            headers={"X-Request-Id": url})
        assert status == 200
        issued = await entry_for(stack, url, "attachment.url_issued")
        assert (issued["actor_id"], issued["target_id"]) == (bob, attachment_id)
        expected.append(("attachment.url_issued", bob, "ok"))

    read = rid("read")
    status, _ = await api(bob).request("PUT", f"/api/chat/messages/{message['id']}/read",
                                       headers={"X-Request-Id": read})
    if status == 200:  # receipts exist in this build
        await entry_for(stack, read, "receipt.read")
        expected.append(("receipt.read", bob, "ok"))

    admin_read = rid("admin-read")
    status, page = await api(root, "admin").request(
        "GET", f"/api/chat/sessions/{sid}/messages", headers={"X-Request-Id": admin_read})
    assert status == 200
    if "session_accessed_by_admin" in REGISTRY:  # messaging records admin access
        await entry_for(stack, admin_read, "session.admin_access")
        expected.append(("session.admin_access", root, "ok"))

    outsider = rid("outsider")
    status, _ = await api(eve).request("GET", f"/api/chat/sessions/{sid}",
                                       headers={"X-Request-Id": outsider})
    assert status == 404
    denied = await entry_for(stack, outsider, "access.denied")
    assert (denied["target_id"], denied["actor_role"]) == (sid, "client")
    expected.append(("access.denied", eve, "denied"))

    delete = rid("delete")
    status, _ = await api(alice).request("DELETE", f"/api/chat/messages/{message['id']}",
                                         headers={"X-Request-Id": delete})
    if status == 204:  # redaction exists in this build
        deleted = await entry_for(stack, delete, "message.deleted")
        assert deleted["target_id"] == message["id"]
        expected.append(("message.deleted", alice, "ok"))

    bad_login = rid("bad-login")
    status, _ = await api(alice).request("GET", "/api/chat/sessions", token="not-a-jwt",
                                         headers={"X-Request-Id": bad_login})
    assert status == 401
    failed = await entry_for(stack, bad_login, "auth.failed")
    assert failed["actor_id"] is None and failed["outcome"] == "failed"

    # The admin reads the session's trail over HTTP: every step, in order, no content.
    query = rid("query")
    status, body = await api(root, "admin").request(
        "GET", "/api/admin/audit", params={"session_id": sid},
        headers={"X-Request-Id": query})
    assert status == 200, body
    entries = body["entries"]
    assert [(e["action"], e["actor_id"], e["outcome"]) for e in entries] == expected
    assert body["next_cursor"] is None
    assert all(e["session_id"] == sid for e in entries)
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)
    assert entries[0]["request_id"] == create
    assert set(entries[0]) == {"id", "seq", "occurred_at", "actor_id", "actor_role", "action",
                               "session_id", "target_id", "request_id", "outcome",
                               "prev_hash", "hash"}
    assert secret not in orjson.dumps(body).decode()

    # The failed login is found by action and time; the admin's own query was recorded.
    status, body = await api(root, "admin").request(
        "GET", "/api/admin/audit",
        params={"action": "auth.failed", "since": started.isoformat(), "limit": "100"})
    assert status == 200
    assert bad_login in [e["request_id"] for e in body["entries"]]
    queried = await entry_for(stack, query, "audit.queried")
    assert (queried["actor_id"], queried["actor_role"], queried["outcome"]) == (
        root, "admin", "ok")
    assert str(queried["session_id"]) == sid

    # Nothing anywhere in the log holds the message text.
    conn = await asyncpg.connect(stack.backends.database_url("audit"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM audit_log "
                                   "WHERE row_to_json(audit_log)::text LIKE $1",
                                   f"%{secret[-32:]}%") == 0
    finally:
        await conn.close()


async def test_only_admins_query_the_audit_and_refusals_are_recorded(stack, api, user):
    eve, reader = user("eve"), user("reader")
    for who, role in ((eve, "client"), (reader, "reader")):
        request_id = rid("peek")
        status, body = await api(who, role).request("GET", "/api/admin/audit",
                                                    headers={"X-Request-Id": request_id})
        assert status == 403 and body["error"]["code"] == "forbidden"
        denied = await entry_for(stack, request_id, "access.denied")
        assert (denied["actor_id"], denied["actor_role"]) == (who, role)
        assert denied["target_id"] == "/api/admin/audit"
    status, _ = await api(eve).request("GET", "/api/admin/audit", token="")
    assert status == 401


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "101"}, {"action": "message.edited"}, {"session_id": "nope"},
    {"since": "yesterday"}, {"since": "2024-01-01T00:00:00"}, {"cursor": "garbage"},
    {"color": "red"}, {"actor_id": "bad id"},
])
async def test_bad_filters_are_invalid(stack, api, user, params):
    status, body = await api(user("root"), "admin").request("GET", "/api/admin/audit",
                                                            params=params)
    assert status == 422, body
    assert body["error"]["code"] == "invalid"


async def test_cursor_paging_walks_every_entry_once(stack, api, user):
    alice, root = user("alice"), user("root")
    sid = (await api(alice).create_session(user("bob")))["id"]
    last = rid("last")
    for i in range(4):
        status, _ = await api(alice).request(
            "POST", f"/api/chat/sessions/{sid}/messages",
            json={"client_msg_id": f"c{i}", "body": f"m{i}"},
            headers={"X-Request-Id": last if i == 3 else rid("send")})
        assert status == 201
    await entry_for(stack, last, "message.sent")
    status, whole = await api(root, "admin").request(
        "GET", "/api/admin/audit", params={"actor_id": alice, "limit": "100"})
    assert status == 200 and len(whole["entries"]) == 5
    paged, cursor = [], None
    while True:
        params = {"actor_id": alice, "limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = await api(root, "admin").request("GET", "/api/admin/audit",
                                                        params=params)
        assert status == 200 and len(page["entries"]) <= 2
        paged += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == whole["entries"]
    assert [e["action"] for e in paged] == ["session.created"] + ["message.sent"] * 4


async def test_websocket_refusals_are_audited(stack, http, api, user):
    alice, eve = user("alice"), user("eve")
    sid = (await api(alice).create_session(user("bob")))["id"]
    ws = await Ws.connect(http, stack.ws_url, stack.token(eve))
    answer = await ws.request({"type": "join_session", "session_id": sid})
    assert answer["type"] == "error" and answer["code"] == "not_found"
    await ws.close()
    handshake = rid("ws-handshake")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(stack.ws_url, headers={"Authorization": "Bearer forged",
                                                     "X-Request-Id": handshake})
    assert refused.value.status == 401
    failed = await entry_for(stack, handshake, "auth.failed")
    assert failed["target_id"] == "/ws" and failed["actor_id"] is None

    conn = await asyncpg.connect(stack.backends.database_url("audit"))
    try:
        deadline = time.monotonic() + 15
        while (row := await conn.fetchrow(
                "SELECT * FROM audit_log WHERE action = 'access.denied' AND session_id = $1",
                uuid.UUID(sid))) is None:
            assert time.monotonic() < deadline, "the refused join was not audited"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert (row["actor_id"], row["outcome"], row["target_id"]) == (eve, "denied", sid)
