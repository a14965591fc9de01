"""Fixtures shared by every test layer. See ``support/backends.py`` for where the servers come
from (testcontainers when a Docker engine answers, else the local ones)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import aiohttp
import pytest

from .support.backends import (
    Backends,
    create_vhost,
    delete_vhost,
    docker_available,
    drop_databases_sync,
    local_servers,
    start_containers,
    start_s3,
)
from .support.client import Api
from .support.stack import Stack

_STACKS: list[Stack] = []


@pytest.fixture(scope="session")
def backends():
    with ExitStack() as stack:
        found: Backends = start_containers(stack) if docker_available() else local_servers()
        start_s3(stack, found)
        create_vhost(found)
        try:
            yield found
        finally:
            drop_databases_sync(found)
            delete_vhost(found)


@pytest.fixture(scope="session")
async def stack(backends, tmp_path_factory):
    """Every service as a real process, shared by the end-to-end tests."""
    running = Stack(backends, tmp_path_factory.mktemp("stack"))
    _STACKS.append(running)
    try:
        await running.start_all()
        yield running
    finally:
        await running.stop()
        _STACKS.remove(running)


@pytest.fixture
async def isolated_stack(backends, tmp_path):
    """``await isolated_stack()`` -> a Stack with its own vhost and databases (not started);
    for tests that kill processes or stop the broker. Stopped and removed afterwards."""
    made: list[Stack] = []

    async def make() -> Stack:
        scope = f"x{uuid.uuid4().hex[:6]}"
        running = Stack(backends, tmp_path / scope, scope=scope)
        running.workdir.mkdir()
        running.vhost = f"{backends.vhost}-{scope}"
        backends.rabbitmqctl("add_vhost", running.vhost)
        backends.rabbitmqctl("set_permissions", "-p", running.vhost, "guest", ".*", ".*", ".*")
        made.append(running)
        _STACKS.append(running)
        return running

    yield make
    for running in made:
        await running.stop()
        _STACKS.remove(running)
        backends.rabbitmqctl("delete_vhost", running.vhost)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def user():
    """A fresh user id per call, so tests never share state."""
    return lambda name="u": f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(stack, http):
    """``api(user_id, role)`` -> an authenticated HTTP client for that user."""
    return lambda user_id, role="client": Api(http, stack.url, stack.token(user_id, role))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STACKS:
        for running in _STACKS:
            report.sections.append(("service logs", running.logs()))
