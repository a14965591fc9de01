"""Pure rules of the media service: names, keys, kinds, the waveform, retried uploads."""

from __future__ import annotations

import uuid

import pytest

from services.media import domain
from shared.contracts.errors import ServiceError

PDF, TEXT, JPEG = "application/pdf", "text/plain; charset=utf-8", "image/jpeg"


@pytest.mark.parametrize(("raw", "content_type", "expected"), [
    ("../../etc/passwd", TEXT, "passwd.txt"),
    ("..\\..\\windows\\system.ini", TEXT, "system.ini.txt"),
    ("invoice\u202egpj.exe", PDF, "invoicegpj.exe.pdf"),
    ("\u200fمرحبا.pdf", PDF, "مرحبا.pdf"),
    ("a\x00b\x1fc\x7f.pdf", PDF, "abc.pdf"),
    ("  .hidden.pdf  ", PDF, "hidden.pdf"),
    ("", JPEG, "file.jpg"),
    ("...", PDF, "file.pdf"),
    ("photo.JPEG", JPEG, "photo.jpeg"),
    ('we"ird*na:me?.pdf', PDF, "we_ird_na_me_.pdf"),
    ("notes.html", TEXT, "notes.html.txt"),
])
def test_sanitise_filename(raw, content_type, expected):
    assert domain.sanitise_filename(raw, content_type) == expected


def test_long_names_are_shortened_keeping_the_extension():
    name = domain.sanitise_filename("x" * 500 + ".pdf", PDF)
    assert len(name) == domain.MAX_NAME_CHARS and name.endswith(".pdf")


def test_object_keys_follow_the_spec_and_never_hold_a_path_step():
    sid, aid = uuid.uuid4(), uuid.uuid4()
    assert domain.object_key(sid, "bob", aid, "a.pdf") == f"{sid}/bob/{aid}/a.pdf"
    assert ".." not in domain.object_key(sid, "..", aid, "a.pdf").split("/")
    assert domain.thumbnail_key(sid, "bob", aid).endswith("/.thumbnail.jpg")


def test_message_kinds():
    assert domain.message_kind("voice", "voice") == "voice"
    assert domain.message_kind("upload", "image") == "image"
    assert [domain.message_kind("upload", k) for k in ("pdf", "video", "audio", "text")] == \
        ["file"] * 4


def test_waveform_takes_the_peak_of_each_64th():
    blocks = [0.5] * 640 + [0.0] * 640
    peaks = domain.waveform(blocks)
    assert len(peaks) == 64 and peaks[:32] == [0.5] * 32 and peaks[32:] == [0.0] * 32
    blocks = [0.0] * 1280
    blocks[700] = 0.9  # a single spike lands in its bucket (700 * 64 // 1280 = 35)
    assert domain.waveform(blocks)[35] == 0.9 and max(domain.waveform(blocks)[:35]) == 0.0


def test_waveform_of_a_short_clip_and_clamping():
    assert domain.waveform([0.2, 1.7, float("nan")]) == \
        [0.2] * 22 + [1.0] * 21 + [0.0] * 21
    assert domain.waveform([]) == [0.0] * 64


def test_retry_decisions():
    existing = domain.Existing(uuid.uuid4(), uuid.uuid4(), "a" * 64, "processing")
    assert domain.retry_decision(None, "a" * 64) == "new"
    assert domain.retry_decision(existing, "a" * 64) == "resume"
    stored = domain.Existing(existing.attachment_id, existing.message_id, "a" * 64, "linked")
    assert domain.retry_decision(stored, "a" * 64) == "complete"
    with pytest.raises(ServiceError) as err:
        domain.retry_decision(stored, "b" * 64)
    assert err.value.code.value == "conflict"


def test_downloads_are_inline_only_for_what_players_show():
    assert domain.content_disposition("image", "a.png").startswith("inline;")
    assert domain.content_disposition("voice", "a.ogg").startswith("inline;")
    header = domain.content_disposition("pdf", "Bericht ü.pdf")
    assert header.startswith('attachment; filename="Bericht _.pdf"')
    assert "filename*=UTF-8''Bericht%20%C3%BC.pdf" in header


def test_reading_rights():
    assert domain.may_read("admin", None) is True
    assert domain.may_read("client", True) is True
    assert domain.may_read("client", False) is False
    assert domain.may_read("reader", None) is None
