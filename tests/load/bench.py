"""``make bench``: the chat stack under load on this machine, measured end to end.

Starts a fresh RabbitMQ vhost and fresh databases on the local servers, runs
``python -m services.messaging``, ``python -m services.presence`` (the gateway asks it who is
online on every join; ``--services`` changes the set) and ``python -m services.gateway`` as real
processes (logs at ``warning`` level, in ``var/bench/<stamp>/``), then the load generator
(``tests.load.loadgen``) in a process of its own, and stops and cleans everything up at the end,
also on Ctrl-C or error.

Measured (see ``tests/load/tally.py`` for the checks and the definitions):

- sustained throughput (acks/s), deliveries/s and delivery latency p50/p95/p99/max over the
  window after the warm-up, and whether every acked message reached every participant once, in
  seq order;
- the gateway's resident memory before the WebSockets open, with all of them open, joined and
  idle (-> KiB per idle connection), and its peak;
- CPU used by each service, the load generator, RabbitMQ and Postgres during the window, and by
  the whole machine (``other``: whatever else ran on it meanwhile).

Examples::

    make bench                                        # 1000 connections, 5000 msg/s, 20 s
    make bench BENCH_ARGS="--connections 50 --rate 200 --duration 5"
    make bench BENCH_ARGS="--idle-connections 5000"   # memory per idle connection only
    make bench BENCH_ARGS="--profile"                 # py-spy top functions of both services
    make bench BENCH_ARGS="--set CHAT_COALESCE_WINDOW_MS=4"   # measure a setting

The result is printed and written as JSON (``var/bench/bench-<stamp>.json`` and
``var/bench/latest.json``). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.support.backends import (
    create_vhost,
    delete_vhost,
    drop_databases,
    local_servers,
)
from tests.support.stack import JWT_SECRET, ROOT, Stack

from . import procstat, profiling, promscrape
from .report import render

# The gateway's defaults (services/gateway/settings.py): per user, and frames per connection.
DEFAULT_MESSAGES_PER_S, DEFAULT_MESSAGES_BURST = 10.0, 20
DEFAULT_FRAMES_PER_S, DEFAULT_FRAMES_BURST = 50.0, 200
IDLE_SETTLE_S = 2.0  # after the last join, before the idle memory reading
# Services the bench may start besides the gateway (media needs an S3 server: not here).
SERVICES = ("messaging", "presence", "audit")
# The backing servers: (command, how to tell its main process: see procstat.server_pids).
SERVERS = {"rabbitmq": ("beam.smp", "rabbit boot"), "postgres": ("postgres", "")}
# Postgres processes that work for the run: its databases' backends and the writers.
POSTGRES_SHARED = ("walwriter", "checkpointer", "background writer")


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def rate_limits(per_connection_rate: float) -> dict[str, str]:
    """Gateway settings for the bench: the defaults while each connection's rate stays well
    under them (so the defaults are what is measured), else limits with room to spare."""
    env: dict[str, str] = {}
    if per_connection_rate > 0.8 * DEFAULT_MESSAGES_PER_S:
        env["CHAT_RATE_MESSAGES_PER_S"] = str(math.ceil(per_connection_rate * 2))
        env["CHAT_RATE_MESSAGES_BURST"] = str(max(DEFAULT_MESSAGES_BURST,
                                                  math.ceil(per_connection_rate * 4)))
    if per_connection_rate > 0.8 * DEFAULT_FRAMES_PER_S:
        env["CHAT_RATE_FRAMES_PER_S"] = str(math.ceil(per_connection_rate * 2))
        env["CHAT_RATE_FRAMES_BURST"] = str(max(DEFAULT_FRAMES_BURST,
                                                math.ceil(per_connection_rate * 4)))
    return env


class Sampler:
    """Memory and CPU of the processes of the run, read from /proc at each phase."""

    def __init__(self, processes: dict[str, int], run_id: str):
        self.processes = processes  # name -> pid
        # RabbitMQ is one process for every user of the machine; of Postgres only the
        # backends of this run's databases (``t<run_id>_*``) and the writers are counted.
        self.markers = {"rabbitmq": (), "postgres": (f"t{run_id}_", *POSTGRES_SHARED)}
        self.samples: dict[str, dict] = {}

    def take(self, phase: str) -> dict:
        sample: dict = {"t": time.monotonic(), "machine": vars(procstat.machine_cpu())}
        for name, pid in self.processes.items():
            try:
                sample[name] = {"cpu_s": procstat.cpu_seconds(pid), **procstat.memory_kb(pid)}
            except (FileNotFoundError, ProcessLookupError):
                sample[name] = None
        for name, (command, main_marker) in SERVERS.items():
            sample[name] = {"cpu_s": procstat.cpu_seconds_by_command(command,
                                                                     self.markers[name]),
                            "pids": sorted(procstat.server_pids(command, main_marker))}
        self.samples[phase] = sample
        return sample

    def memory(self, connections: int) -> dict:
        before = (self.samples.get("sessions") or {}).get("gateway") or {}
        idle = (self.samples.get("connected_idle") or {}).get("gateway") or {}
        last = max((s.get("gateway") or {} for s in self.samples.values()),
                   key=lambda g: g.get("VmHWM", 0), default={})
        if not before or not idle:
            return {}
        per = (idle["VmRSS"] - before["VmRSS"]) / connections if connections else None
        return {"gateway_rss_before_connections_kb": before["VmRSS"],
                "gateway_rss_connections_idle_kb": idle["VmRSS"],
                "connections": connections,
                "kb_per_idle_connection": round(per, 2) if per is not None else None,
                "gateway_peak_rss_kb": last.get("VmHWM")}

    def restarted(self) -> list[str]:
        """Backing servers whose main process changed during the run (someone restarted
        them: every number of this run is then suspect)."""
        phases = list(self.samples.values())
        return [name for name in SERVERS
                if phases and phases[0][name]["pids"] != phases[-1][name]["pids"]]

    def cpu(self, start: str, end: str) -> dict:
        a, b = self.samples.get(start), self.samples.get(end)
        if not a or not b:
            return {}
        wall = b["t"] - a["t"]
        out: dict = {"wall_s": round(wall, 2)}
        for name in [*self.processes, *SERVERS]:
            if a.get(name) and b.get(name):
                out[f"{name}_pct"] = round(100 * (b[name]["cpu_s"] - a[name]["cpu_s"]) / wall, 1)
        busy = b["machine"]["busy_s"] - a["machine"]["busy_s"]
        total = b["machine"]["total_s"] - a["machine"]["total_s"]
        out["machine_busy_pct_of_all_cores"] = round(100 * busy / total, 1) if total else None
        out["cores"] = os.cpu_count()
        # What the machine did besides these processes: interrupts (the loopback network),
        # the hypervisor, and other work on a shared machine.
        ours = sum(v for k, v in out.items() if k.endswith("_pct"))
        for key in ("softirq_s", "steal_s"):
            out[f"{key[:-2]}_pct"] = round(100 * (b["machine"][key] - a["machine"][key]) / wall, 1)
        if total:
            out["other_pct"] = round(100 * busy / wall - ours - out["softirq_pct"]
                                     - out["steal_pct"], 1)
        return out


async def scrape_all(stack: Stack) -> dict[str, tuple[float, dict | None]]:
    names = [p.name for p in stack.processes]
    pages = await asyncio.gather(*(promscrape.scrape(p.ops_url) for p in stack.processes))
    now = time.monotonic()
    return {name: (now, page) for name, page in zip(names, pages, strict=True)}


def metrics_window(before: dict, after: dict) -> dict:
    return {name: promscrape.window(page, after[name][1], after[name][0] - at)
            for name, (at, page) in before.items() if name in after}


async def run_loadgen(args: argparse.Namespace, stack: Stack, outdir: Path
                      ) -> tuple[dict, Sampler, dict, dict]:
    """Run the load generator process; sample /proc (and /metrics) at its phases."""
    result_path = outdir / "loadgen.json"
    idle = bool(args.idle_connections)
    connections = args.idle_connections or args.connections
    cmd = [sys.executable, "-m", "tests.load.loadgen", "--url", stack.url, "--control",
           "--result", str(result_path), "--connections", str(connections),
           "--rate", str(args.rate), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--drain", str(args.drain),
           "--open-concurrency", str(args.open_concurrency)]
    if args.participants:
        cmd += ["--participants", str(args.participants)]
    if idle:
        cmd.append("--idle")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_JWT_SECRET"] = JWT_SECRET
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env,
                                                stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    sampler = Sampler({p.name: p.proc.pid for p in stack.processes} | {"loadgen": proc.pid},
                      stack.backends.run_id)
    sampler.take("start")
    profiles: dict[str, tuple] = {}
    scraped: dict[str, dict] = {}
    budget = 120 + connections * 0.05 + (0 if idle else args.warmup + args.duration + args.drain)
    try:
        async with asyncio.timeout(budget):
            async for line in proc.stdout:
                event = orjson.loads(line)
                phase = event.get("name", "?")
                sampler.take(phase)
                extra = {k: v for k, v in event.items() if k not in ("event", "name", "t")}
                log(f"phase {phase} {extra or ''}")
                if phase == "connected":
                    await asyncio.sleep(IDLE_SETTLE_S)
                    sampler.take("connected_idle")
                    scraped["connected"] = await scrape_all(stack)
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                elif phase in ("window_start", "window_end"):
                    scraped[phase] = await scrape_all(stack)
                if phase == "window_start" and args.profile:
                    for name, pid in sampler.processes.items():
                        out = outdir / f"profile-{name}.txt"
                        started = await profiling.record(pid, args.duration, out)
                        if started is not None:
                            profiles[name] = (started, out)
            await proc.wait()
    except TimeoutError:
        log(f"the load generator ran past its time budget ({budget:.0f}s): killing it")
        raise
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    summaries = {}
    for name, (spy, out) in profiles.items():
        _, err = await spy.communicate()
        summaries[name] = (profiling.summarize(out) if out.exists()
                           else {"error": err.decode(errors="replace")[-500:]})
    if not result_path.exists():
        raise RuntimeError(f"the load generator exited with {proc.returncode} and no result")
    counters = (metrics_window(scraped["window_start"], scraped["window_end"])
                if "window_start" in scraped and "window_end" in scraped else {})
    result = orjson.loads(result_path.read_bytes())
    result["setup"]["presence_join_state"] = join_state(scraped.get("connected"))
    return result, sampler, summaries, counters


def join_state(scraped: dict | None) -> dict[str, int]:
    """How the gateway's ``joined`` frames got presence's answer (who is online) by the time
    every connection had joined: late answers followed as ``online_users`` frames."""
    page = (scraped or {}).get("gateway", (0, None))[1] or {}
    prefix = "chat_gateway_presence_join_state_total{"
    return {name[len(prefix):-1].split('"')[1]: int(value) for name, value in page.items()
            if name.startswith(prefix)}


def log_findings(stack: Stack) -> dict:
    """Warning and error lines of the service logs (they log at warning level in the bench)."""
    found = {}
    for process in stack.processes:
        try:
            lines = process.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        found[process.name] = {"log": str(process.log_path), "lines": len(lines),
                               "last": lines[-8:]}
    return found


async def forget_presence_keys(redis_url: str, prefix: str) -> None:
    """The presence service of this run kept its keys under ``prefix`` in the shared Redis."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start:start + 1000])
    finally:
        await client.aclose()


def code_version() -> dict:
    """The commit measured, and the files that differ from it (numbers belong to code)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no",
                                        "--", "services", "shared").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_service_files": changed}


async def machine_busy_pct(seconds: float = 2.0) -> float:
    """How busy the machine is before the bench starts: other work skews every number."""
    before = procstat.machine_cpu()
    await asyncio.sleep(seconds)
    after = procstat.machine_cpu()
    total = after.total_s - before.total_s
    return round(100 * (after.busy_s - before.busy_s) / total, 1) if total else 0.0


async def bench(args: argparse.Namespace) -> dict:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    busy = await machine_busy_pct()
    if busy > 20:
        log(f"WARNING: the machine is already {busy}% busy (of all cores) before the bench; "
            "its numbers will be lower than on a quiet machine")
    outdir = ROOT / "var" / "bench" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    fd_limit = procstat.raise_fd_limit()  # the services and the generator inherit it
    backends = local_servers()
    backends.run_id = f"bench{backends.run_id}"
    await asyncio.to_thread(create_vhost, backends)
    stack = Stack(backends, outdir)
    connections = args.idle_connections or args.connections
    limits = {} if args.idle_connections else rate_limits(args.rate / connections)
    quiet = {"CHAT_LOG_LEVEL": "warning", **args.settings}
    report: dict = {"stamp": stamp, "args": vars(args), "fd_limit": fd_limit,
                    "machine_busy_before_pct": busy, "code": code_version(),
                    "gateway_overrides": limits, "settings": args.settings,
                    "vhost": backends.vhost}
    try:
        log(f"starting {', '.join(args.services)} and the gateway (logs in {outdir})")
        for name in args.services:
            await stack.start_service(name, **quiet)
        await stack.start_gateway(**{**limits, **quiet})
        log("running: " + ", ".join(f"{p.name} pid {p.proc.pid}" for p in stack.processes)
            + f"; gateway at {stack.url}")
        result, sampler, profiles, counters = await run_loadgen(args, stack, outdir)
        report["metrics_window"] = counters
        report["loadgen"] = result
        report["memory"] = sampler.memory(result.get("setup", {}).get("connected", 0))
        report["cpu_window"] = sampler.cpu("window_start", "window_end")
        report["cpu_connect"] = sampler.cpu("sessions", "connected")
        report["samples"] = sampler.samples
        report["backing_restarted"] = sampler.restarted()
        if report["backing_restarted"]:
            log(f"WARNING: {report['backing_restarted']} restarted during the run")
        report["profiles"] = profiles
    finally:
        log("stopping the services")
        codes = {p.name: await p.stop() for p in reversed(stack.processes)}
        report["exit_codes"] = codes
        report["service_logs"] = log_findings(stack)
        try:
            await drop_databases(backends)
            if "presence" in args.services:
                await forget_presence_keys(backends.redis_url, stack.presence_prefix)
        finally:
            await asyncio.to_thread(delete_vhost, backends)
    report["ok"] = bool(report["loadgen"]["ok"]) and all(c == 0 for c in codes.values())
    return report


def write(report: dict, out: str | None) -> Path:
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    path = Path(out) if out else ROOT / "var" / "bench" / f"bench-{report['stamp']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if not out:
        (ROOT / "var" / "bench" / "latest.json").write_bytes(data)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.load.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000,
                        help="WebSockets, one user each (default 1000)")
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="messages/s in total, spread evenly over users (default 5000)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds sent before the measured window (default 3)")
    parser.add_argument("--participants", type=int, choices=[2, 3], default=None,
                        help="users per session (default: a mix of 2 and 3)")
    parser.add_argument("--idle-connections", type=int, default=0, metavar="N",
                        help="memory only: open N connections, join, measure, send nothing")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="max seconds to wait for owed deliveries after sending (default 10)")
    parser.add_argument("--open-concurrency", type=int, default=100,
                        help="WebSocket handshakes in flight at once (default 100)")
    parser.add_argument("--services", default="messaging,presence",
                        help="services to run besides the gateway, comma-separated, from "
                             f"{', '.join(SERVICES)} (default messaging,presence)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the services and the generator in the window (costs CPU)")
    parser.add_argument("--set", action="append", default=[], metavar="CHAT_NAME=VALUE",
                        help="a setting for every service of the run (repeatable), e.g. "
                             "--set CHAT_COALESCE_WINDOW_MS=4")
    parser.add_argument("--out", help="JSON file (default var/bench/bench-<stamp>.json and "
                                      "var/bench/latest.json)")
    args = parser.parse_args(argv)
    args.settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("CHAT_"):
            parser.error(f"--set {item!r}: expected CHAT_NAME=VALUE")
        args.settings[name] = value
    args.services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown or "messaging" not in args.services:
        parser.error(f"--services: messaging and any of {', '.join(SERVICES)}")
    limits = {"--connections": (args.connections, 2, 20000),
              "--rate": (args.rate, 1, 100000), "--duration": (args.duration, 1, 600),
              "--warmup": (args.warmup, 0, 120), "--drain": (args.drain, 0, 120),
              "--open-concurrency": (args.open_concurrency, 1, 1000)}
    if args.idle_connections:
        limits["--idle-connections"] = (args.idle_connections, 2, 20000)
    for name, (value, low, high) in limits.items():
        if not low <= value <= high:
            parser.error(f"{name} must be within {low}..{high}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = asyncio.run(bench(args))
    except KeyboardInterrupt:
        log("interrupted; services stopped and vhost/database removed")
        raise SystemExit(130) from None
    path = write(report, args.out)
    print(render(report))
    print(f"\nJSON: {path}")
    raise SystemExit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
