"""The gateway's join-time presence answer: on time, late, or never (a hand-written broker)."""

from __future__ import annotations

import asyncio

from services.gateway.auth import Principal
from services.gateway.connection import Connection, SessionView
from services.gateway.presence import PresenceLink
from services.gateway.settings import GatewaySettings
from shared.contracts.envelope import Actor
from shared.contracts.errors import ServiceError, unavailable

SID = "5b0c3e52-3f4a-4d0e-9a51-0a3c9e8f7d21"


class HeldBroker:
    """Answers each request when the test releases it (or fails it)."""

    def __init__(self):
        self.asked: list[dict] = []
        self.answer: asyncio.Future = asyncio.get_running_loop().create_future()

    async def request(self, envelope, *, routing_key, timeout):
        self.asked.append({"routing_key": routing_key, "timeout": timeout,
                           "payload": envelope.payload})
        return await self.answer


class ListConnection(Connection):
    def __init__(self, user_id: str):
        self.id = "c1"
        self.principal = Principal(Actor(user_id=user_id, role="client"), expires_at=0)
        self.user_id = user_id
        self.sessions = {SID: SessionView()}
        self.closed = False
        self.sent: list[dict] = []

    def send(self, frame):
        self.sent.append(frame)


def link(broker) -> PresenceLink:
    settings = GatewaySettings(jwt_secret="x" * 40, presence_join_timeout_ms=5,
                               rpc_timeout_s=7)
    return PresenceLink(broker, settings)


async def settled(presence: PresenceLink) -> None:
    await asyncio.gather(*presence._tasks, return_exceptions=True)


async def test_an_answer_in_time_is_the_joined_state():
    broker = HeldBroker()
    broker.answer.set_result({"online_users": ["alice", "bob"], "typing": ["bob"]})
    conn = ListConnection("alice")
    seen = await link(broker).session_opened(conn, SID, ["alice", "bob"])
    assert seen == {"online_users": ["alice", "bob"], "typing": ["bob"]}
    assert broker.asked[0]["routing_key"] == "presence.open_session"
    assert broker.asked[0]["timeout"] == 7  # the request itself may take the RPC timeout
    assert conn.sent == []


async def test_a_late_answer_follows_joined_as_online_users_and_typing_frames():
    broker = HeldBroker()
    presence = link(broker)
    conn = ListConnection("alice")
    seen = await presence.session_opened(conn, SID, ["alice", "bob", "carol"])
    assert seen == {"online_users": ["alice"], "typing": []}  # what the gateway knows
    broker.answer.set_result({"online_users": ["bob", "carol"], "typing": ["carol"]})
    await settled(presence)
    assert conn.sent == [
        {"type": "online_users", "session_id": SID, "user_ids": ["alice", "bob", "carol"]},
        {"type": "typing_start", "session_id": SID, "user_id": "carol"},
    ]


async def test_a_late_answer_for_a_session_left_meanwhile_is_dropped():
    broker = HeldBroker()
    presence = link(broker)
    conn = ListConnection("alice")
    await presence.session_opened(conn, SID, ["alice", "bob"])
    del conn.sessions[SID]
    broker.answer.set_result({"online_users": ["bob"], "typing": []})
    await settled(presence)
    assert conn.sent == []


async def test_no_answer_at_all_leaves_the_joined_state_as_the_gateway_knows_it():
    broker = HeldBroker()
    presence = link(broker)
    conn = ListConnection("alice")
    seen = await presence.session_opened(conn, SID, ["alice", "bob"])
    broker.answer.set_exception(unavailable("no answer from presence in time"))
    await settled(presence)
    assert seen == {"online_users": ["alice"], "typing": []} and conn.sent == []
    assert isinstance(broker.answer.exception(), ServiceError)


async def test_a_late_request_cancelled_at_shutdown_sends_nothing_and_raises_nothing():
    loop = asyncio.get_running_loop()
    raised: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: raised.append(context))
    try:
        broker = HeldBroker()
        presence = link(broker)
        conn = ListConnection("alice")
        await presence.session_opened(conn, SID, ["alice", "bob"])
        broker.answer.cancel()
        await settled(presence)
        await asyncio.sleep(0)  # the done callbacks run on the next loop iteration
    finally:
        loop.set_exception_handler(previous)
    assert conn.sent == [] and raised == []
