"""Object storage over the S3 API (MinIO in production, SeaweedFS locally), for the gateway
(quarantine uploads) and the media service (attachments).

The minio client is synchronous: every call runs in this store's own thread pool, never on the
event loop and never in the loop's default executor (a streaming upload holds its thread for as
long as the client sends). Bytes are streamed in chunks; nothing here holds a whole file.

Signed URLs are made by a second client configured with ``CHAT_S3_PUBLIC_URL`` (the address
clients reach) and an explicit region, so presigning needs no network call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

CHUNK = 64 * 1024
PART_SIZE = 5 * 1024 * 1024  # the S3 minimum for multipart parts


class S3Settings(BaseSettings):
    """S3 settings (a mixin of the service settings; ``CHAT_`` prefix but for the AWS keys)."""

    s3_endpoint: str = "http://127.0.0.1:8333"
    # The S3 address as clients reach it: the base of signed URLs (default: the endpoint).
    s3_public_url: str | None = None
    s3_bucket: str = "chat-files"
    s3_region: str = "us-east-1"
    s3_access_key: str = Field(default="chatdev", validation_alias=AliasChoices(
        "AWS_ACCESS_KEY_ID", "CHAT_S3_ACCESS_KEY"))
    s3_secret_key: str = Field(default="chatdev-secret-key", validation_alias=AliasChoices(
        "AWS_SECRET_ACCESS_KEY", "CHAT_S3_SECRET_KEY"))
    # Threads for S3 calls (each streaming upload holds one while it runs).
    s3_threads: int = Field(default=32, ge=2, le=512)
    s3_timeout_s: float = Field(default=30.0, gt=0, le=600)


class ObjectMissing(Exception):
    """The object does not exist (any more)."""


class StorageError(Exception):
    """S3 answered with an error or could not be reached."""


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


def _client(url: str, settings: S3Settings, http: urllib3.PoolManager | None) -> Minio:
    parts = urlsplit(url)
    return Minio(parts.netloc, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key, secure=parts.scheme == "https",
                 region=settings.s3_region, http_client=http)


class ObjectStore:
    def __init__(self, settings: S3Settings):
        self.bucket = settings.s3_bucket
        self.settings = settings
        http = urllib3.PoolManager(
            maxsize=settings.s3_threads, block=False,
            timeout=urllib3.Timeout(connect=5.0, read=settings.s3_timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]))
        self.client = _client(settings.s3_endpoint, settings, http)
        self.public = _client(settings.s3_public_url or settings.s3_endpoint, settings, None)
        self._executor = ThreadPoolExecutor(max_workers=settings.s3_threads,
                                            thread_name_prefix="s3")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn, *args, **kwargs) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectMissing(exc.message) from exc
            raise StorageError(f"S3 {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"S3 unreachable: {exc!r}") from exc

    # ---- writes ---------------------------------------------------------------------------

    async def put_stream(self, key: str, stream, content_type: str) -> None:
        """Upload from a file-like object of unknown length (multipart past 5 MiB; a failure
        aborts the multipart upload, so nothing is left behind)."""
        await self._run(self.client.put_object, self.bucket, key, stream, -1,
                        content_type=content_type, part_size=PART_SIZE)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await self._run(self.client.fput_object, self.bucket, key, str(path),
                        content_type=content_type, part_size=PART_SIZE)

    async def delete(self, *keys: str) -> None:
        """Delete objects; a missing one is not an error."""
        keys = tuple(k for k in keys if k)
        if not keys:
            return

        def remove() -> None:
            errors = list(self.client.remove_objects(
                self.bucket, [DeleteObject(k) for k in keys]))
            if errors:
                raise StorageError(f"S3 refused to delete: {errors[0]}")

        await self._run(remove)

    # ---- reads ----------------------------------------------------------------------------

    async def fetch_to_file(self, key: str, path: Path, max_bytes: int) -> Fetched:
        """Stream an object into ``path`` (64 KiB at a time), hashing it on the way."""

        def fetch() -> Fetched:
            response = self.client.get_object(self.bucket, key)
            digest, size = hashlib.sha256(), 0
            try:
                with open(path, "wb") as out:
                    for chunk in response.stream(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise StorageError(f"object {key} is larger than {max_bytes} bytes")
                        digest.update(chunk)
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
            return Fetched(size, digest.hexdigest())

        return await self._run(fetch)

    async def exists(self, key: str) -> bool:
        try:
            await self._run(self.client.stat_object, self.bucket, key)
            return True
        except ObjectMissing:
            return False

    async def list_keys(self, prefix: str = "", older_than: datetime | None = None) -> list[str]:
        def listing() -> list[str]:
            return [o.object_name for o in self.client.list_objects(
                        self.bucket, prefix=prefix, recursive=True)
                    if older_than is None or (o.last_modified and o.last_modified < older_than)]

        return await self._run(listing)

    async def bucket_ready(self) -> bool:
        return bool(await self._run(self.client.bucket_exists, self.bucket))

    async def ensure_bucket(self) -> None:
        if not await self.bucket_ready():
            try:
                await self._run(self.client.make_bucket, self.bucket)
            except StorageError as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" \
                        not in str(exc):
                    raise

    def presign_get(self, key: str, ttl: timedelta,
                    response_headers: Mapping[str, str] | None = None) -> str:
        """A signed GET URL on the public address (no network call: the region is set)."""
        return self.public.presigned_get_object(self.bucket, key, expires=ttl,
                                                response_headers=dict(response_headers or {}))


class StreamPipe:
    """A file-like object that a worker thread reads (``put_stream``) while the event loop
    feeds it chunk by chunk, with back-pressure (at most ``depth`` chunks wait).

    Loop side: ``await put(chunk)``, then ``await finish()``; ``fail(exc)`` makes the reader
    raise (the multipart upload is aborted); ``abort()`` (when the reader is gone) unblocks
    the feeder, whose next ``put`` raises ``BrokenPipeError``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, timeout_s: float, depth: int = 16):
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue(depth)
        self._timeout_s = timeout_s
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._closed = False

    # ---- event loop side ------------------------------------------------------------------

    async def put(self, chunk: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("the upload to storage has ended")
        await self._queue.put(chunk)

    async def finish(self) -> None:
        if self._closed:
            raise BrokenPipeError("the upload to storage has ended")
        await self._queue.put(None)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def fail(self, exc: BaseException) -> None:
        self._drain()
        self._queue.put_nowait(exc)

    def abort(self) -> None:
        self._closed = True
        self._drain()

    # ---- worker thread side ---------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or self._buffered < size):
            future = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop)
            try:
                item = future.result(self._timeout_s)
            except TimeoutError:
                future.cancel()
                raise OSError("upload stream stalled") from None
            if item is None:
                self._eof = True
            elif isinstance(item, BaseException):
                raise OSError("upload aborted") from item
            else:
                self._chunks.append(item)
                self._buffered += len(item)
        data = b"".join(self._chunks)
        if 0 <= size < len(data):
            data, rest = data[:size], data[size:]
            self._chunks, self._buffered = [rest], len(rest)
        else:
            self._chunks, self._buffered = [], 0
        return data
