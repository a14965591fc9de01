"""The real service processes, started the way an operator starts them, for end-to-end tests.

Each process runs ``python -m services.<name>`` with its settings in the environment (fresh
databases, a fresh vhost, free ports) and logs to a file that is printed when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

from services.gateway.auth import mint_token

from .backends import Backends
from .ports import free_port

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-keys"
# Started in this order before the gateway; a service that does not exist yet is skipped.
BACKEND_SERVICES = ("messaging", "presence", "media", "audit")


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_path: Path
    ops_url: str
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.proc = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"],
                                     cwd=ROOT, env=self.env, stdout=log, stderr=log)
        log.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    async with http.get(f"{self.ops_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def stop(self, timeout: float = 15.0) -> int | None:
        if not self.proc:
            return None
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Stack:
    backends: Backends
    workdir: Path
    processes: list[ServiceProcess] = field(default_factory=list)
    gateway_port: int = 0
    # An isolated stack (fault tests) has its own vhost and databases: killing its processes
    # or filling its queues never touches the shared one.
    scope: str = ""
    vhost: str | None = None

    @property
    def amqp_url(self) -> str:
        if self.vhost is None:
            return self.backends.amqp_url
        return f"{self.backends.amqp_base}/{quote(self.vhost, safe='')}"

    def database_url(self, service: str) -> str:
        return self.backends.database_url(f"{self.scope}{service}")

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update({
            "CHAT_AMQP_URL": self.amqp_url,
            "CHAT_MESSAGING_DATABASE_URL": self.database_url("messaging"),
            "CHAT_MEDIA_DATABASE_URL": self.database_url("media"),
            "CHAT_AUDIT_DATABASE_URL": self.database_url("audit"),
            "CHAT_REDIS_URL": self.backends.redis_url,
            # Test runs share one Redis: each keeps its presence keys apart.
            "CHAT_PRESENCE_KEY_PREFIX": self.presence_prefix,
            "CHAT_JWT_SECRET": JWT_SECRET,
            "CHAT_LOG_LEVEL": "info",
            "CHAT_RPC_TIMEOUT_S": "5",
            "CHAT_SHUTDOWN_GRACE_S": "5",
        })
        env.update(self.backends.s3_env())
        return env

    @property
    def presence_prefix(self) -> str:
        return f"t{self.backends.run_id}{self.scope}:presence:"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    async def start_service(self, name: str, **overrides: str) -> ServiceProcess:
        """Any service but the gateway: its ops port is ``CHAT_<NAME>_OPS_PORT``."""
        port = free_port()
        env = self.base_env() | {f"CHAT_{name.upper()}_OPS_PORT": str(port)} | overrides
        return await self._start(name, env, f"http://127.0.0.1:{port}")

    async def start_messaging(self, **overrides: str) -> ServiceProcess:
        return await self.start_service("messaging", **overrides)

    async def start_gateway(self, port: int | None = None, **overrides: str) -> ServiceProcess:
        port = port or free_port()
        env = self.base_env() | {"CHAT_GATEWAY_PORT": str(port)} | overrides
        process = await self._start("gateway", env, f"http://127.0.0.1:{port}")
        if not self.gateway_port:
            self.gateway_port = port
        return process

    async def _start(self, name: str, env: dict[str, str], ops_url: str) -> ServiceProcess:
        index = sum(1 for p in self.processes if p.name == name)
        process = ServiceProcess(name, env, self.workdir / f"{name}-{index}.log", ops_url)
        process.start()
        self.processes.append(process)
        await process.wait_ready()
        return process

    async def start_all(self) -> None:
        """Every service that exists, then the gateway (as ``make up`` does)."""
        for name in BACKEND_SERVICES:
            if (ROOT / "services" / name / "__main__.py").exists():
                await self.start_service(name)
        await self.start_gateway()

    def token(self, user_id: str, role: str = "client", ttl_s: int = 3600) -> str:
        return mint_token(JWT_SECRET, user_id, role, ttl_s=ttl_s)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in reversed(self.processes)))

    def logs(self) -> str:
        return "\n\n".join(f"--- {p.name} ({p.log_path.name})\n{p.log_tail()}"
                           for p in self.processes)
