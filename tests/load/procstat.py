"""Readings from ``/proc`` (Linux): resident memory and CPU time of a process, CPU time of the
machine. The bench samples them at each phase of a run to tell memory per connection and which
process used the CPU while the load ran."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of a process, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces; the fields we need follow its closing ')'.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds_by_command(command: str, markers: tuple[str, ...] = ()) -> float:
    """CPU time of every process named ``command`` whose command line holds one of
    ``markers`` (all of them when none are given): e.g. ``beam.smp`` for RabbitMQ, or the
    ``postgres`` backends of one database (their title names it). Ended processes are lost."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != command:
                    continue
            if markers:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    title = cmdline.read().decode(errors="replace")
                if not any(marker in title for marker in markers):
                    continue
            total += cpu_seconds(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def server_pids(command: str, marker: str = "") -> set[int]:
    """Pids of the top processes named ``command`` (their parent is named otherwise) whose
    command line holds ``marker``: the RabbitMQ node (not ``rabbitmqctl``, also a beam.smp),
    the Postgres postmaster. A change during a run means a server restarted."""
    named: dict[int, int] = {}  # pid -> parent pid
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        if name == command:
            named[int(entry)] = int(text.rpartition(")")[2].split()[1])
    found = set()
    for pid, parent in named.items():
        if parent in named:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read().replace(b"\0", b" "):
                    found.add(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


@dataclass
class MachineCpu:
    busy_s: float
    total_s: float
    softirq_s: float  # network stacks (loopback included): charged to no process
    steal_s: float  # taken by the hypervisor for other machines


def machine_cpu() -> MachineCpu:
    """CPU time of all cores together since boot, busy (not idle or iowait) and in total."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]] + [0] * 8
    idle = ticks[3] + ticks[4]
    total = sum(ticks[:8])
    return MachineCpu((total - idle) / CLOCK_TICKS, total / CLOCK_TICKS,
                      (ticks[5] + ticks[6]) / CLOCK_TICKS, ticks[7] / CLOCK_TICKS)


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
