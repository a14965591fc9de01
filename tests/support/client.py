"""A small test client that speaks to the gateway exactly as an app does: HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson


class Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None):
        self.http = http
        self.base_url = base_url
        self.token = token

    async def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                      params: dict | None = None, token: str | None = None,
                      headers: dict | None = None) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        tok = token if token is not None else self.token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.base_url + path, data=data, params=params,
                                     headers=hdrs) as resp:
            raw = await resp.read()
            body = orjson.loads(raw) if raw and resp.content_type == "application/json" else raw
            return resp.status, body

    async def create_session(self, *others: str, title: str | None = None) -> dict:
        body: dict = {"participant_ids": list(others)}
        if title is not None:
            body["title"] = title
        status, session = await self.request("POST", "/api/chat/sessions", json=body)
        assert status == 201, session
        return session

    async def send(self, session_id: str, body: str, client_msg_id: str | None = None
                   ) -> tuple[int, Any]:
        return await self.request(
            "POST", f"/api/chat/sessions/{session_id}/messages",
            json={"client_msg_id": client_msg_id or uuid.uuid4().hex, "body": body})


class Ws:
    """A WebSocket client with helpers to wait for frames (each wait is bounded)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.received: list[dict] = []  # every frame, in arrival order
        self._unmatched: list[dict] = []  # frames no ``until`` has returned yet
        self.hello: dict | None = None

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str, token: str, **kwargs) -> Ws:
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        client = cls(ws)
        client.hello = await client.next()
        assert client.hello["type"] == "hello", client.hello
        return client

    async def send(self, frame: dict) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def next(self, timeout: float = 10.0) -> dict:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type} {msg.data} {msg.extra}")
        frame = orjson.loads(msg.data)
        self.received.append(frame)
        return frame

    async def until(self, predicate, timeout: float = 10.0) -> dict:
        """The first frame not yet returned by ``until`` that matches, reading more as needed
        (frames skipped on the way stay available to later calls)."""
        for index, frame in enumerate(self._unmatched):
            if predicate(frame):
                del self._unmatched[index]
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - loop.time()))
            if predicate(frame):
                return frame
            self._unmatched.append(frame)

    async def request(self, frame: dict, timeout: float = 10.0) -> dict:
        """Send a frame with a fresh ref and return its ack or error."""
        ref = frame.get("ref") or uuid.uuid4().hex
        await self.send({**frame, "ref": ref})
        return await self.until(lambda f: f.get("ref") == ref
                                and f["type"] in ("ack", "error", "pong"), timeout)

    async def join(self, session_id: str, after_seq: int | None = None) -> dict:
        frame: dict = {"type": "join_session", "session_id": session_id}
        if after_seq is not None:
            frame["after_seq"] = after_seq
        answer = await self.request(frame)
        assert answer["type"] == "ack", answer
        return await self.until(lambda f: f["type"] == "joined"
                                and f["session_id"] == session_id)

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), max(0.01, deadline - loop.time()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return self.ws.close_code
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.received.append(orjson.loads(msg.data))

    async def close(self) -> None:
        await self.ws.close()
