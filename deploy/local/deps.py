"""Make sure Postgres, Redis and RabbitMQ answer at the URLs the services are configured with.

A server that does not answer, but is installed on this machine and configured on a loopback
address, is started with the Debian command for it (once), then waited for within a bound.
Anything else ends with a message that says what to install or which variable to change.

Standard library only, so CI can run it before the virtualenv exists::

    python3 -m deploy.local.deps
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/chat_messaging"
LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}
# Debian puts the server commands in sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

READY, STARTING = "ready", "starting"


class DepsError(RuntimeError):
    """A backing server is not reachable and could not be started."""


@dataclass
class Server:
    name: str
    variable: str  # the setting that names it
    host: str
    port: int
    probe: Callable[[socket.socket], str]  # READY or STARTING; OSError when nothing answers
    install: str  # the Debian package
    wait_s: float
    start: Callable[[], list[str] | None]  # the command that starts it here, if any

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# --- probes: speak just enough of each protocol to tell "up" from "still booting" ---

def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe_postgres(sock: socket.socket, user: str = "postgres") -> str:
    params = f"user\0{user}\0database\0postgres\0\0".encode()
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    head = _recv(sock, 5)
    if len(head) < 5:
        return STARTING
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if kind == b"E":  # 57P03: "the database system is starting up"
        body = _recv(sock, length - 4)
        return STARTING if b"C57P03\0" in body else READY
    if kind == b"R" and length == 8 and _recv(sock, 4) == b"\0\0\0\0":
        sock.sendall(b"X\0\0\0\4")  # authenticated (trust): say goodbye politely
    return READY


def probe_redis(sock: socket.socket) -> str:
    sock.sendall(b"PING\r\n")
    reply = sock.recv(64)
    if not reply or reply.startswith(b"-LOADING"):
        return STARTING
    return READY  # +PONG, or -NOAUTH: the server is up either way


def probe_amqp(sock: socket.socket) -> str:
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    return READY if sock.recv(1) == b"\x01" else STARTING  # a connection.start method frame


def probe_tcp(_: socket.socket) -> str:
    return READY


def check(server: Server, timeout: float = 2.0) -> str:
    """READY or STARTING; raises OSError when nothing listens."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        return server.probe(sock)


def is_ready(server: Server) -> bool:
    try:
        return check(server) == READY
    except OSError:
        return False


# --- start commands (the same ones the machine uses at boot) ---

def _which(command: str) -> str | None:
    return shutil.which(command, path=SEARCH_PATH)


def _postgres_start(port: int) -> list[str] | None:
    ctl, conf_root = _which("pg_ctlcluster"), Path("/etc/postgresql")
    if not ctl or not conf_root.is_dir():
        return None
    versions = sorted((p.name for p in conf_root.iterdir() if (p / "main").is_dir()),
                      key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")])
    if not versions:
        return None
    chosen = versions[-1]
    for version in versions:  # prefer the cluster configured for this port
        conf = conf_root / version / "main" / "postgresql.conf"
        match = re.search(r"^\s*port\s*=\s*(\d+)", conf.read_text(errors="replace"), re.M)
        if match and int(match.group(1)) == port:
            chosen = version
    return [ctl, "--skip-systemctl-redirect", chosen, "main", "start"]


def _writable_dir(preferred: str, fallback: Path) -> str:
    path = Path(preferred)
    if path.is_dir() and os.access(path, os.W_OK):
        return str(path)
    fallback.mkdir(parents=True, exist_ok=True)
    return str(fallback)


def _redis_start(port: int) -> list[str] | None:
    redis = _which("redis-server")
    if not redis:
        return None
    data_dir = _writable_dir("/var/lib/redis", ROOT / "var" / "redis")
    log_dir = _writable_dir("/var/log/redis", ROOT / "var" / "redis")
    return [redis, "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", data_dir,
            "--logfile", str(Path(log_dir) / "ci.log")]


def _rabbitmq_booting() -> bool:
    """A RabbitMQ node (an Erlang VM running rabbit) exists already, perhaps still booting."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes()
        except OSError:
            continue
        if b"beam" in args and b"rabbit" in args:
            return True
    return False


def _rabbitmq_start() -> list[str] | None:
    server = _which("rabbitmq-server")
    if not server or _rabbitmq_booting():
        return None
    return [server, "-detached"]


# --- which servers the configuration names ---

def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def servers(env: Mapping[str, str] = os.environ) -> list[Server]:
    found: list[Server] = []
    database_urls = {"CHAT_MESSAGING_DATABASE_URL": DEFAULT_DATABASE_URL}
    database_urls.update({k: v for k, v in env.items()
                          if k.startswith("CHAT_") and k.endswith("_DATABASE_URL")})
    seen: set[tuple[str, int]] = set()
    for variable, url in sorted(database_urls.items()):
        host, port = _host_port(url, 5432)
        if (host, port) in seen:
            continue
        seen.add((host, port))
        user = urlsplit(url).username or "postgres"
        found.append(Server("PostgreSQL", variable, host, port,
                            lambda s, user=user: probe_postgres(s, user), "postgresql", 30,
                            lambda port=port: _postgres_start(port)))

    url = env.get("CHAT_REDIS_URL", DEFAULT_REDIS_URL)
    host, port = _host_port(url, 6379)
    found.append(Server("Redis", "CHAT_REDIS_URL", host, port,
                        probe_tcp if url.startswith("rediss:") else probe_redis, "redis-server",
                        15, lambda port=port: _redis_start(port)))

    url = env.get("CHAT_AMQP_URL", DEFAULT_AMQP_URL)
    host, port = _host_port(url, 5672)
    found.append(Server("RabbitMQ", "CHAT_AMQP_URL", host, port,
                        probe_tcp if url.startswith("amqps:") else probe_amqp, "rabbitmq-server",
                        90, _rabbitmq_start))
    return found


# --- ensure ---

def _run_start(server: Server, command: list[str]) -> str:
    """Run a start command; its output goes to a file, not a pipe, since the daemon it leaves
    behind may keep the descriptors open (a pipe would then never reach its end)."""
    log_path = ROOT / "var" / "log" / f"start-{server.name.lower()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w+b") as out:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                       timeout=server.wait_s)
        out.seek(0)
        return out.read()[-2000:].decode(errors="replace").strip()


def ensure(server: Server, log: Callable[[str], None] = print) -> None:
    """Return once ``server`` answers; start it first if it is local, installed and down."""
    try:
        state = check(server)
    except OSError:
        state = None
    if state == READY:
        log(f"{server.name}: ready at {server.address}")
        return

    output = ""
    if state is None:  # nothing listens: start it, if we can
        if server.host not in LOOPBACK:
            raise DepsError(f"{server.name} is not reachable at {server.address} "
                            f"({server.variable}); it is not on this machine, so it was not "
                            f"started: start it there or change {server.variable}.")
        command = server.start()
        if command is None and not (server.name == "RabbitMQ" and _rabbitmq_booting()):
            raise DepsError(f"{server.name} is not reachable at {server.address} and is not "
                            f"installed here: install it (apt-get install {server.install}) "
                            f"or set {server.variable} to a running server.")
        if command:
            log(f"{server.name}: not running at {server.address}, starting: {' '.join(command)}")
            output = _run_start(server, command)
    log(f"{server.name}: waiting for {server.address} (at most {server.wait_s:.0f} s)")

    deadline = time.monotonic() + server.wait_s
    while time.monotonic() < deadline:
        if is_ready(server):
            log(f"{server.name}: ready at {server.address}")
            return
        time.sleep(0.5)
    detail = f"\nits start command said:\n{output}" if output else ""
    raise DepsError(f"{server.name} did not become ready at {server.address} within "
                    f"{server.wait_s:.0f} s ({server.variable}); check its log "
                    f"(or apt-get install {server.install}).{detail}")


def ensure_all(env: Mapping[str, str] = os.environ,
               log: Callable[[str], None] = print) -> None:
    for server in servers(env):
        ensure(server, log)


def main() -> int:
    try:
        ensure_all(log=lambda line: print(f"deps: {line}", flush=True))
    except (DepsError, subprocess.SubprocessError) as exc:
        print(f"deps: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
