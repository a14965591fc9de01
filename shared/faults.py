"""Fault injection for the recovery tests, off unless ``CHAT_FAULTS`` is set.

``CHAT_FAULTS="crash_after_commit=0.05,poison=POISON"``:
- ``crash_after_commit=P``: after a batch handler returned (its transaction committed) and
  before the broker messages are acked or answered, exit the process with probability P: the
  exact window a consumer must survive (redelivery of already-committed work).
- ``poison=TEXT``: a command whose text contains TEXT makes the handler raise, every time.

Never set in production; the recovery tests set it on the processes they start.
"""

from __future__ import annotations

import os
import random

from .logging import get_logger

log = get_logger(__name__)


def _parse(raw: str) -> dict[str, str]:
    faults = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, value = item.partition("=")
        faults[name] = value
    return faults


FAULTS = _parse(os.environ.get("CHAT_FAULTS", ""))


def crash_point(name: str) -> None:
    chance = float(FAULTS.get(name) or 0)
    if chance and random.random() < chance:
        log.warning("fault_injected_exit", fault=name)
        os._exit(99)


def poisoned(text: str | None) -> bool:
    marker = FAULTS.get("poison")
    return bool(marker and text and marker in text)
