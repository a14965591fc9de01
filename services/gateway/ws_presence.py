"""WebSocket frames of presence and typing: ``typing_start``, ``typing_stop``,
``set_presence`` (registered in ``ws.FRAME_HANDLERS``)."""

from __future__ import annotations

from shared.contracts.frames import SetPresenceFrame, TypingStartFrame, TypingStopFrame

from .presence import PRESENCE


async def typing_start(frame: TypingStartFrame, ctx) -> None:
    """Refused with not_found for a session the user is not in; rate-limited per session."""
    await ctx.app[PRESENCE].typing_start(ctx.conn, str(frame.session_id))
    ctx.conn.send({"type": "ack", "ref": frame.ref, "session_id": str(frame.session_id)})


async def typing_stop(frame: TypingStopFrame, ctx) -> None:
    await ctx.app[PRESENCE].typing_stop(ctx.conn, str(frame.session_id))
    ctx.conn.send({"type": "ack", "ref": frame.ref, "session_id": str(frame.session_id)})


async def set_presence(frame: SetPresenceFrame, ctx) -> None:
    """``status``: online or away (anything else is refused as invalid by the frame model)."""
    await ctx.app[PRESENCE].set_presence(ctx.conn, frame.status)
    ctx.conn.send({"type": "ack", "ref": frame.ref, "status": frame.status})


PRESENCE_FRAME_HANDLERS = {
    TypingStartFrame: typing_start,
    TypingStopFrame: typing_stop,
    SetPresenceFrame: set_presence,
}
