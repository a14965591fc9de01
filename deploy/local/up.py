"""Run the whole chat stack on this machine, in the foreground (what ``make up`` runs).

    python -m deploy.local.up               # everything that exists
    python -m deploy.local.up messaging     # only these services (and S3)
    python -m deploy.local.up --deps-only   # only make sure Postgres, Redis, RabbitMQ are up

1. Postgres, Redis and RabbitMQ must answer at their configured URLs; one that is down but
   installed here is started (see ``deploy.local.deps``).
2. honcho supervises ``s3`` (SeaweedFS, loopback only, data in ``var/seaweedfs``) and every
   service that exists, as ``python -m services.<name>``, with one log stream.
3. Once every process answers, the gateway URL is printed. Ctrl-C stops everything; so does any
   process that exits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from . import deps, s3

ROOT = Path(__file__).resolve().parents[2]


class LaunchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ops:
    """Where a service answers ``/healthz`` and ``/readyz``: its settings and their defaults."""

    host_var: str
    port_var: str
    port: int

    def address(self, env: dict[str, str]) -> tuple[str, int]:
        host = env.get(self.host_var, "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        try:
            return host, int(env.get(self.port_var, self.port))
        except ValueError:
            raise LaunchError(f"{self.port_var} is not a port number") from None


# Every service of the stack, in one place. Adding one is one line; a service whose
# services/<name>/__main__.py does not exist yet is skipped.
SERVICES: dict[str, Ops] = {
    "gateway": Ops("CHAT_GATEWAY_HOST", "CHAT_GATEWAY_PORT", 8080),
    "messaging": Ops("CHAT_MESSAGING_OPS_HOST", "CHAT_MESSAGING_OPS_PORT", 8081),
    "presence": Ops("CHAT_PRESENCE_OPS_HOST", "CHAT_PRESENCE_OPS_PORT", 8082),
    "media": Ops("CHAT_MEDIA_OPS_HOST", "CHAT_MEDIA_OPS_PORT", 8083),
    "audit": Ops("CHAT_AUDIT_OPS_HOST", "CHAT_AUDIT_OPS_PORT", 8084),
}


def existing_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "__main__.py").is_file()]


def child_env() -> dict[str, str]:
    """The environment of every supervised process: ours, plus the local defaults."""
    env = dict(os.environ)
    for key, value in s3.DEV_CREDENTIALS.items():
        env.setdefault(key, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("CHAT_LOG_FORMAT", "console" if sys.stdout.isatty() else "json")
    return env


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def plan(names: list[str], env: dict[str, str]) -> dict[str, str]:
    """The processes to run: name -> shell command."""
    processes: dict[str, str] = {}
    targets: dict[str, str] = {}

    host, port = s3.endpoint(env)
    s3_url = f"http://{host}:{port}"
    if host not in deps.LOOPBACK:
        print(f"up: S3 at {s3_url} is not on this machine: not starting SeaweedFS", flush=True)
    elif listening(host, port):
        print(f"up: something already answers at {s3_url}: using it as S3", flush=True)
    else:
        s3.DATA_DIR.mkdir(parents=True, exist_ok=True)
        command = s3.weed_command(s3.DATA_DIR, port, env.get("CHAT_S3_BUCKET", s3.DEFAULT_BUCKET))
        processes["s3"] = "exec " + shlex.join(command)
        targets["s3"] = s3_url + "/"

    gateway = None
    for name in names:
        host, port = SERVICES[name].address(env)
        if listening(host, port):
            raise LaunchError(f"{host}:{port} ({SERVICES[name].port_var}, for {name}) is "
                              "already in use: is the stack running already?")
        processes[name] = "exec " + shlex.join([sys.executable, "-m", f"services.{name}"])
        targets[name] = f"http://{host}:{port}/readyz"
        if name == "gateway":
            gateway = f"http://{host}:{port}"

    watcher = [sys.executable, "-m", "deploy.local.ready"]
    if gateway:
        watcher += ["--gateway", gateway]
    processes["ready"] = "exec " + shlex.join(watcher + [f"{n}={u}" for n, u in targets.items()])
    return processes


def supervise(processes: dict[str, str], env: dict[str, str]) -> int:
    try:
        import honcho.manager
    except ImportError:
        raise LaunchError("honcho is missing: run `make install` (or `uv sync`) first, and "
                          "start this with .venv/bin/python") from None
    # Give services time to finish in-flight work on SIGTERM before honcho sends SIGKILL.
    honcho.manager.KILL_WAIT = float(env.get("CHAT_SHUTDOWN_GRACE_S", "10")) + 5
    manager = honcho.manager.Manager()
    for name, command in processes.items():
        manager.add_process(name, command, env=env, cwd=str(ROOT))
    manager.loop()  # returns once every process has stopped
    code = manager.returncode or 0
    return 0 if code in (130, 143) else code  # stopped by Ctrl-C or SIGTERM: a clean stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.up",
                                     description="Run the whole chat stack in the foreground.")
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help=f"run only these (default: all that exist of {', '.join(SERVICES)})")
    parser.add_argument("--deps-only", action="store_true",
                        help="only make sure Postgres, Redis and RabbitMQ are up, then exit")
    parser.add_argument("--no-deps", action="store_true",
                        help="do not check or start Postgres, Redis and RabbitMQ")
    args = parser.parse_args(argv)
    os.chdir(ROOT)

    available = existing_services()
    unknown = [n for n in args.services if n not in available]
    if unknown:
        parser.error(f"no such service: {', '.join(unknown)} (present: {', '.join(available)})")
    names = args.services or available

    try:
        if not args.no_deps:
            deps.ensure_all(log=lambda line: print(f"up: {line}", flush=True))
        if args.deps_only:
            return 0
        missing = [n for n in SERVICES if n not in available]
        if missing:
            print(f"up: not present yet, skipped: {', '.join(missing)}", flush=True)
        env = child_env()
        return supervise(plan(names, env), env)
    except (deps.DepsError, LaunchError, FileNotFoundError) as exc:
        print(f"up: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
