"""Pure decisions of the media service: file names, object keys, what kind a type is, the
waveform, what a retried upload means, how a download is presented. No I/O, no clock."""

from __future__ import annotations

import math
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from shared.contracts.errors import ErrorCode, ServiceError

MAX_NAME_CHARS = 100
WAVEFORM_PEAKS = 64
# Stored types -> extensions a file of that type may keep (the first is added when the name's
# own extension does not match, so a saved file never opens as something else).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg"), "image/png": (".png",), "image/gif": (".gif",),
    "image/webp": (".webp",), "video/mp4": (".mp4", ".m4v"), "video/webm": (".webm",),
    "application/pdf": (".pdf",), "text/plain; charset=utf-8": (".txt", ".text", ".log", ".md",
                                                                ".csv"),
    "audio/webm": (".webm", ".weba"), "audio/ogg": (".ogg", ".opus", ".oga"),
    "audio/mpeg": (".mp3",), "audio/wav": (".wav",), "audio/mp4": (".m4a", ".mp4"),
    "audio/aac": (".aac",),
}
# Kinds a browser may show inline; everything else is downloaded (Content-Disposition).
INLINE_KINDS = frozenset({"image", "voice", "audio", "video"})
# Characters removed from names: control (Cc), format incl. bidi overrides and marks (Cf),
# surrogates, private use, unassigned, line and paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_UNSAFE = str.maketrans({c: "_" for c in '"*:<>?|'})


def sanitise_filename(raw: str | None, content_type: str) -> str:
    """A base name without paths, control or bidi characters, at most 100 characters, ending
    in an extension that matches the stored type."""
    extensions = EXTENSIONS.get(content_type, ("",))
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = " ".join(name.split()).translate(_UNSAFE).strip(" .")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    suffix = f".{ext.lower()}" if ext else ""
    if suffix not in extensions:
        stem, suffix = name, extensions[0]
    stem = stem.strip(" .") or "file"
    keep = MAX_NAME_CHARS - len(suffix)
    return stem[:keep].rstrip(" .") + suffix


def key_segment(user_id: str) -> str:
    """User ids may be ``.`` or ``..``; as a key segment that would read as a path step."""
    return user_id.replace(".", "%2E") if set(user_id) == {"."} else user_id


def object_key(session_id: uuid.UUID, user_id: str, attachment_id: uuid.UUID, name: str) -> str:
    """``<session_id>/<user_id>/<attachment_id>/<sanitised name>`` (SPEC)."""
    return f"{session_id}/{key_segment(user_id)}/{attachment_id}/{name}"


def thumbnail_key(session_id: uuid.UUID, user_id: str, attachment_id: uuid.UUID) -> str:
    """Beside the file; sanitised names never start with a dot, so this never collides."""
    return f"{session_id}/{key_segment(user_id)}/{attachment_id}/.thumbnail.jpg"


def message_kind(purpose: str, kind: str) -> str:
    """SPEC: ``image`` for images, ``voice`` for the voice endpoint, ``file`` for the rest."""
    if purpose == "voice":
        return "voice"
    return "image" if kind == "image" else "file"


def waveform(block_peaks: Sequence[float], buckets: int = WAVEFORM_PEAKS) -> list[float]:
    """The peak of each ``buckets``-th of the clip, from per-block peaks (fractions of full
    scale), clamped to 0..1 and rounded to 4 places. Fewer blocks than buckets: each bucket
    takes the block it falls in."""
    n = len(block_peaks)
    if n == 0:
        return [0.0] * buckets
    peaks = []
    for i in range(buckets):
        start = i * n // buckets
        end = max(start + 1, (i + 1) * n // buckets)
        peak = max(block_peaks[start:end])
        peaks.append(round(min(1.0, max(0.0, peak if math.isfinite(peak) else 0.0)), 4))
    return peaks


def content_disposition(kind: str, filename: str) -> str:
    """``inline`` for what players and image views show, ``attachment`` for the rest; the
    name both as ASCII fallback and RFC 5987 UTF-8."""
    disposition = "inline" if kind in INLINE_KINDS else "attachment"
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    fallback = fallback.replace("\\", "_").replace('"', "_")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


# ---- retried uploads ------------------------------------------------------------------------

@dataclass(frozen=True)
class Existing:
    """What is stored under (session, uploader, client_msg_id)."""

    attachment_id: uuid.UUID
    message_id: uuid.UUID
    sha256: str
    state: str  # processing | stored | linked


def retry_decision(existing: Existing | None, sha256: str) -> str:
    """``new``: process the upload; ``resume``: a previous try died before its objects were
    stored, process again under the same ids; ``complete``: the attachment is stored, only the
    message may be missing. The same client_msg_id with other bytes is a 409."""
    if existing is None:
        return "new"
    if existing.sha256 != sha256:
        raise ServiceError(ErrorCode.CONFLICT,
                           "client_msg_id was already used for a different file")
    return "resume" if existing.state == "processing" else "complete"


def may_read(role: str, membership: bool | None) -> bool | None:
    """Admins read everything; a participant reads; None: membership not known yet."""
    if role == "admin":
        return True
    return membership
