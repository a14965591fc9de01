"""Voice messages and attachments through the gateway, with real S3 (SeaweedFS or MinIO),
Postgres and RabbitMQ, on files the tests make themselves."""

from __future__ import annotations

import io
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from ..support import media_files as files
from ..support.client import Ws
from ..support.media import bucket_keys, download, eventually, media_rows, signed_url, upload

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("fmt", sorted(files.AUDIO_FORMATS))
async def test_voice_message_in_each_format_has_duration_and_a_waveform_from_the_samples(
        stack, http, api, user, fmt):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = files.audio(fmt, 4.0, silent_second_half=True)
    status, message = await upload(api(alice), sid, clip, f"memo.{fmt}", voice=True,
                                   content_type="text/plain")  # the declared type is ignored
    assert status == 201, message
    assert message["kind"] == "voice" and message["body"] is None and message["seq"] == 1
    attachment = message["attachment"]
    assert attachment["kind"] == "voice"
    assert abs(attachment["duration_ms"] - 4000) <= 120, attachment["duration_ms"]
    peaks = attachment["waveform"]
    assert len(peaks) == 64 and all(0.0 <= p <= 1.0 for p in peaks)
    # The tone (amplitude 0.8) fills the first half, silence the second.
    assert min(peaks[2:30]) > 0.6, peaks
    assert max(peaks[34:]) < 0.05, peaks
    assert attachment["filename"] == f"memo.{fmt}"
    assert attachment["size"] == len(clip) and attachment["has_thumbnail"] is False

    # Bob reads it in the history, and downloads the very bytes with a signed URL.
    status, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert page["messages"][0]["attachment"] == attachment
    status, link = await signed_url(api(bob), attachment["id"])
    assert status == 200 and link["url"].startswith(stack.backends.s3_endpoint)
    status, body, headers = await download(http, link["url"])
    assert status == 200 and body == clip
    assert headers["Content-Type"] == attachment["content_type"]


async def test_voice_message_reaches_the_other_participant_live(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    b = await Ws.connect(http, stack.ws_url, stack.token(bob))
    await b.join(sid)
    status, message = await upload(api(alice), sid, files.audio("ogg", 1.0), "hi.ogg",
                                   voice=True)
    assert status == 201, message
    frame = await b.until(lambda f: f["type"] == "new_message")
    assert frame["message"] == message
    await b.close()


async def test_jpeg_loses_its_exif_and_gps_and_gets_a_thumbnail(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    original = files.jpeg_with_gps((1200, 800))
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # it has GPS
    status, message = await upload(api(alice), sid, original, "holiday.jpg")
    assert status == 201, message
    assert message["kind"] == "image"
    attachment = message["attachment"]
    assert attachment["kind"] == "image" and attachment["content_type"] == "image/jpeg"
    assert (attachment["width"], attachment["height"]) == (1200, 800)
    assert attachment["has_thumbnail"] is True

    status, link = await signed_url(api(bob), attachment["id"])
    status, body, headers = await download(http, link["url"])
    assert status == 200 and len(body) == attachment["size"]
    stored = Image.open(io.BytesIO(body))
    assert stored.size == (1200, 800)
    assert not stored.getexif() and b"SecretCam" not in body and b"Exif" not in body
    assert headers["Content-Disposition"].startswith("inline")

    status, link = await signed_url(api(bob), attachment["id"], thumbnail=True)
    status, body, _ = await download(http, link["url"])
    thumb = Image.open(io.BytesIO(body))
    assert status == 200 and thumb.format == "JPEG" and max(thumb.size) == 320


async def test_pdf_is_a_file_message_downloaded_as_an_attachment(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    document = files.pdf()
    status, message = await upload(api(alice), sid, document, "Report 2024.pdf",
                                   content_type="image/png")
    assert status == 201, message
    assert message["kind"] == "file"
    attachment = message["attachment"]
    assert attachment["kind"] == "pdf" and attachment["content_type"] == "application/pdf"
    assert attachment["filename"] == "Report 2024.pdf" and attachment["size"] == len(document)

    # Without ?redirect=0 the gateway answers with a redirect to the signed URL.
    async with http.get(f"{stack.url}/api/chat/attachments/{attachment['id']}",
                        headers={"Authorization": f"Bearer {stack.token(bob)}"},
                        allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["300"]
    status, body, headers = await download(http, location)
    assert status == 200 and body == document
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "Report 2024.pdf" in headers["Content-Disposition"]


async def test_other_types_video_text_and_audio(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, files.video_mp4(), "clip.mp4")
    assert status == 201, message
    assert (message["kind"], message["attachment"]["kind"]) == ("file", "video")
    assert message["attachment"]["content_type"] == "video/mp4"
    assert (message["attachment"]["width"], message["attachment"]["height"]) == (160, 120)
    status, message = await upload(api(alice), sid, "héllo\nworld\n".encode(), "notes.html")
    assert status == 201, message
    assert message["attachment"]["kind"] == "text"
    assert message["attachment"]["filename"] == "notes.html.txt"  # never served as HTML
    status, message = await upload(api(alice), sid, files.audio("mp3", 1.0), "song.mp3")
    assert status == 201, message
    assert (message["kind"], message["attachment"]["kind"]) == ("file", "audio")
    assert len(message["attachment"]["waveform"]) == 64
    for kind in ("PNG", "GIF", "WEBP"):
        status, message = await upload(api(alice), sid, files.image(kind), f"x.{kind.lower()}")
        assert status == 201 and message["kind"] == "image", message
        assert message["attachment"]["content_type"] == f"image/{kind.lower()}"


async def test_byte_ranges_let_players_seek(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = files.audio("wav", 2.0)
    status, message = await upload(api(alice), sid, clip, "seek.wav", voice=True)
    status, link = await signed_url(api(bob), message["attachment"]["id"])
    status, body, headers = await download(http, link["url"], {"Range": "bytes=1000-1999"})
    assert status == 206 and body == clip[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(clip)}"


async def test_uploads_are_idempotent_by_client_msg_id(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    clip = files.audio("ogg", 1.0)
    status, first = await upload(api(alice), sid, clip, "a.ogg", voice=True, client_msg_id="v1")
    assert status == 201, first
    status, again = await upload(api(alice), sid, clip, "a.ogg", voice=True, client_msg_id="v1")
    assert status == 200 and again == first
    status, error = await upload(api(alice), sid, files.audio("ogg", 2.0), "b.ogg", voice=True,
                                 client_msg_id="v1")
    assert status == 409 and error["error"]["code"] == "conflict"
    status, page = await api(alice).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert [m["id"] for m in page["messages"]] == [first["id"]]
    rows = await media_rows(stack.backends, sid)
    assert [str(r["id"]) for r in rows] == [first["attachment"]["id"]]
    assert await eventually(lambda: not bucket_keys(stack.backends, "quarantine/"))


async def test_outsiders_get_no_url_and_admins_do(stack, http, api, user):
    alice, bob, eve = user("alice"), user("bob"), user("eve")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, files.pdf(), "secret.pdf")
    attachment_id = message["attachment"]["id"]
    status, error = await signed_url(api(eve), attachment_id)
    assert status == 404 and error["error"]["code"] == "not_found"
    status, error = await signed_url(api(eve), str(uuid.uuid4()))
    assert status == 404
    # An outsider cannot upload into the session either, and nothing is stored.
    status, error = await upload(api(eve), sid, files.pdf(), "x.pdf")
    assert status == 404
    status, link = await signed_url(api(user("root"), "admin"), attachment_id)
    assert status == 200
    status, _, _ = await download(http, link["url"])
    assert status == 200


async def test_removed_participant_loses_access(stack, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, files.pdf(), "doc.pdf")
    attachment_id = message["attachment"]["id"]
    assert (await signed_url(api(bob), attachment_id))[0] == 200
    status, _ = await api(alice).request("DELETE", f"/api/chat/sessions/{sid}/participants/{bob}")
    assert status == 204
    assert (await signed_url(api(bob), attachment_id))[0] == 404  # from the removal's answer on


async def test_tampered_or_expired_signatures_are_refused_by_the_storage_server(
        stack, http, api, user):
    from datetime import UTC, datetime, timedelta

    from ..support.backends import s3_client

    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, files.pdf(), "doc.pdf")
    status, link = await signed_url(api(bob), message["attachment"]["id"])
    url = link["url"]
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    forged = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert (await download(http, forged))[0] == 403
    # Another object under the same signature:
    other = url.replace("/doc.pdf?", "/other.pdf?")
    assert (await download(http, other))[0] == 403
    # A URL signed the same way ten minutes ago with a five-minute lifetime has expired.
    key = urlsplit(url).path.split("/", 2)[2]
    expired = s3_client(stack.backends).presigned_get_object(
        stack.backends.s3_bucket, key, expires=timedelta(minutes=5),
        request_date=datetime.now(UTC) - timedelta(minutes=10))
    assert (await download(http, expired))[0] == 403
    assert (await download(http, url))[0] == 200


async def test_deleting_the_message_erases_the_objects_and_the_metadata(stack, http, api, user):
    alice, bob = user("alice"), user("bob")
    sid = (await api(alice).create_session(bob))["id"]
    status, message = await upload(api(alice), sid, files.jpeg_with_gps((400, 300)), "p.jpg")
    attachment_id = message["attachment"]["id"]
    status, link = await signed_url(api(bob), attachment_id)
    assert (await download(http, link["url"]))[0] == 200
    prefix = f"{sid}/"
    assert len(bucket_keys(stack.backends, prefix)) == 2  # the image and its thumbnail
    status, _ = await api(alice).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 204
    # Gone by the time the deletion is answered: no new URL, and the old one stops working.
    assert (await signed_url(api(bob), attachment_id))[0] == 404
    assert (await download(http, link["url"]))[0] == 404
    assert bucket_keys(stack.backends, prefix) == []
    assert await media_rows(stack.backends, sid) == []
    status, _ = await api(alice).request("DELETE", f"/api/chat/messages/{message['id']}")
    assert status == 204  # already deleted
    status, page = await api(bob).request("GET", f"/api/chat/sessions/{sid}/messages")
    assert page["messages"][0]["deleted"] is True and page["messages"][0]["attachment"] is None
