"""One fixture layer for the real backing servers.

Where a Docker engine answers, each server is a testcontainers container. Otherwise the tests use
the servers running on this machine (``make deps`` starts them). Either way every test run gets
fresh databases (``t<run>_<service>``) and a fresh RabbitMQ vhost, so runs never see each other's
data, and both are removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import quote

import asyncpg


@dataclass
class Backends:
    postgres_base: str  # postgresql://user@host:port (no database)
    amqp_base: str      # amqp://user:pass@host:port (no vhost)
    redis_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    vhost: str = ""
    databases: list[str] = field(default_factory=list)
    via: str = "local"

    def database_url(self, service: str) -> str:
        name = f"t{self.run_id}_{service}"
        if name not in self.databases:
            self.databases.append(name)
        return f"{self.postgres_base}/{name}"

    @property
    def amqp_url(self) -> str:
        return f"{self.amqp_base}/{quote(self.vhost, safe='')}"


def docker_available() -> bool:
    """True when a Docker engine answers ``/_ping`` (on DOCKER_HOST or the default socket)."""
    if os.environ.get("CHAT_TEST_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = host[len("unix://"):]
        elif host.startswith("tcp://"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            name, _, port = host[len("tcp://"):].partition(":")
            address = (name, int(port or 2375))
        else:
            return False
    except OSError:
        return False
    with sock:
        sock.settimeout(2)
        try:
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
        except OSError:
            return False


def start_containers(stack: ExitStack) -> Backends:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer
    from testcontainers.redis import RedisContainer

    pg = stack.enter_context(PostgresContainer("postgres:15", username="postgres",
                                               password="postgres"))
    mq = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
    rd = stack.enter_context(RedisContainer("redis:7"))
    return Backends(
        postgres_base=(f"postgresql://postgres:postgres@{pg.get_container_host_ip()}:"
                       f"{pg.get_exposed_port(5432)}"),
        amqp_base=(f"amqp://guest:guest@{mq.get_container_host_ip()}:"
                   f"{mq.get_exposed_port(5672)}"),
        redis_url=f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0",
        via="testcontainers",
    )


def local_servers() -> Backends:
    return Backends(
        postgres_base=os.environ.get("CHAT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        amqp_base=os.environ.get("CHAT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672"),
        redis_url=os.environ.get("CHAT_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    )


def rabbitmqctl(*args: str) -> None:
    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", *args], check=True,
                   capture_output=True, timeout=60)


def create_vhost(backends: Backends) -> None:
    """A fresh vhost: with containers the broker is new anyway; locally via rabbitmqctl."""
    if backends.via == "testcontainers":
        backends.vhost = "/"
        return
    backends.vhost = f"chat-test-{backends.run_id}"
    rabbitmqctl("add_vhost", backends.vhost)
    rabbitmqctl("set_permissions", "-p", backends.vhost, "guest", ".*", ".*", ".*")


def delete_vhost(backends: Backends) -> None:
    if backends.via == "local" and backends.vhost:
        rabbitmqctl("delete_vhost", backends.vhost)


async def drop_databases(backends: Backends) -> None:
    conn = await asyncpg.connect(f"{backends.postgres_base}/postgres")
    try:
        for name in backends.databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def drop_databases_sync(backends: Backends) -> None:
    asyncio.run(drop_databases(backends))
