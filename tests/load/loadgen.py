"""The load generator: many chat users over real WebSockets, in one process of its own.

``python -m tests.load.loadgen --url http://127.0.0.1:PORT ...`` (the JWT secret comes from
``CHAT_JWT_SECRET``; ``tests.load.bench`` starts the stack and runs this for you).

1. Splits the connections into sessions of 2 or 3 users (each connection a distinct user) and
   creates them over HTTP with aiohttp (the first user creates it, naming the others).
2. Opens one WebSocket per user (at most ``--open-concurrency`` handshakes at a time), waits for
   ``hello``, joins the user's session and waits for the ack and ``joined``.
3. Sends ``send_message`` frames at a fixed aggregate rate, spread evenly over every user, for
   warm-up + duration seconds. The schedule is open loop: send k is due at ``t0 + k/rate``
   whatever happened to earlier sends; one scheduler coroutine wakes every 2 ms and
   writes every frame that is due (``send_lag_ms`` tells how late they went out).
4. Waits (at most ``--drain`` s) for the acks and deliveries still owed, then closes.

The WebSockets are picows clients, not aiohttp's: the generator shares the machine's cores with
the stack it measures, so every microsecond it spends per frame is taken from the gateway and
the services. picows parses frames in Cython and calls ``Client.on_ws_frame`` from the socket's
read callback (no task and no coroutine step per received frame), and a send is a plain write
into the transport, no await. It answers pings itself; close frames and fragmented messages are
handled in ``Client.on_rare_frame``.

Every frame is recorded by ``tally.Tally`` (read it for what is checked and measured). The
result is one JSON object on stdout, or in ``--result``. With ``--control`` the process also
prints one JSON line per phase on stdout and, once every connection has joined, waits for a line
on stdin before it sends: the orchestrator measures the gateway's memory at that point.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import aiohttp
import orjson
import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from services.gateway.auth import mint_token

from .procstat import raise_fd_limit
from .tally import NS, Peer, Tally, percentiles_ms

now_ns = time.monotonic_ns
# The scheduler wakes at most this often and sends every frame that is due. Each wake-up of
# this process costs about 120 us of CPU on the small machine it shares with the stack: 2 ms
# keeps that to 6% of a core, and a send is at most that late (``send_lag_ms``; latency is
# measured from the moment a frame actually went out).
TICK_S = 0.002
# The largest frame accepted: far above the gateway's biggest (``joined`` with its backlog, tens
# of KB), so a limit hit is a finding of its own (picows closes with 1009), not a routine event.
MAX_FRAME_BYTES = 16 * 1024 * 1024
TEXT, CONTINUATION = WSMsgType.TEXT, WSMsgType.CONTINUATION
CLOSE, PONG = WSMsgType.CLOSE, WSMsgType.PONG
ABNORMAL_CLOSURE = int(WSCloseCode.ABNORMAL_CLOSURE)


def log(text: str) -> None:
    print(f"[loadgen] {text}", file=sys.stderr, flush=True)


def group_sizes(connections: int, participants: int | None) -> list[int]:
    """Session sizes adding up to ``connections``: all ``participants`` (2 or 3) where the count
    allows, else a few of the other size; ``None`` mixes 2 and 3 about equally."""
    if connections < 2:
        raise ValueError("at least 2 connections are needed")
    if participants == 2:
        threes, twos = connections % 2, connections // 2 - (connections % 2)
    elif participants == 3:
        threes, rest = divmod(connections, 3)
        twos = {0: 0, 1: 2, 2: 1}[rest]
        threes -= 1 if rest == 1 else 0
    else:
        base, rest = divmod(connections, 5)
        threes, twos = {0: (base, base), 1: (base - 1, base + 2), 2: (base, base + 1),
                        3: (base + 1, base), 4: (base, base + 2)}[rest]
    sizes = []
    while twos or threes:  # interleave so both sizes are spread over the connection range
        if twos:
            sizes.append(2)
            twos -= 1
        if threes:
            sizes.append(3)
            threes -= 1
    assert sum(sizes) == connections, (sizes, connections)
    return sizes


class Phases:
    """``--control``: phase lines on stdout for the orchestrator, and a wait for its go."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def mark(self, name: str, **extra) -> None:
        if self.enabled:
            line = orjson.dumps({"event": "phase", "name": name, "t": time.time(), **extra})
            sys.stdout.buffer.write(line + b"\n")
            sys.stdout.flush()

    async def wait_go(self) -> None:
        if self.enabled:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


class Client(WSListener):
    """One user's WebSocket, and the picows listener of it: picows calls ``on_ws_frame`` from
    the socket's read callback, so each received frame costs one Python call, no task and no
    coroutine step; ``on_text`` turns it into a ``Tally`` event."""

    __slots__ = ("peer", "token", "session_id", "transport", "hello", "joined", "closed",
                 "stopping", "close_code", "tally", "fragments")

    def __init__(self, peer: Peer, token: str, tally: Tally):
        self.peer = peer
        self.token = token
        self.session_id = ""
        self.transport: WSTransport | None = None
        loop = asyncio.get_running_loop()
        self.hello = loop.create_future()
        self.joined = loop.create_future()
        for fut in (self.hello, self.joined):  # a failure nobody awaits any more is fine
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed = False
        self.stopping = False  # we close it: how it ends is no finding
        self.close_code: int | None = None  # from the first close frame received
        self.tally = tally
        self.fragments: list[bytes] | None = None  # a text message still arriving in pieces

    async def open(self, ws_url: str, limit_s: float) -> None:
        """Handshake, ``hello``, ``join_session``, its ack and ``joined``, within ``limit_s``."""
        async with asyncio.timeout(limit_s):
            # picows's own handshake timeout (5 s by default) would be tighter than ours while
            # hundreds of handshakes queue at the gateway; it also closes the socket on expiry.
            # uvloop's own TCP transport rather than aiofastnet's (picows's default when
            # installed): measured no slower per frame here, and the one the loop is built on.
            await ws_connect(lambda: self, ws_url,
                             extra_headers={"Authorization": f"Bearer {self.token}"},
                             websocket_handshake_timeout=limit_s, enable_auto_pong=True,
                             max_frame_size=MAX_FRAME_BYTES, use_aiofastnet=False)
            await asyncio.shield(self.hello)
            self.send(orjson.dumps({"type": "join_session", "ref": "join",
                                    "session_id": self.session_id}))
            await asyncio.shield(self.joined)

    def send(self, payload: bytes) -> None:
        """One text frame, written now (picows buffers it in the transport, no await)."""
        self.transport.send(TEXT, payload)

    async def close(self, limit_s: float) -> None:
        """Our close frame, then wait for the gateway's (``on_rare_frame`` ends the socket)."""
        self.closed = self.stopping = True
        transport = self.transport
        try:
            transport.send_close(WSCloseCode.OK)
            await asyncio.wait_for(transport.wait_disconnected(), limit_s)
        except Exception:  # it is going either way: a late or failed close is no finding
            pass
        transport.disconnect()

    # ---- picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        # Before ``ws_connect`` returns: ``hello`` may come in the same read as the 101.
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The frame points into picows's read buffer: copy the payload out before returning.
        if frame.fin and frame.msg_type is TEXT and self.fragments is None:
            self.on_text(frame.get_payload_as_bytes())
        else:
            self.on_rare_frame(transport, frame)

    def on_rare_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Close, the pieces of a fragmented message, pongs and anything unexpected (pings
        never get here: picows answers them itself, ``enable_auto_pong``)."""
        kind = frame.msg_type
        if kind is CLOSE:
            self.on_close(transport, int(frame.get_close_code()))
        elif kind is TEXT and self.fragments is None:
            self.fragments = [frame.get_payload_as_bytes()]
        elif kind is CONTINUATION and self.fragments is not None:
            self.fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload, self.fragments = b"".join(self.fragments), None
                self.on_text(payload)
        elif kind is not PONG:  # binary, or a fragment out of turn: not as the SPEC says
            self.fragments = None
            self.tally.error("bad_frame", {"error": f"unexpected {frame}",
                                           "frame": frame.get_payload_as_bytes()[:300]
                                           .decode(errors="replace")})

    def on_close(self, transport: WSTransport, code: int) -> None:
        """The gateway's close frame (or its answer to ours): answer it and end the socket.
        picows leaves both to us."""
        self.closed = True
        if self.close_code is None:
            self.close_code = code
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)  # as aiohttp's client answers any close
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        # No close frame: the socket just ended (1006, "abnormal closure", as RFC 6455 says).
        code = self.close_code if self.close_code is not None else ABNORMAL_CLOSURE
        if not self.stopping:
            self.tally.error(f"closed:{code}", {"user": self.peer.user_id, "close_code": code})
        for fut in (self.hello, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"socket closed ({code})"))

    def on_text(self, payload: bytes) -> None:
        try:
            self.on_frame(orjson.loads(payload))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # A frame not as the SPEC says is a finding, not the end of the connection.
            self.tally.error("bad_frame", {"error": repr(exc),
                                           "frame": payload[:300].decode(errors="replace")})

    def on_frame(self, frame: dict) -> None:
        tally, kind = self.tally, frame.get("type")
        if kind == "new_message":
            now = now_ns()
            message = frame["message"]
            body = message["body"]
            sent = int(body[2:body.index(" ", 2)])  # "t=<ns> c=<k>"
            tally.message(self.peer, frame["seq"], int(message["client_msg_id"]), sent, now)
        elif kind == "ack":
            ref = frame.get("ref")
            if ref != "join":  # a join's ack is followed by ``joined``
                tally.ack(int(ref), now_ns())
        elif kind == "error":
            ref = frame.get("ref")
            k = int(ref) if ref and ref.isdigit() and int(ref) < len(tally.ack_ns) else None
            tally.error(frame.get("code", "?"), frame, k)
            if ref == "join" and not self.joined.done():
                self.joined.set_exception(RuntimeError(f"join refused: {frame}"))
        else:
            tally.frames[kind] += 1
            if kind == "notification":
                tally.notification(self.peer, frame, frame.get("session_id") == self.session_id)
            elif kind == "joined":
                self.peer.last_seq = frame["last_seq"]
                if not self.joined.done():
                    self.joined.set_result(None)
            elif kind == "hello" and not self.hello.done():
                self.hello.set_result(None)


# ---- phases ------------------------------------------------------------------------------------

async def create_sessions(http: aiohttp.ClientSession, url: str, clients: list[Client],
                          members: list[list[int]], concurrency: int, tally: Tally
                          ) -> list[bool]:
    """One HTTP POST per session by its first member; returns which sessions exist."""
    gate = asyncio.Semaphore(concurrency)

    async def create(group: list[int]) -> bool:
        owner = clients[group[0]]
        body = {"participant_ids": [clients[i].peer.user_id for i in group[1:]],
                "title": "bench"}
        async with gate:
            for attempt in range(5):
                try:
                    async with http.post(f"{url}/api/chat/sessions", data=orjson.dumps(body),
                                         headers={"Authorization": f"Bearer {owner.token}",
                                                  "Content-Type": "application/json"}) as resp:
                        raw = await resp.read()
                        if resp.status == 201:
                            session_id = orjson.loads(raw)["id"]
                            for i in group:
                                clients[i].session_id = session_id
                            return True
                        code = f"create_session:{resp.status}"
                        detail = {"status": resp.status, "body": raw[:300].decode(errors="replace")}
                except (aiohttp.ClientError, TimeoutError) as exc:
                    code, detail = "create_session:exception", {"error": repr(exc)}
                tally.error(code, detail)
                if code not in ("create_session:503", "create_session:429",
                                "create_session:exception"):
                    return False
                await asyncio.sleep(0.5 * (attempt + 1))
            return False

    return list(await asyncio.gather(*(create(g) for g in members)))


async def open_all(ws_url: str, clients: list[Client], concurrency: int, tally: Tally
                   ) -> list[int]:
    """Open and join every connection; returns the join latencies (ns) of those that made it."""
    gate = asyncio.Semaphore(concurrency)
    took: list[int] = []

    async def one(client: Client) -> None:
        async with gate:
            started = now_ns()
            try:
                await client.open(ws_url, limit_s=30)
                took.append(now_ns() - started)
            except Exception as exc:
                client.closed = True
                tally.error(f"connect:{type(exc).__name__}",
                            {"user": client.peer.user_id, "error": repr(exc)[:300]})

    await asyncio.gather(*(one(c) for c in clients if c.session_id))
    return took


async def send_all(clients: list[Client], tally: Tally, rate: float, warmup: float,
                   duration: float, phases: Phases) -> float:
    """The open-loop schedule: send k is due at ``t0 + k / rate``; ``tally.sender[k]`` sends
    it. Returns t0 (ns)."""
    total, interval = len(tally.sender), NS / rate
    t0 = now_ns() + NS // 5
    tally.window_start = t0 + int(warmup * NS)
    tally.window_end = tally.window_start + int(duration * NS)
    marks = [(tally.window_start, "window_start"), (tally.window_end, "window_end")]
    sessions = [c.session_id for c in clients]
    sender, send_ns, lag = tally.sender, tally.send_ns, tally.send_lag
    phases.mark("sending", total=total)
    k = 0
    while k < total:
        now = now_ns()
        while marks and marks[0][0] <= now:
            phases.mark(marks.pop(0)[1])
        due = min(total, int((now - t0) / interval) + 1) if now >= t0 else 0
        while k < due:
            client = clients[sender[k]]
            if client.closed:
                tally.error("send_on_closed")
            else:
                at = now_ns()
                lag.append(at - (t0 + int(k * interval)))
                send_ns[k] = at
                tally.sent += 1
                try:
                    client.send(
                        f'{{"type":"send_message","session_id":"{sessions[sender[k]]}",'
                        f'"client_msg_id":"{k}","body":"t={at} c={k}","ref":"{k}"}}'.encode())
                except (ConnectionError, RuntimeError) as exc:
                    tally.error("send_failed", {"error": repr(exc)[:200]}, k)
            k += 1
        # At least a tick: shorter timers round to 0 ms in uvloop and the loop would spin.
        await asyncio.sleep(max(TICK_S, (t0 + k * interval - now_ns()) / NS))
    while marks:  # the window ends after the last send is due
        await asyncio.sleep(max(0.0, (marks[0][0] - now_ns()) / NS))
        phases.mark(marks.pop(0)[1])
    return t0


async def drain(tally: Tally, limit_s: float) -> float:
    """Wait until nothing more is owed, at most ``limit_s``; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if not tally.outstanding():
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def close_all(clients: list[Client], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        if client.transport is None:
            return  # never connected
        # Ours to end from now on, also while it waits for the gate: how it ends is no finding.
        client.closed = client.stopping = True
        async with gate:
            await client.close(limit_s=5)

    await asyncio.gather(*(one(c) for c in clients))


# ---- the run -----------------------------------------------------------------------------------

async def run(args: argparse.Namespace) -> dict:
    secret = os.environ.get("CHAT_JWT_SECRET")
    if not secret:
        raise SystemExit("CHAT_JWT_SECRET must hold the gateway's JWT secret")
    phases = Phases(args.control)
    url = args.url.rstrip("/")
    ws_url = url.replace("http", "ws", 1) + "/ws"
    run_id = args.run_id or uuid.uuid4().hex[:8]

    sizes = group_sizes(args.connections, args.participants)
    peers: list[Peer] = []
    members: list[list[int]] = []
    for session, size in enumerate(sizes):
        first = len(peers)
        members.append(list(range(first, first + size)))
        for idx in range(first, first + size):
            peers.append(Peer(idx, f"bench-{run_id}-{idx}", session))
    assert len({p.user_id for p in peers}) == len(peers), "every connection is its own user"
    tally = Tally(peers, members)
    clients = [Client(p, mint_token(secret, p.user_id, "client", ttl_s=3600 * 3), tally)
               for p in peers]
    result: dict = {"config": {
        "connections": args.connections, "sessions": len(sizes),
        "sessions_of_2": sizes.count(2), "sessions_of_3": sizes.count(3),
        "rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
        "idle": args.idle, "url": url, "run_id": run_id}}

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        t = time.monotonic()
        created = await create_sessions(http, url, clients, members, args.open_concurrency // 2
                                        or 1, tally)
        result["setup"] = {"sessions_created": sum(created),
                           "sessions_s": round(time.monotonic() - t, 2)}
        phases.mark("sessions", created=sum(created))

        t = time.monotonic()
        join_ns = await open_all(ws_url, clients, args.open_concurrency, tally)
        open_s = time.monotonic() - t
        result["setup"] |= {"connected": len(join_ns), "connect_s": round(open_s, 2),
                            "connects_per_s": round(len(join_ns) / open_s, 1) if open_s else 0,
                            "join_ms": percentiles_ms(join_ns)}
        log(f"{len(join_ns)}/{len(clients)} connections joined in {open_s:.1f}s")
        phases.mark("connected", connected=len(join_ns))
        await phases.wait_go()

        if not args.idle:
            # Sessions with a member missing take no part: their deliveries could not all land.
            complete = [s for s, group in enumerate(members)
                        if all(not clients[i].closed for i in group)]
            senders = [i for s in complete for i in members[s]]
            senders.sort()
            total = int(args.rate * (args.warmup + args.duration))
            tally.plan([senders[k % len(senders)] for k in range(total)] if senders else [])
            result["config"]["senders"] = len(senders)
            result["config"]["per_sender_rate"] = round(args.rate / max(1, len(senders)), 3)
            if senders:
                await send_all(clients, tally, args.rate, args.warmup, args.duration, phases)
                log(f"sent {tally.sent}; draining")
                result["drain_s"] = round(await drain(tally, args.drain), 2)
                phases.mark("drained")
        await close_all(clients, args.open_concurrency)
    phases.mark("closed")
    result |= tally.report(args.duration if not args.idle else 0)
    result["ok"] = _ok(result, args)
    return result


def _ok(result: dict, args: argparse.Namespace) -> bool:
    failed_setup = (result["setup"]["connected"] != args.connections
                    or result["setup"]["sessions_created"] != result["config"]["sessions"])
    if args.idle:
        return not failed_setup and not result["errors_by_code"]
    return (not failed_setup and result["acked"] == result["sent"] > 0
            and not result["errors_by_code"] and result["missing"] == 0
            and result["duplicates"] == 0 and result["out_of_order"] == 0
            and not result["unexpected_notifications"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.load.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000.0, help="messages/s in total")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds sent, not measured")
    parser.add_argument("--participants", type=int, choices=[2, 3], default=None,
                        help="users per session (default: a mix of 2 and 3)")
    parser.add_argument("--idle", action="store_true", help="connect and join, send nothing")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for owed acks and deliveries after the last send")
    parser.add_argument("--open-concurrency", type=int, default=100)
    parser.add_argument("--run-id", default="", help="part of every user id (default: random)")
    parser.add_argument("--control", action="store_true",
                        help="phase lines on stdout; wait for a stdin line before sending")
    parser.add_argument("--result", default="", help="write the result JSON here, not stdout")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rate and --duration must be positive, --warmup not negative")
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("the load generator only talks to a loopback address")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_fd_limit()
    result = uvloop.run(run(args))
    data = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.result:
        with open(args.result, "wb") as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data + b"\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
