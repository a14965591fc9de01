"""structlog JSON logs; the correlation id travels in a context variable.

The broker layer binds ``correlation_id`` when it handles a message and copies it into every
message it publishes, so one client request can be followed across services by grepping for it.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

__all__ = ["configure_logging", "get_logger", "bind_contextvars", "bound_contextvars",
           "clear_contextvars"]


def _orjson_dumps(obj, default=None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    level_no = logging.getLevelName(level.upper())
    if not isinstance(level_no, int):
        level_no = logging.INFO
    renderer = (structlog.processors.JSONRenderer(serializer=_orjson_dumps) if fmt == "json"
                else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    bind_contextvars(service=service)
    # Libraries log through stdlib logging; keep their warnings, drop their chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
