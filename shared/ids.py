"""Random (version 4) UUIDs, made without a system call each.

``uuid.uuid4()`` reads 16 bytes from ``os.urandom`` every time, a system call that costs
microseconds on a virtual machine and is made several times per chat message. These ids only
need to be unique, not secret (nobody is authorised by knowing one), so they come from a
Mersenne Twister seeded from ``os.urandom`` per process (and again in a forked child).
"""

from __future__ import annotations

import os
import random
import uuid

_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))

_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _bits() -> int:
    return (_random.getrandbits(128) & _CLEAR) | _SET


def new_uuid() -> uuid.UUID:
    return uuid.UUID(int=_bits())


def new_uuid_str() -> str:
    """``str(new_uuid())``, for the hot paths that only need the text."""
    h = "%032x" % _bits()  # noqa: UP031 - the fastest of the ways to write it
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_hex() -> str:
    """``new_uuid().hex``."""
    return format(_bits(), "032x")
