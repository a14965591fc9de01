"""What a file really is, decided from its bytes (libmagic), confirmed by decoding it (Pillow for
images, PyAV for audio and video, structure checks for PDF and text). Never the name or the
declared Content-Type.

Blocking and CPU-bound: the caller runs ``probe`` in a worker thread. It reads the file from
disk as it goes (64 KiB at a time, frame by frame); only decoded images are whole in memory.
A refusal is a ``ServiceError``: 415 for a type that is not allowed (or not audio on the voice
endpoint), 422 for a file of an allowed type that does not decode, is truncated, too long, or a
decompression bomb.
"""

from __future__ import annotations

import codecs
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import av
import magic
from PIL import Image, ImageOps

from shared.contracts.errors import ErrorCode, ServiceError

from .domain import waveform

CHUNK = 64 * 1024
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
AV_TYPES = frozenset({
    "video/webm", "audio/webm", "video/x-matroska", "video/mp4", "audio/mp4", "audio/x-m4a",
    "video/quicktime", "audio/ogg", "video/ogg", "application/ogg", "audio/mpeg",
    "audio/x-wav", "audio/wav", "audio/vnd.wave", "audio/x-hx-aac-adts", "audio/aac",
})
# PyAV container names -> what we store them as.
AUDIO_CONTAINERS = {"matroska,webm": "audio/webm", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                    "wav": "audio/wav", "aac": "audio/aac"}
MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
AUDIO_CODECS = frozenset({"opus", "vorbis", "mp3", "mp3float", "aac", "aac_latm", "flac",
                          "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_u8", "pcm_f32le",
                          "pcm_alaw", "pcm_mulaw"})
VIDEO_CODECS = {"video/webm": frozenset({"vp8", "vp9", "av1", "libdav1d", "libvpx",
                                         "libvpx-vp9"}),
                "video/mp4": frozenset({"h264", "hevc", "av1", "libdav1d", "mpeg4", "vp9"})}


@dataclass(frozen=True)
class Limits:
    max_audio_ms: int = 600_000
    max_image_pixels: int = 40_000_000
    max_frames: int = 1000
    thumbnail_px: int = 320


@dataclass
class Probed:
    kind: str            # image | voice | audio | video | pdf | text
    content_type: str
    path: Path           # the bytes to store (the upload, or the re-encoded image)
    size: int = 0
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    waveform: list[float] | None = None
    thumbnail: Path | None = None
    details: dict = field(default_factory=dict)


def unsupported(message: str) -> ServiceError:
    return ServiceError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)


def invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID, message)


def probe(path: Path, purpose: str, limits: Limits, workdir: Path) -> Probed:
    size = path.stat().st_size
    if size == 0:
        raise invalid("the file is empty")
    mime = magic.from_file(str(path), mime=True)
    if mime in AV_TYPES:
        probed = probe_av(path, purpose, limits, workdir)
    elif purpose == "voice":
        raise unsupported(f"a voice message must be audio, not {mime}")
    elif mime in IMAGE_TYPES:
        probed = probe_image(path, IMAGE_TYPES[mime], mime, limits, workdir)
    elif mime == "application/pdf":
        probed = probe_pdf(path)
    elif mime == "text/plain":
        probed = probe_text(path)
    else:
        raise unsupported(f"files of type {mime} are not allowed")
    probed.size = probed.path.stat().st_size
    return probed


# ---- images ----------------------------------------------------------------------------------

def probe_image(path: Path, expected: str, mime: str, limits: Limits, workdir: Path) -> Probed:
    """Check the pixel count before decoding (decompression bombs), decode, re-encode without
    metadata (EXIF, GPS, comments; the orientation is applied first), and make a thumbnail."""
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    out = workdir / "image"
    thumb = workdir / "thumbnail.jpg"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format != expected:
                    raise invalid(f"the image does not decode as {expected}")
                width, height = img.size
                frames = getattr(img, "n_frames", 1)
                if width * height > limits.max_image_pixels or frames > limits.max_frames:
                    raise _bomb(width, height, limits)
                img.load()
                # One decoded copy of the pixels at a time: the orientation is applied in
                # place, and the thumbnail is shrunk in place once the full image is saved.
                if getattr(img, "is_animated", False):
                    _save_animated(img, out, expected)
                    img.seek(0)
                    first = img.copy()
                else:
                    icc = img.info.get("icc_profile")
                    ImageOps.exif_transpose(img, in_place=True)
                    width, height = img.size
                    _save_still(img, out, expected, icc)
                    first = img
                _save_thumbnail(first, thumb, limits.thumbnail_px)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(0, 0, limits) from None
    except ServiceError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(f"the image does not decode: {exc}") from None
    return Probed("image", mime, out, width=width, height=height, thumbnail=thumb)


def _bomb(width: int, height: int, limits: Limits) -> ServiceError:
    size = f" ({width} x {height})" if width else ""
    return invalid(f"the image is too large{size}: at most {limits.max_image_pixels} pixels")


def _save_still(img: Image.Image, out: Path, fmt: str, icc: bytes | None) -> None:
    options: dict = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
        img.save(out, "JPEG", quality=90, **options)
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=90, **options)
    elif fmt == "PNG":
        img.save(out, "PNG", optimize=False, **options)
    else:
        img.save(out, fmt)


def _save_animated(img: Image.Image, out: Path, fmt: str) -> None:
    options = {"loop": img.info.get("loop", 0)}
    if "duration" in img.info:
        options["duration"] = img.info["duration"]
    img.save(out, fmt, save_all=True, **options)


def _save_thumbnail(img: Image.Image, out: Path, px: int) -> None:
    """Shrinks ``img`` in place (the caller is done with it), then saves it as JPEG."""
    thumb = img
    thumb.thumbnail((px, px))
    if thumb.mode in ("RGBA", "LA", "P", "PA"):
        thumb = thumb.convert("RGBA")
        background = Image.new("RGB", thumb.size, (255, 255, 255))
        background.paste(thumb, mask=thumb.getchannel("A"))
        thumb = background
    elif thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    thumb.save(out, "JPEG", quality=80)


# ---- audio and video -------------------------------------------------------------------------

def probe_av(path: Path, purpose: str, limits: Limits, workdir: Path) -> Probed:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, EOFError, UnicodeDecodeError) as exc:
        raise invalid(f"the media file does not decode: {_why(exc)}") from None
    with container:
        fmt = container.format.name
        videos = [s for s in container.streams.video
                  if not (s.disposition & av.stream.Disposition.attached_pic)]
        if videos:
            if purpose == "voice":
                raise unsupported("a voice message must be audio, not video")
            return _probe_video(container, videos[0], fmt, limits, workdir, path)
        if not container.streams.audio:
            raise invalid("the media file has no audio or video stream")
        if fmt == MP4_FAMILY:
            content_type = "audio/mp4"
        elif fmt in AUDIO_CONTAINERS:
            content_type = AUDIO_CONTAINERS[fmt]
        else:
            raise unsupported(f"audio in a {fmt} container is not allowed")
        stream = container.streams.audio[0]
        if stream.codec_context.name not in AUDIO_CODECS:
            raise unsupported(f"audio encoded as {stream.codec_context.name} is not allowed")
        duration_ms, peaks = _decode_audio(container, stream, limits)
    kind = "voice" if purpose == "voice" else "audio"
    return Probed(kind, content_type, path, duration_ms=duration_ms, waveform=peaks)


def _decode_audio(container, stream, limits: Limits) -> tuple[int, list[float]]:
    """Decode every frame; keep the peak of each millisecond (all channels), so the waveform
    comes from the real samples and memory stays small (600,000 floats for 10 minutes)."""
    declared_us = container.duration  # from the header, when it has one
    if declared_us is not None and declared_us > (limits.max_audio_ms + 1000) * 1000:
        raise invalid(f"audio is longer than {limits.max_audio_ms // 60000} minutes")
    resampler = None
    block_peaks: list[float] = []
    samples = rate = block = 0
    carry_peak, carry_fill = 0.0, 0  # a block begun by the previous frame
    try:
        for frame in container.decode(stream):
            if resampler is None:
                rate = frame.sample_rate or stream.codec_context.sample_rate
                if not rate:
                    raise invalid("audio has no sample rate")
                block = max(1, rate // 1000)
                resampler = av.AudioResampler(format="flt", layout=frame.layout.name, rate=rate)
            for out in resampler.resample(frame):
                channels = len(out.layout.channels)
                values = memoryview(bytes(out.planes[0])).cast("f")[: out.samples * channels]
                start = 0
                if carry_fill:
                    head = values[:(block - carry_fill) * channels]
                    if len(head):
                        carry_peak = max(carry_peak, max(head), -min(head))
                    carry_fill += len(head) // channels
                    start = len(head)
                    if carry_fill == block:
                        block_peaks.append(carry_peak)
                        carry_peak, carry_fill = 0.0, 0
                step = block * channels
                for i in range(start, len(values), step):
                    chunk = values[i:i + step]
                    peak = max(max(chunk), -min(chunk))
                    if len(chunk) == step:
                        block_peaks.append(peak)
                    else:
                        carry_peak, carry_fill = peak, len(chunk) // channels
                samples += out.samples
            if samples > (limits.max_audio_ms + 500) * rate // 1000:
                raise invalid(f"audio is longer than {limits.max_audio_ms // 60000} minutes")
    except av.error.FFmpegError as exc:
        raise invalid(f"the audio does not decode: {_why(exc)}") from None
    if carry_fill:
        block_peaks.append(carry_peak)
    if samples == 0 or not rate:
        raise invalid("the audio does not decode: no samples")
    duration_ms = samples * 1000 // rate
    if declared_us is not None and duration_ms * 1000 < declared_us * 0.9 - 250_000:
        raise invalid(f"the audio is truncated: {duration_ms} ms of "
                      f"{declared_us // 1000} ms decode")
    return duration_ms, waveform(block_peaks)


def _probe_video(container, stream, fmt: str, limits: Limits, workdir: Path, path: Path
                 ) -> Probed:
    if fmt == MP4_FAMILY:
        content_type = "video/mp4"
    elif fmt == "matroska,webm":
        content_type = "video/webm"
    else:
        raise unsupported(f"video in a {fmt} container is not allowed")
    codec = stream.codec_context.name
    if codec not in VIDEO_CODECS[content_type]:
        raise unsupported(f"video encoded as {codec} is not allowed in {content_type}")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_image_pixels:
        raise _bomb(width, height, limits)
    thumb = workdir / "thumbnail.jpg"
    try:
        frame = next(container.decode(stream), None)
        if frame is None:
            raise invalid("the video has no frames")
        _save_thumbnail(frame.to_image(), thumb, limits.thumbnail_px)
    except av.error.FFmpegError as exc:
        raise invalid(f"the video does not decode: {_why(exc)}") from None
    duration = container.duration
    return Probed("video", content_type, path, width=width, height=height,
                  duration_ms=duration // 1000 if duration else None, thumbnail=thumb)


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or exc.__class__.__name__


# ---- documents -------------------------------------------------------------------------------

def probe_pdf(path: Path) -> Probed:
    """A PDF starts with ``%PDF-`` and ends (within its last KiB) with ``%%EOF``: a cut or
    disguised file fails here."""
    with open(path, "rb") as f:
        head = f.read(1024)
        f.seek(max(0, path.stat().st_size - 2048))
        tail = f.read()
    if not head.startswith(b"%PDF-") or b"%%EOF" not in tail:
        raise invalid("the PDF is truncated or damaged")
    return Probed("pdf", "application/pdf", path)


def probe_text(path: Path) -> Probed:
    """Plain text must be UTF-8 without NUL bytes (checked as a stream)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                if b"\x00" in chunk:
                    raise unsupported("binary files are not allowed as text")
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise unsupported("text files must be UTF-8") from None
    return Probed("text", "text/plain; charset=utf-8", path)
