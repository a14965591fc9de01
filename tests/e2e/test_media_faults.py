"""A media service or an S3 server killed in the middle of an ingest leaves no half-made
message, and the same upload (same client_msg_id, same bytes) can be sent again and succeeds."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest

from deploy.local.s3 import weed_command

from ..support import media_files as files
from ..support.backends import _port_with_grpc_twin
from ..support.client import Api
from ..support.media import bucket_keys, eventually, media_rows, upload

pytestmark = pytest.mark.e2e


async def _messages(api: Api, sid: str) -> list[dict]:
    status, page = await api.request("GET", f"/api/chat/sessions/{sid}/messages")
    assert status == 200, page
    return page["messages"]


async def _assert_one_whole_message(stack, http, api: Api, sid: str, message: dict,
                                    keys_of) -> None:
    messages = await _messages(api, sid)
    assert [m["id"] for m in messages] == [message["id"]]
    status, link = await api.request(
        "GET", f"/api/chat/attachments/{message['attachment']['id']}",
        params={"redirect": "0"})
    assert status == 200, link
    async with http.get(link["url"]) as resp:
        assert resp.status == 200
    rows = await media_rows(stack.backends, sid, stack.database_url("media"))
    assert [(str(r["id"]), r["state"]) for r in rows] == [(message["attachment"]["id"],
                                                          "linked")]
    # Only this attachment's objects remain under the session.
    assert {k.split("/")[2] for k in keys_of(f"{sid}/")} == {message["attachment"]["id"]}


@pytest.mark.parametrize("crash_point", ["media_crash_after_objects",
                                         "media_crash_after_stored"])
async def test_media_killed_mid_ingest_leaves_no_half_message_and_retry_works(
        isolated_stack, http, user, crash_point):
    stack = await isolated_stack()
    await stack.start_service("messaging")
    media = await stack.start_service("media", CHAT_FAULTS=f"{crash_point}=1")
    await stack.start_gateway(CHAT_MEDIA_INGEST_TIMEOUT_S="4")
    alice, bob = user("alice"), user("bob")
    api = Api(http, stack.url, stack.token(alice))
    sid = (await api.create_session(bob))["id"]
    clip = files.audio("ogg", 3.0)

    status, body = await upload(api, sid, clip, "v.ogg", voice=True, client_msg_id="m-1")
    assert status == 503, body
    await eventually(lambda: media.proc.poll() is not None)
    assert media.proc.returncode == 99  # it died at the crash point
    assert await _messages(api, sid) == []  # no message, not even a broken one

    await stack.start_service("media")  # the same service, without the fault
    status, message = await upload(api, sid, clip, "v.ogg", voice=True, client_msg_id="m-1")
    assert status in (200, 201), message
    assert message["attachment"]["duration_ms"] > 2900
    await _assert_one_whole_message(stack, http, api, sid, message,
                                    lambda p: bucket_keys(stack.backends, p))


class PrivateS3:
    """A SeaweedFS of its own, to kill and restart without touching the shared one."""

    def __init__(self, backends, data_dir: str):
        self.backends = backends
        self.data_dir = data_dir
        self.ports = [_port_with_grpc_twin() for _ in range(5)]
        self.proc: subprocess.Popen | None = None
        self.endpoint = f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.backends.s3_access_key,
                   AWS_SECRET_ACCESS_KEY=self.backends.s3_secret_key)
        log = open(os.path.join(self.data_dir, "weed.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            weed_command(self.data_dir, self.ports[0], self.backends.s3_bucket, *self.ports[1:]),
            env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def client(self):
        from minio import Minio
        return Minio(self.endpoint.removeprefix("http://"), self.backends.s3_access_key,
                     self.backends.s3_secret_key, secure=False, region="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        return [o.object_name for o in self.client().list_objects(
            self.backends.s3_bucket, prefix=prefix, recursive=True)]

    def ready(self) -> bool:
        try:
            return self.client().bucket_exists(self.backends.s3_bucket)
        except Exception:
            return False

    def env(self) -> dict[str, str]:
        return {"CHAT_S3_ENDPOINT": self.endpoint, "CHAT_S3_PUBLIC_URL": self.endpoint}


@pytest.fixture
async def private_s3(backends, tmp_path):
    if backends.via != "local":
        pytest.skip("needs SeaweedFS (local mode)")
    data = tmp_path / "s3"
    data.mkdir()
    s3 = PrivateS3(backends, str(data))
    s3.start()
    await eventually(s3.ready, timeout=60)
    yield s3
    if s3.proc and s3.proc.poll() is None:
        s3.kill()
    shutil.rmtree(data, ignore_errors=True)


async def test_s3_killed_mid_ingest_leaves_no_half_message_and_retry_works(
        isolated_stack, private_s3, http, user):
    stack = await isolated_stack()
    overrides = private_s3.env()
    await stack.start_service("messaging")
    # The sweeper removes the quarantine object both sides failed to delete while S3 was down.
    await stack.start_service("media", CHAT_MEDIA_SWEEP_INTERVAL_S="0.5",
                              CHAT_MEDIA_QUARANTINE_TTL_S="5", **overrides)
    await stack.start_gateway(CHAT_MEDIA_INGEST_TIMEOUT_S="10", CHAT_S3_TIMEOUT_S="3",
                              **overrides)
    alice, bob = user("alice"), user("bob")
    api = Api(http, stack.url, stack.token(alice))
    sid = (await api.create_session(bob))["id"]
    # Nine minutes of 8 kHz PCM (8.6 MB): media spends seconds decoding it.
    clip = _long_wav(540)

    sending = asyncio.create_task(upload(api, sid, clip, "long.wav", voice=True,
                                         client_msg_id="long-1"))
    started = time.monotonic()
    await eventually(lambda: private_s3.keys("quarantine/"), timeout=30, interval=0.01)
    private_s3.kill()  # the upload is in quarantine; media is fetching or decoding it
    status, body = await sending
    assert status == 503, body
    assert time.monotonic() - started < 30
    assert await _messages(api, sid) == []

    private_s3.start()
    await eventually(private_s3.ready, timeout=60)
    status, message = await upload(api, sid, clip, "long.wav", voice=True,
                                   client_msg_id="long-1")
    assert status in (200, 201), message
    assert abs(message["attachment"]["duration_ms"] - 540_000) < 100
    await _assert_one_whole_message(stack, http, api, sid, message, private_s3.keys)
    await eventually(lambda: not private_s3.keys("quarantine/"), timeout=30)


def _long_wav(seconds: int) -> bytes:
    import array
    import io
    import math
    import wave

    rate = 8000
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        second = array.array("h", (int(12000 * math.sin(2 * math.pi * 300 * i / rate))
                                   for i in range(rate))).tobytes()
        for _ in range(seconds):
            out.writeframes(second)
    return buf.getvalue()


async def test_a_message_deleted_while_media_is_down_is_deleted_and_its_objects_erased_later(
        isolated_stack, http, user):
    """The deletion stands without media (its text is erased by messaging at once); media
    erases the objects from the message_deleted event when it is back."""
    stack = await isolated_stack()
    await stack.start_service("messaging")
    media = await stack.start_service("media")
    await stack.start_gateway(CHAT_RPC_TIMEOUT_S="2")
    alice, bob = user("alice"), user("bob")
    api = Api(http, stack.url, stack.token(alice))
    sid = (await api.create_session(bob))["id"]
    status, message = await upload(api, sid, files.pdf(), "doc.pdf")
    assert status == 201, message
    await media.stop()

    status, body = await api.request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 204, body
    [tombstone] = await _messages(api, sid)
    assert tombstone["deleted"] is True and tombstone["attachment"] is None
    assert bucket_keys(stack.backends, f"{sid}/")  # media has not erased them yet

    await stack.start_service("media")
    await eventually(lambda: not bucket_keys(stack.backends, f"{sid}/"))
    assert await media_rows(stack.backends, sid, stack.database_url("media")) == []
