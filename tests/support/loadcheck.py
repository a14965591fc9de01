"""A load of real chat clients that records what it sent, what was acknowledged and what each
participant received, and checks the delivery promises afterwards.

Each client behaves as a well-written app: one WebSocket, reconnect with backoff (to any of
the gateways it knows), re-join every session with ``after_seq`` = the last seq it saw, and
resend every unacknowledged message with the same ``client_msg_id`` until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

import aiohttp
import orjson

from .client import Api


@dataclass
class Client:
    user_id: str
    token: str
    session_id: str
    ws_urls: list[str]
    last_seq: int = 0
    received: list[tuple[int, str]] = field(default_factory=list)   # (seq, message id)
    duplicates: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)           # client_msg_id -> body
    sent_at: dict[str, float] = field(default_factory=dict)
    acked: dict[str, dict] = field(default_factory=dict)            # client_msg_id -> message
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    ws: aiohttp.ClientWebSocketResponse | None = None
    live: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        urls = itertools.cycle(self.ws_urls)
        delay = 0.05
        while not stop.is_set() and not http.closed:
            try:
                self.ws = await http.ws_connect(next(urls), headers={
                    "Authorization": f"Bearer {self.token}"}, heartbeat=5)
                await self._session(stop)
                delay = 0.05
            except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError):
                pass
            finally:
                self.live.clear()
                if self.ws is not None and not self.ws.closed:
                    await self.ws.close()
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _session(self, stop: asyncio.Event) -> None:
        await self.ws.send_str(orjson.dumps({"type": "join_session", "ref": "join",
                                             "session_id": self.session_id,
                                             "after_seq": self.last_seq}).decode())
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            if kind == "joined":
                self.live.set()
                for client_msg_id, body in list(self.pending.items()):
                    await self._send(client_msg_id, body)   # resend what was never acked
            elif kind == "new_message":
                self._record(frame)
            elif kind == "ack" and "message" in frame:
                self.acked[frame["ref"]] = frame["message"]
                self.pending.pop(frame["ref"], None)
            elif kind == "error":
                self.errors[frame["code"]] = self.errors.get(frame["code"], 0) + 1
                if frame.get("ref") == "join":
                    break  # reconnect and join again

    def _record(self, frame: dict) -> None:
        seq = frame["seq"]
        if seq <= self.last_seq:
            self.duplicates += 1
            return
        if seq != self.last_seq + 1:
            self.gaps.append((self.last_seq, seq))
        self.last_seq = seq
        self.received.append((seq, frame["message"]["id"]))

    async def resend_overdue(self, older_than: float = 2.0) -> None:
        """An app resends what got no answer (an error, or a reply lost with a gateway)."""
        now = asyncio.get_running_loop().time()
        if self.live.is_set() and self.ws is not None and not self.ws.closed:
            for client_msg_id, body in list(self.pending.items()):
                if now - self.sent_at.get(client_msg_id, 0) > older_than:
                    await self._send(client_msg_id, body)

    async def _send(self, client_msg_id: str, body: str) -> None:
        self.sent_at[client_msg_id] = asyncio.get_running_loop().time()
        try:
            await self.ws.send_str(orjson.dumps({
                "type": "send_message", "ref": client_msg_id, "session_id": self.session_id,
                "client_msg_id": client_msg_id, "body": body}).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass  # resent after the reconnect

    async def send(self, client_msg_id: str, body: str) -> None:
        self.pending[client_msg_id] = body
        if self.live.is_set() and self.ws is not None and not self.ws.closed:
            await self._send(client_msg_id, body)


@dataclass
class LoadCheck:
    """``pairs`` sessions of two users, each user sending ``rate`` messages a second."""

    api_for: object  # (user_id) -> Api
    token_for: object  # (user_id) -> token
    ws_urls: list[str]
    pairs: int = 10
    rate: float = 5.0
    clients: list[Client] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)
    sent: int = 0

    async def start(self, http: aiohttp.ClientSession, prefix: str) -> None:
        for n in range(self.pairs):
            a, b = f"{prefix}-a{n}", f"{prefix}-b{n}"
            session = await self.api_for(a).create_session(b)
            for user in (a, b):
                self.clients.append(Client(user, self.token_for(user), session["id"],
                                           list(self.ws_urls)))
        self.tasks = [asyncio.create_task(c.run(http, self.stop)) for c in self.clients]
        self.tasks.append(asyncio.create_task(self._resend_loop()))
        await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in self.clients)), 30)

    async def _resend_loop(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(0.5)
            for client in self.clients:
                await client.resend_overdue()

    async def send_for(self, seconds: float) -> None:
        """Each client sends at ``rate`` for ``seconds`` (sends while disconnected are queued
        and go out after the reconnect, as an app's outbox does)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        counter = itertools.count()
        while loop.time() < end:
            for client in self.clients:
                n = next(counter)
                await client.send(f"{client.user_id}-{n}", f"load message {n}")
                self.sent += 1
            await asyncio.sleep(1 / self.rate)

    async def settle(self, api: Api, timeout: float = 60.0) -> None:
        """Wait until every message is acknowledged and every client has seen its session up
        to the session's last seq."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not any(c.pending for c in self.clients):
                targets = {}
                for c in self.clients:
                    if c.session_id not in targets:
                        status, s = await api.request("GET", f"/api/chat/sessions/{c.session_id}",
                                                      token=c.token)
                        targets[c.session_id] = s["last_seq"] if status == 200 else -1
                if all(c.last_seq == targets[c.session_id] for c in self.clients):
                    return
            await asyncio.sleep(0.2)
        unacked = sum(len(c.pending) for c in self.clients)
        behind = [(c.user_id, c.last_seq) for c in self.clients]
        raise AssertionError(f"did not settle: {unacked} unacknowledged; seen {behind[:6]}")

    async def close(self) -> None:
        self.stop.set()
        for client in self.clients:
            if client.ws is not None and not client.ws.closed:
                await client.ws.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def verify(self, api: Api) -> dict:
        """The promises: nothing acknowledged is lost, nothing arrives twice, everyone sees
        each session in the same order."""
        report = {"sent": self.sent, "acked": sum(len(c.acked) for c in self.clients),
                  "reconnects": sum(c.reconnects for c in self.clients),
                  "errors": {}}
        for c in self.clients:
            for code, n in c.errors.items():
                report["errors"][code] = report["errors"].get(code, 0) + n
            assert c.duplicates == 0, f"{c.user_id} got {c.duplicates} doubles"
            assert c.gaps == [], f"{c.user_id} saw gaps {c.gaps[:5]}"
        by_session: dict[str, list[Client]] = {}
        for c in self.clients:
            by_session.setdefault(c.session_id, []).append(c)
        for session_id, members in by_session.items():
            history = await full_history(api, session_id, members[0].token)
            ids_in_order = [m["id"] for m in history]
            assert len(ids_in_order) == len(set(ids_in_order))
            assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
            by_client_id = {(m["sender_id"], m["client_msg_id"]): m for m in history}
            assert len(by_client_id) == len(history), "a client_msg_id was stored twice"
            for c in members:
                for client_msg_id, message in c.acked.items():
                    stored = by_client_id.get((c.user_id, client_msg_id))
                    assert stored is not None, f"acknowledged {client_msg_id} was lost"
                    assert stored["id"] == message["id"] and stored["seq"] == message["seq"]
                assert c.received == [(m["seq"], m["id"]) for m in history], \
                    f"{c.user_id} saw another order or missed messages"
        assert report["acked"] == report["sent"]
        return report


async def full_history(api: Api, session_id: str, token: str) -> list[dict]:
    messages, after = [], 0
    while True:
        status, page = await api.request("GET", f"/api/chat/sessions/{session_id}/messages",
                                         params={"after_seq": str(after), "limit": "100"},
                                         token=token)
        assert status == 200, page
        messages += page["messages"]
        if not page["has_more"]:
            return messages
        after = messages[-1]["seq"]
