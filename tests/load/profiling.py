"""Optional sampling profiles of the services while the bench measures (``bench --profile``).

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``). From them
we report the functions with the most samples on top of the stack (self), anywhere in it
(inclusive), and the project's own functions (``services/``, ``shared/``) anywhere in it, as a
share of all samples taken while the process was busy (``--rate`` samples/s; idle time is not
sampled). Time spent in the event loop's C code shows as ``Runner.run``. Profiling costs CPU
on a small machine, so numbers from a profiled run are not the headline numbers.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, rate: int = 100
                 ) -> asyncio.subprocess.Process | None:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; None when py-spy is missing."""
    exe = py_spy()
    if exe is None:
        return None
    return await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
        "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: lines merge per function."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    parts = Path(file).parts
    if "site-packages" in parts:
        file = "/".join(parts[parts.index("site-packages") + 1:])
    elif "services" in parts or "shared" in parts:
        anchor = parts.index("services") if "services" in parts else parts.index("shared")
        file = "/".join(parts[anchor:])
    else:
        file = Path(file).name
    return f"{match['func']} ({file})"


def summarize(path: Path, top: int = 15) -> dict:
    """Top functions by self and inclusive samples in a raw py-spy profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:  # the leaf frame is last
            own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n

    def share(counter: Counter[str]) -> list[dict]:
        return [{"function": name, "samples": n, "pct": round(100 * n / total, 1)}
                for name, n in counter.most_common(top)]

    ours = Counter({name: n for name, n in inclusive.items()
                    if "(services/" in name or "(shared/" in name})
    return {"samples": total, "self": share(own), "inclusive": share(inclusive),
            "project_inclusive": share(ours)}
