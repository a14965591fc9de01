"""Protocol-level keep-alive (SPEC: "no answer to the server's protocol-level pings (closed)")
against a real gateway with a one-second heartbeat."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

pytestmark = pytest.mark.e2e


async def test_a_client_that_answers_no_ping_is_cut_off_and_one_that_answers_stays(
        isolated_stack, http):
    stack = await isolated_stack()
    await stack.start_service("messaging")
    await stack.start_gateway(CHAT_WS_HEARTBEAT_S="1")
    silent = await http.ws_connect(stack.ws_url, autoping=False, headers={
        "Authorization": f"Bearer {stack.token('silent-user')}"})
    lively = await http.ws_connect(stack.ws_url, autoping=True, headers={
        "Authorization": f"Bearer {stack.token('lively-user')}"})
    assert orjson.loads((await silent.receive()).data)["type"] == "hello"
    assert orjson.loads((await lively.receive()).data)["type"] == "hello"
    lively_frames: list = []

    async def read_lively():  # reading is what lets aiohttp answer the pings
        async for msg in lively:
            lively_frames.append(msg)

    reader = asyncio.create_task(read_lively())
    try:
        # A client's own ping is answered with its payload.
        await silent.ping(b"are you there")
        msg = await asyncio.wait_for(silent.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are you there"
        # Then it stays silent: a ping comes, goes unanswered, and the socket is closed.
        seen = []
        async with asyncio.timeout(6):
            while True:
                msg = await silent.receive()
                seen.append(msg.type)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING):
                    break
        assert aiohttp.WSMsgType.PING in seen
        # The client that answered every ping is still there and served.
        assert not lively.closed
        await lively.send_str(orjson.dumps({"type": "ping", "ref": "p"}).decode())
        async with asyncio.timeout(5):
            while not any(m.type == aiohttp.WSMsgType.TEXT
                          and orjson.loads(m.data).get("type") == "pong" for m in lively_frames):
                await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await silent.close()
        await lively.close()


async def test_a_gateway_told_to_stop_tells_its_clients_to_reconnect(isolated_stack, http):
    """SIGTERM: the client gets a close frame with 1012 (service restart: reconnect, resume
    from the last seq), and the gateway exits cleanly; not a dropped socket (1006)."""
    stack = await isolated_stack()
    await stack.start_service("messaging")
    gateway = await stack.start_gateway()
    ws = await http.ws_connect(stack.ws_url, headers={
        "Authorization": f"Bearer {stack.token('restarting-user')}"})
    assert orjson.loads((await ws.receive()).data)["type"] == "hello"
    stopping = asyncio.create_task(gateway.stop())
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1012, (msg.type, msg.data)
    assert await stopping == 0
    await ws.close()
