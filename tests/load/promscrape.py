"""The services' own counters over the measured window, from their ``/metrics``.

They tell what the CPU numbers cannot: how many AMQP messages each hop published and consumed
(so how well the batching of ARCHITECTURE "Throughput" works: chat messages per AMQP message),
the batch sizes the consumers handled, and the requests that failed with 503 and why.
"""

from __future__ import annotations

import aiohttp

COUNTERS = ("chat_broker_published_messages_total", "chat_broker_consumed_messages_total",
            "chat_broker_publish_failures_total", "chat_rpc_failures_total",
            "chat_envelopes_handled_total", "chat_batch_envelopes_sum",
            "chat_batch_envelopes_count", "chat_rpc_seconds_sum", "chat_rpc_seconds_count",
            "chat_batch_handler_seconds_sum", "chat_batch_handler_seconds_count",
            "chat_optimistic_writes_total")


async def scrape(url: str, timeout_s: float = 10.0) -> dict[str, float] | None:
    """Every sample of a Prometheus text page (``name{labels}`` -> value); None if it does not
    answer in time (an overloaded service may not)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def window(before: dict[str, float] | None, after: dict[str, float] | None,
           seconds: float) -> dict:
    """Counter increases between two scrapes (per second too), and the mean batch size."""
    if not before or not after or seconds <= 0:
        return {"no_answer_at": [phase for phase, page in (("start", before), ("end", after))
                                 if not page]}
    grown = {name: after[name] - before.get(name, 0.0) for name in after
             if name.startswith(COUNTERS) and after[name] - before.get(name, 0.0) > 0}
    out: dict = {"increase": grown,
                 "per_s": {name: round(value / seconds, 1) for name, value in grown.items()
                           if not name.startswith(("chat_batch", "chat_rpc_seconds"))}}
    means = (("chat_batch_envelopes_sum", "mean_batch", 1),
             ("chat_batch_handler_seconds_sum", "mean_handler_ms", 1000),
             ("chat_rpc_seconds_sum", "mean_rpc_ms", 1000))
    for name, total in grown.items():
        for prefix, key, scale in means:
            if name.startswith(prefix):
                count = grown.get(name.replace("_sum", "_count", 1), 0)
                if count:
                    out.setdefault(key, {})[name[len(prefix):]] = round(scale * total / count, 1)
    return out
