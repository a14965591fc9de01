"""Request coalescing (``shared.requests``) over a hand-written publish."""

from __future__ import annotations

import orjson

from shared.requests import Requests

from ..support.requests import Published, published


async def test_a_caller_whose_answer_raises_does_not_keep_its_batch_in_flight():
    """With one batch allowed in flight and a long coalescing window, a request leaves at
    once only if the batch before it was let go: a raising callback must not hold it."""
    port = Published()
    requests = Requests(port, rpc_timeout_s=5, coalesce_window_s=60, max_request_batch=256,
                        max_in_flight=1)

    def broken(_reply):
        raise RuntimeError("a caller's bug")

    answers = []
    requests.submit({"n": 1}, broken, "svc.cmd")
    await published(port, 1)
    requests.on_reply(port.batches[0][0], orjson.dumps([{"ok": True, "result": 1}]))
    requests.submit({"n": 2}, answers.append, "svc.cmd")
    await published(port, 2)
    requests.on_reply(port.batches[1][0], orjson.dumps([{"ok": True, "result": 2}]))
    assert answers == [{"ok": True, "result": 2}]
