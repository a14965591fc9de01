"""What the media handlers need, wired once in ``app.py``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.broker import Broker
from shared.s3 import ObjectStore

from .probe import Limits


@dataclass
class Deps:
    pool: asyncpg.Pool
    objects: ObjectStore
    broker: Broker
    probe_pool: Executor          # decoding runs here, off the event loop
    limits: Limits
    max_bytes: int
    url_ttl: timedelta
    wake_outbox: Callable[[], None]
    work_dir: str | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
