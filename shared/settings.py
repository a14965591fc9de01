"""Typed configuration shared by every service.

Every setting is an environment variable with the ``CHAT_`` prefix and a default that works on
one local machine. A secret may instead be read from a file named by ``<VAR>_FILE``. Settings are
read once at start; a bad value stops the process with a message that names the variable.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"


class CommonSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    log_level: str = "info"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    instance_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Time a request waits for another service before the caller gets 503.
    rpc_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Time to wait for a publisher confirm before the publish counts as failed.
    publish_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # How many times a consumer tries a message before it goes to the dead-letter queue.
    delivery_limit: int = Field(default=5, ge=1, le=100)
    # Type of the queues that only hold requests (see shared.topology): quorum, as every
    # command queue; classic saves broker CPU where a single broker node is all there is.
    request_queue_type: str = Field(default="quorum", pattern="^(classic|quorum)$")
    # Grace period for in-flight work on SIGTERM.
    shutdown_grace_s: float = Field(default=10.0, ge=0, le=300)


S = TypeVar("S", bound=BaseSettings)


def _apply_file_secrets() -> None:
    """``CHAT_X_FILE=/path`` sets ``CHAT_X`` to the file's contents (Kubernetes secrets)."""
    for key, path in list(os.environ.items()):
        if key.startswith("CHAT_") and key.endswith("_FILE"):
            target = key[: -len("_FILE")]
            if target not in os.environ:
                os.environ[target] = Path(path).read_text().strip()


def load_settings(cls: type[S]) -> S:
    """Read settings once; exit with a clear message naming each bad variable."""
    _apply_file_secrets()
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        for err in exc.errors():
            name = (prefix + "_".join(str(p) for p in err["loc"])).upper()
            print(f"configuration error: {name}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
