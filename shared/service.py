"""Process plumbing every service shares: uvloop, and SIGTERM/SIGINT turned into a stop event."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

# The cyclic garbage collector, tuned for a server (reference counting frees nearly everything;
# cycles are rare). With the default first threshold (700 net new container objects) the
# gateway spent a fifth of its CPU in collections under load, each one walking thousands of
# live connections' objects. What exists after start-up (modules, schemas) is frozen out of
# every collection.
GC_THRESHOLDS = (50_000, 20, 20)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on uvloop; ``stop`` is set on the first SIGTERM or SIGINT."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(runner())


def watch(task: asyncio.Task, stop: asyncio.Event, name: str) -> asyncio.Task:
    """A background task that dies stops the process (its supervisor restarts it) instead of
    leaving a service that looks alive but does nothing."""
    from .logging import get_logger

    def done(t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            get_logger(__name__).error("background_task_crashed", task=name,
                                       error=repr(t.exception()))
            stop.set()

    task.add_done_callback(done)
    return task
