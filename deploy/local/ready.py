"""Wait until every process of the local stack answers, then print where the chat is.

Run by the launcher as one more supervised process (so the launcher itself stays a plain honcho
loop)::

    python -m deploy.local.ready --gateway http://127.0.0.1:8080 messaging=http://127.0.0.1:8081/readyz

A ``NAME=URL`` is ready when the URL answers 200; for ``s3`` any HTTP answer will do (anonymous
requests get 403). After printing, it sleeps until the launcher stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.error
import urllib.request

STILL_WAITING_AFTER_S = 60.0


def answers(name: str, url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except urllib.error.HTTPError as exc:
        return name == "s3" and exc.code < 500
    except (OSError, ValueError):
        return False


def banner(gateway: str | None, targets: dict[str, str]) -> str:
    if gateway:
        head = f"chat is up: {gateway}   (Ctrl-C stops everything)"
    else:
        head = "chat services are up, without a gateway (services/gateway is missing)"
    lines = [head] + [f"  {name:<10} {url}" for name, url in targets.items()]
    rule = "=" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", help="the gateway's base URL, printed once all is ready")
    parser.add_argument("targets", nargs="*", metavar="NAME=URL")
    args = parser.parse_args(argv)
    targets = dict(t.split("=", 1) for t in args.targets)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    started, warned = time.monotonic(), False
    pending = dict(targets)
    while pending:
        pending = {name: url for name, url in pending.items() if not answers(name, url)}
        if pending and not warned and time.monotonic() - started > STILL_WAITING_AFTER_S:
            print("still waiting for: " + ", ".join(f"{n} ({u})" for n, u in pending.items()),
                  flush=True)
            warned = True
        if pending:
            time.sleep(0.5)
    print(banner(args.gateway, targets), flush=True)
    while True:  # stay up: honcho stops the whole stack when any process ends
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
