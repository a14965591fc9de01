"""Media benchmark: uploads per second and p99 ingest time through the gateway, for a 1 MB
JPEG and a 1-minute voice message (webm/opus), and the media service's peak memory while it
ingests 10 MB files.

    .venv/bin/python -m tests.load.media_bench [--uploads 200] [--concurrency 8]

It starts its own stack (fresh databases, vhost and S3 server, as the tests do). "Ingest time"
is the whole upload request as a client sees it: streaming into quarantine, validation,
re-encoding or decoding, storing, and the message being appended. Peak memory is ``VmHWM`` of
the media process (a fresh one), read from ``/proc/<pid>/status`` before and after ingesting
one 10 MB file of each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp

from tests.load.procstat import memory_kb
from tests.support import media_files as files
from tests.support.backends import (
    create_vhost,
    delete_vhost,
    drop_databases,
    local_servers,
    start_s3,
)
from tests.support.client import Api
from tests.support.media import upload
from tests.support.stack import Stack


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_uploads(stack: Stack, http, data: bytes, name: str, voice: bool, total: int,
                      concurrency: int) -> dict:
    latencies: list[float] = []
    failures: dict[int, int] = {}
    counter = iter(range(total))

    async def worker() -> None:
        me, other = f"bench-{uuid.uuid4().hex[:8]}", f"peer-{uuid.uuid4().hex[:8]}"
        api = Api(http, stack.url, stack.token(me))
        sid = (await api.create_session(other))["id"]
        for _ in counter:
            started = time.perf_counter()
            status, _ = await upload(api, sid, data, name, voice=voice)
            latencies.append(time.perf_counter() - started)
            if status != 201:
                failures[status] = failures.get(status, 0) + 1
            await asyncio.sleep(0.1 if len(latencies) % 15 == 0 else 0)  # per-user rate limit

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"uploads": len(latencies), "failures": failures,
            "uploads_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1)}


async def peak_memory(stack: Stack, http) -> dict:
    media = next(p for p in stack.processes if p.name == "media")
    pid = media.proc.pid
    api = Api(http, stack.url, stack.token("mem-a"))
    sid = (await api.create_session("mem-b"))["id"]
    result = {"baseline_kib": memory_kb(pid)}
    ten_mb = 10 * 1024 * 1024 - 4096
    samples = {
        "text_10MB": (b"0123456789abcdef\n" * (ten_mb // 17), "big.txt", False),
        "wav_10MB_voice": (files.audio("wav", 118.0), "long.wav", True),  # 44.1 kHz mono
        "jpeg_10MB": (files.noisy_jpeg(ten_mb), "noise.jpg", False),
    }
    for label, (data, name, voice) in samples.items():
        status, body = await upload(api, sid, data, name, voice=voice)
        assert status == 201, body
        result[label] = {"bytes": len(data), **memory_kb(pid)}
    return result


async def main(args) -> None:
    backends = local_servers()
    with ExitStack() as exits, TemporaryDirectory() as workdir:
        start_s3(exits, backends)
        create_vhost(backends)
        stack = Stack(backends, Path(workdir))
        try:
            await stack.start_all()
            async with aiohttp.ClientSession() as http:
                if not args.skip_memory:
                    print("media peak memory (VmHWM, KiB):", await peak_memory(stack, http),
                          flush=True)
                image = files.noisy_jpeg(1_100_000)
                print(f"1 MB JPEG ({len(image)} bytes):", await run_uploads(
                    stack, http, image, "photo.jpg", False, args.uploads, args.concurrency),
                    flush=True)
                clip = files.audio("webm", 60.0)
                print(f"1-minute voice, webm/opus ({len(clip)} bytes):", await run_uploads(
                    stack, http, clip, "voice.webm", True, args.uploads, args.concurrency),
                    flush=True)
        finally:
            await stack.stop()
            await drop_databases(backends)
            delete_vhost(backends)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-memory", action="store_true")
    asyncio.run(main(parser.parse_args()))
