"""``WS /api/calls/{id}/stream``: audio and events both ways over one socket.

The protocol (also in the OpenAPI description and docs/deployment.md):

- client -> gateway, binary: caller audio, PCM16 little-endian mono at the
  rate given by the ``sample_rate`` query parameter (else the call's rate).
- client -> gateway, text: JSON ``{"type": "text", "q": "..."}``,
  ``{"type": "commit"}``, ``{"type": "cancel"}``, ``{"type": "end"}`` or
  ``{"type": "config", "sample_rate": 16000}``, and from a client that plays
  the agent audio, ``{"type": "played", "samples": N}``: the samples of agent
  audio received on this socket that have finished playing (a barge-in then
  truncates the agent's item to what the client played).
- gateway -> client, binary: agent audio, PCM16 mono at 24 kHz, each chunk
  as it starts playing on the call's playout clock (the call's audio sink,
  ``pipeflow.server.edges.CallAudioOut``); the first client also gets what
  played before it connected (the greeting).
- gateway -> client, text: ``{"type": "call", "call": {...}}`` first, then
  every other frame as its msgspec JSON (``transcript``, ``interrupt``,
  ``tool_call``...), ``{"type": "agent", "agent": ...}`` (the agent's
  summary hook: an order line's order) after each tool result, and
  ``{"type": "ended", "call": {...}}`` last. A bad message gets
  ``{"type": "error", "message": ...}`` and the socket stays open.

Refusals close the socket with 4000 + the HTTP status (4404 unknown call,
4409 call not active, 4400 bad id).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from pipeflow.errors import PipeflowError
from pipeflow.frames import AudioFrame, EndOfStream, Frame, ToolResult
from pipeflow.server.api import frame_json
from pipeflow.server.calls import (
    MAX_RATE,
    MIN_RATE,
    Call,
    CallError,
    CallRegistry,
    check_rate_param,
)
from pipeflow.server.edges import PlayedAudio
from pipeflow.session import AgentSession

__all__ = ["ClientMessage", "close_quietly", "routes"]


class _Message(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    pass


class TextMessage(_Message, tag="text"):
    """Caller text (chat, DTMF, IVR)."""

    q: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


class CommitMessage(_Message, tag="commit"):
    """End the caller's turn."""


class CancelMessage(_Message, tag="cancel"):
    """Stop the agent's answer."""


class EndMessage(_Message, tag="end"):
    """Hang up: end the call."""


class ConfigMessage(_Message, tag="config"):
    """Change the rate of the caller audio that follows."""

    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE)]


class PlayedMessage(_Message, tag="played"):
    """The client has played this many samples of the agent audio it received."""

    samples: Annotated[int, msgspec.Meta(ge=0)]


ClientMessage = (TextMessage | CommitMessage | CancelMessage | EndMessage | ConfigMessage
                 | PlayedMessage)
_decoder = msgspec.json.Decoder(ClientMessage)


async def call_stream(websocket: WebSocket) -> None:
    """Bridge one WebSocket and one running call until either ends."""
    registry: CallRegistry = websocket.app.state.calls
    try:
        call = registry.get(websocket.path_params["call_id"])
        session = call.running_session()
        rate = call.sample_rate
        if "sample_rate" in websocket.query_params:
            rate = check_rate_param(websocket.query_params["sample_rate"],
                                    "query parameter 'sample_rate'")
    except CallError as exc:
        await websocket.accept()
        await close_quietly(websocket, 4000 + exc.status, str(exc))
        return
    except PipeflowError as exc:
        await websocket.accept()
        await close_quietly(websocket, 4400, str(exc))
        return
    await websocket.accept()
    await websocket.send_text(msgspec.json.encode({"type": "call", "call": call.summary()})
                              .decode())
    played = PlayedAudio()
    sender = asyncio.create_task(_send_frames(websocket, registry, call, session, played))
    try:
        hung_up = await _receive(websocket, registry, call, session, rate, played)
        if hung_up:  # let the sender say "ended" and close
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sender), 5.0)
    finally:
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        await close_quietly(websocket)


async def _receive(websocket: WebSocket, registry: CallRegistry, call: Call,
                   session: AgentSession, rate: int, played: PlayedAudio) -> bool:
    """Caller audio and commands until the client leaves (False) or hangs up (True)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return False
        call.touch(registry.clock())
        try:
            if message.get("bytes") is not None:
                pcm = message["bytes"]
                if len(pcm) % 2:
                    raise CallError(f"Audio message of {len(pcm)} bytes: PCM16 needs an even "
                                    "number of bytes.")
                if pcm:
                    await call.running_session().stream_audio(pcm, rate)
                continue
            request = _decode(message.get("text") or "")
            match request:
                case TextMessage(q=q):
                    await call.running_session().send_text(q)
                case CommitMessage():
                    await call.running_session().commit_audio()
                case CancelMessage():
                    await call.running_session().cancel_response()
                case ConfigMessage(sample_rate=new_rate):
                    rate = new_rate
                case PlayedMessage(samples=samples):
                    played.played(samples)
                case EndMessage():
                    await registry.end(call.id)
                    return True
        except PipeflowError as exc:
            await _send_json(websocket, {"type": "error", "message": str(exc)})


def _decode(text: str) -> Any:
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise CallError(
            f"Message not understood ({exc}); send JSON with a type of text, commit, cancel, "
            "end, config or played, or binary PCM16 audio."
        ) from None


async def _send_frames(websocket: WebSocket, registry: CallRegistry, call: Call,
                       session: AgentSession, played: PlayedAudio) -> None:
    """Forward agent audio (binary) and events (JSON) until the session ends."""
    out: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=64)
    feeders = [asyncio.create_task(_feed(session.subscribe(call.backlog_start(), audio=False),
                                         out))]
    if call.audio_out is not None:
        feeders.append(asyncio.create_task(_feed(call.audio_out.listen(played), out)))
    try:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            ended = 0
            while ended < len(feeders):
                frame = await out.get()
                if frame is None:
                    ended += 1
                elif type(frame) is AudioFrame:
                    await websocket.send_bytes(frame.pcm)
                elif not isinstance(frame, EndOfStream):
                    await websocket.send_text(frame_json(frame).decode())
                    if isinstance(frame, ToolResult):
                        await _send_json(websocket, {"type": "agent",
                                                     "agent": call.agent_summary()})
            await registry.end(call.id, "finished")  # returns once the record is written
            await _send_json(websocket, {"type": "ended", "call": call.summary()})
            await close_quietly(websocket)
    finally:
        for feeder in feeders:
            feeder.cancel()


async def _feed(frames: Any, out: asyncio.Queue[Frame | None]) -> None:
    """Move one stream's frames into the socket's queue; None at its end."""
    with contextlib.suppress(PipeflowError):  # a reader cut off for lagging: its end
        async for frame in frames:
            await out.put(frame)
    await out.put(None)


async def _send_json(websocket: WebSocket, data: dict[str, Any]) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(msgspec.json.encode(data).decode())


async def close_quietly(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close the socket unless it is already closed (a close reason fits in 123 bytes)."""
    data = reason.encode()
    if len(data) > 123:
        reason = data[:120].decode(errors="ignore") + "..."
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code, reason)


def routes() -> list[WebSocketRoute]:
    """The call WebSocket route."""
    return [WebSocketRoute("/api/calls/{call_id}/stream", call_stream)]
