"""Every bad upload of the SPEC's list gets its status and a clear message, and leaves nothing
in the bucket, the media database or the session."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson
import pytest

from ..support import media_files as files
from ..support.media import bucket_keys, eventually, media_rows, upload

pytestmark = pytest.mark.e2e
LIMIT = 10 * 1024 * 1024


async def assert_nothing_stored(stack, api, owner: str, sid: str) -> None:
    assert bucket_keys(stack.backends, f"{sid}/") == []
    await eventually(lambda: not bucket_keys(stack.backends, "quarantine/"))
    assert await media_rows(stack.backends, sid) == []
    status, page = await api(owner).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert status == 200 and page["messages"] == []


@pytest.mark.parametrize(("name", "data", "voice", "status", "says"), [
    ("exe renamed .png", files.windows_exe(), False, 415, "not allowed"),
    ("zip named .pdf", files.zip_archive(), False, 415, "application/zip"),
    ("png as voice", files.image("PNG"), True, 415, "must be audio"),
    ("text as voice", b"just words\n", True, 415, "must be audio"),
    ("video as voice", files.video_mp4(), True, 415, "must be audio"),
    ("empty file", b"", False, 422, "empty"),
    ("cut pdf", files.pdf()[:-40], False, 422, "truncated"),
    ("latin-1 text", "café".encode("latin-1") * 50, False, 415, "UTF-8"),
])
async def test_refused_types(stack, api, user, name, data, voice, status, says):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    filename = {"exe renamed .png": "cat.png", "zip named .pdf": "report.pdf"}.get(name, "f.bin")
    got, body = await upload(api(alice), sid, data, filename, voice=voice,
                             content_type="image/png")
    assert got == status, body
    code = {415: "unsupported_media_type", 422: "invalid"}[status]
    assert body["error"]["code"] == code and says in body["error"]["message"], body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_truncated_mp3_voice_message_is_422(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = files.audio("mp3", 3.0)
    status, body = await upload(api(alice), sid, clip[: len(clip) // 2], "cut.mp3", voice=True)
    assert status == 422 and "truncated" in body["error"]["message"], body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_corrupt_audio_is_422(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = bytearray(files.audio("ogg", 2.0))
    clip[200:4000] = bytes(3800)  # pages of zeros: libmagic still says ogg
    status, body = await upload(api(alice), sid, bytes(clip), "bad.ogg", voice=True)
    assert status == 422, body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_voice_message_over_ten_minutes_is_422(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = files.audio("ogg", 601.0, amplitude=0.3)  # opus: about 1 MB for ten minutes
    status, body = await upload(api(alice), sid, clip, "long.ogg", voice=True)
    assert status == 422 and "longer than 10 minutes" in body["error"]["message"], body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_decompression_bomb_is_422(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    bomb = files.png_bomb(20_000, 20_000)
    assert len(bomb) < 1_000_000
    status, body = await upload(api(alice), sid, bomb, "bomb.png")
    assert status == 422 and "too large" in body["error"]["message"], body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_one_byte_over_ten_mib_is_413_and_exactly_ten_mib_is_taken(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, body = await upload(api(alice), sid, b"a" * (LIMIT + 1), "big.txt")
    assert status == 413 and body["error"]["code"] == "too_large", body
    await assert_nothing_stored(stack, api, alice, sid)
    status, message = await upload(api(alice), sid, b"a" * LIMIT, "big.txt")
    assert status == 201 and message["attachment"]["size"] == LIMIT, message


async def test_a_declared_size_past_the_limit_is_refused_at_once(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, body = await _raw_upload(stack, alice, sid, b"x" * 1000,
                                     content_length=LIMIT + 1024 * 1024)
    assert status == 413, body
    await assert_nothing_stored(stack, api, alice, sid)


async def test_chunked_upload_is_counted_too(stack, api, user, http):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]

    async def body():
        for _ in range(LIMIT // (1024 * 1024) + 1):
            yield b"b" * (1024 * 1024)

    boundary = "chunkedboundary"
    async def multipart():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"big.txt\"\r\n\r\n").encode()
        async for chunk in body():
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    async with http.post(f"{stack.url}/api/chat/sessions/{sid}/upload", data=multipart(),
                         headers={"Authorization": f"Bearer {stack.token(alice)}",
                                  "Content-Type": f"multipart/form-data; boundary={boundary}"}
                         ) as resp:
        assert resp.status == 413
    await assert_nothing_stored(stack, api, alice, sid)


async def test_content_length_shorter_than_the_body_is_400(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    body = _multipart(files.pdf(), "doc.pdf")
    status, answer = await _raw_upload(stack, alice, sid, body, content_length=len(body) - 60)
    assert status == 400, answer
    await assert_nothing_stored(stack, api, alice, sid)


async def test_content_length_longer_than_the_body_leaves_nothing(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    body = _multipart(files.pdf(), "doc.pdf")
    status, answer = await _raw_upload(stack, alice, sid, body, content_length=len(body) + 5000,
                                       half_close=True)
    assert status in (400, None), answer  # None: the server closed without an answer
    await assert_nothing_stored(stack, api, alice, sid)


async def test_names_lose_paths_and_bidi_overrides(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, b"root:x:0:0\n", "../../etc/passwd")
    assert status == 201, message
    assert message["attachment"]["filename"] == "passwd.txt"
    status, message = await upload(api(alice), sid, files.pdf(), "invoice\u202egpj.exe")
    assert status == 201, message
    assert message["attachment"]["filename"] == "invoicegpj.exe.pdf"
    long_name = "x" * 300 + ".pdf"
    status, message = await upload(api(alice), sid, files.pdf(), long_name)
    assert len(message["attachment"]["filename"]) == 100
    assert message["attachment"]["filename"].endswith(".pdf")
    for key in bucket_keys(stack.backends, f"{sid}/"):
        assert ".." not in key.split("/") and "\u202e" not in key
        assert key.startswith(f"{sid}/{alice}/")


# ---- raw HTTP ---------------------------------------------------------------------------------

def _multipart(data: bytes, filename: str, boundary: str = "rawboundary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/pdf\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()


async def _raw_upload(stack, user_id: str, sid: str, body: bytes, *, content_length: int,
                      half_close: bool = False, boundary: str = "rawboundary"):
    """POST with a Content-Length of our choosing; the status and body of the answer."""
    host = urlsplit(stack.url)
    reader, writer = await asyncio.open_connection(host.hostname, host.port)
    head = (f"POST /api/chat/sessions/{sid}/upload HTTP/1.1\r\nHost: {host.netloc}\r\n"
            f"Authorization: Bearer {stack.token(user_id)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()
    if half_close:
        writer.write_eof()
    try:
        raw = await asyncio.wait_for(reader.read(), 30)
    except (ConnectionError, TimeoutError):
        raw = b""
    finally:
        writer.close()
    if not raw:
        return None, b""
    status = int(raw.split(b" ", 2)[1])
    return status, raw.partition(b"\r\n\r\n")[2]



async def test_a_windows_path_in_a_quoted_file_name_is_cut_to_its_base_name(stack, api, user):
    """An old browser quotes the whole path, backslashes as they are."""
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    body = _multipart(files.pdf(), "C:\\Users\\al\\Report 2024.pdf")
    status, answer = await _raw_upload(stack, alice, sid, body, content_length=len(body))
    assert status == 201, answer
    message = orjson.loads(answer)
    assert message["attachment"]["filename"] == "Report 2024.pdf"
