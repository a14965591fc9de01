"""Helpers of the media tests: multipart uploads through the gateway, downloads through signed
URLs, and looks into the bucket and the media database (to prove nothing was left behind)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from typing import Any

import aiohttp
import asyncpg

from .backends import Backends, s3_client
from .client import Api


async def upload(api: Api, session_id: str, data: bytes, filename: str = "file.bin", *,
                 voice: bool = False, client_msg_id: str | None = None,
                 content_type: str = "application/octet-stream") -> tuple[int, Any]:
    form = aiohttp.FormData()
    if client_msg_id is not None:
        form.add_field("client_msg_id", client_msg_id)
    form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    path = f"/api/chat/sessions/{session_id}/{'voice' if voice else 'upload'}"
    return await api.request("POST", path, data=form)


async def signed_url(api: Api, attachment_id: str, *, thumbnail: bool = False
                     ) -> tuple[int, Any]:
    params = {"redirect": "0"}
    if thumbnail:
        params["thumbnail"] = "1"
    return await api.request("GET", f"/api/chat/attachments/{attachment_id}", params=params)


async def download(http: aiohttp.ClientSession, url: str, headers: dict | None = None
                   ) -> tuple[int, bytes, Any]:
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.read(), resp.headers


def bucket_keys(backends: Backends, prefix: str = "") -> list[str]:
    client = s3_client(backends)
    return [o.object_name for o in client.list_objects(backends.s3_bucket, prefix=prefix,
                                                       recursive=True)]


async def media_rows(backends: Backends, session_id: str, database_url: str | None = None
                     ) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url or backends.database_url("media"))
    try:
        return await conn.fetch("SELECT * FROM attachments WHERE session_id = $1",
                                uuid.UUID(session_id))
    finally:
        await conn.close()


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):  # noqa: ASYNC109
    """Poll ``check()`` (sync or async) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)
