from __future__ import annotations

import uuid

import pytest

from shared.broker import Broker
from shared.db import apply_migrations, create_pool, ensure_database
from shared.settings import CommonSettings


@pytest.fixture
async def broker(backends):
    settings = CommonSettings(amqp_url=backends.amqp_url, rpc_timeout_s=2, publish_timeout_s=2,
                              delivery_limit=3)
    broker = Broker(settings, f"test-{uuid.uuid4().hex[:6]}")
    await broker.start()
    yield broker
    await broker.close()


@pytest.fixture(scope="session")
async def messaging_db(backends):
    from services.messaging.app import MIGRATIONS
    url = backends.database_url("messaging_it")
    await ensure_database(url)
    await apply_migrations(url, MIGRATIONS)
    return url


@pytest.fixture
async def messaging_pool(messaging_db):
    pool = await create_pool(messaging_db)
    yield pool
    await pool.close()
