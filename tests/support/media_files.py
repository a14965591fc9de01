"""Files the media tests make themselves: audio in every allowed format (PyAV), images with and
without EXIF GPS (Pillow), a PDF, a decompression bomb, renamed executables and archives."""

from __future__ import annotations

import array
import io
import math
import struct
import tempfile
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

# name -> (container, codec, sample rate)
AUDIO_FORMATS = {
    "webm": ("webm", "libopus", 48000),
    "ogg": ("ogg", "libopus", 48000),
    "mp3": ("mp3", "libmp3lame", 44100),
    "wav": ("wav", "pcm_s16le", 44100),
    "m4a": ("ipod", "aac", 44100),
}


def audio(fmt: str, seconds: float, *, silent_second_half: bool = False,
          amplitude: float = 0.8, frequency: float = 440.0, layout: str = "mono") -> bytes:
    """A sine tone (optionally silent in its second half) encoded as ``fmt``."""
    container, codec, rate = AUDIO_FORMATS[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"a.{fmt}"
        out = av.open(str(path), "w", format=container)
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        channels = 1 if layout == "mono" else 2
        total = int(seconds * rate)
        half = total // 2
        chunk = 960 if codec == "libopus" else 1152
        step = 2 * math.pi * frequency / rate
        pts = 0
        while pts < total:
            n = min(chunk, total - pts)
            values = array.array("f", (
                0.0 if silent_second_half and i >= half else amplitude * math.sin(step * i)
                for i in range(pts, pts + n) for _ in range(channels)))
            frame = av.AudioFrame(format="flt", layout=layout, samples=n)
            frame.planes[0].update(values.tobytes())
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
            pts += n
        for packet in stream.encode(None):
            out.mux(packet)
        out.close()
        return path.read_bytes()


def video_mp4(seconds: float = 1.0, size: tuple[int, int] = (160, 120)) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        out = av.open(str(path), "w", format="mp4")
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * 10)):
            img = Image.new("RGB", size, (i * 20 % 255, 80, 160))
            frame = av.VideoFrame.from_image(img)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        out.close()
        return path.read_bytes()


def jpeg_with_gps(size: tuple[int, int] = (1200, 800)) -> bytes:
    """A JPEG whose EXIF holds a camera model and a GPS position."""
    img = Image.new("RGB", size, (200, 30, 30))
    for x in range(0, size[0], 40):  # some detail, so it is not trivially compressible
        img.paste((30, 200, 30), (x, 0, x + 20, size[1]))
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=90)
    return buf.getvalue()


def image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 240)).save(buf, fmt)
    return buf.getvalue()


def noisy_jpeg(target_bytes: int) -> bytes:
    """A JPEG of about ``target_bytes`` (random pixels compress badly)."""
    import os
    side = int(math.sqrt(target_bytes / 0.75))
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    while buf.tell() > target_bytes:  # a little too big: trim the side
        side = int(side * 0.98)
        buf = io.BytesIO()
        img.resize((side, side)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` that is a few KiB on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def pdf() -> bytes:
    """A minimal valid one-page PDF."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def windows_exe() -> bytes:
    """The start of a PE executable (MZ header, PE signature): what libmagic calls dosexec."""
    dos = bytearray(b"MZ" + b"\x90\x00" * 29 + b"\x00" * 2)
    dos[0x3C:0x40] = struct.pack("<I", 0x80)
    body = bytes(dos) + b"\x00" * (0x80 - len(dos))
    pe = b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    return body + pe + b"\x00" * 512


def zip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("report.txt", "not a pdf")
    return buf.getvalue()
