"""The HTTP API of the call gateway: one resource per call id.

Every handler reads its input through a typed msgspec struct, so a bad body
is one 400 with a sentence naming the field, and every error leaves as
``{"error": {"status": ..., "message": ...}}``. Handlers touch the call (for
the idle timeout) and hand work to its ``AgentSession``; nothing here blocks
the loop for longer than a dictionary lookup or a small decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeflow.errors import ConfigError, LocalError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Frame,
    ToolResult,
    encode_json,
)
from pipeflow.server.calls import (
    MAX_RATE,
    MIN_RATE,
    Call,
    CallError,
    CallRegistry,
    check_rate_param,
)

__all__ = ["error_response", "read_body", "routes"]

_JSON_TYPES = ("application/json", "text/json")


# -- request bodies --------------------------------------------------------------


class StartBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of POST /api/calls/{id}/start (optional)."""

    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE)] = 16000


class AudioBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """JSON body of POST /api/calls/{id}/audio."""

    pcm_b64: bytes
    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE)] | None = None


class TextBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of POST /api/calls/{id}/text."""

    q: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    wait: bool = False
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 30.0


# -- helpers -----------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    """The gateway's error body: ``{"error": {"status", "message"}}``."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": {"status": status, "message": message}}, status, headers)


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past the gateway's ``max_body_bytes``.

    Raises:
        CallError: (413) the declared or actual size is over the limit, (400)
            a malformed Content-Length.
    """
    limit = request.app.state.options.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise CallError(f"Content-Length {declared!r} is not a number of bytes.", 400)
        if int(declared) > limit:
            raise CallError(
                f"The request body ({declared} bytes) is over the limit of {limit} bytes.", 413
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise CallError(f"The request body is over the limit of {limit} bytes.", 413)
    return bytes(body)


def _decode(data: bytes, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        fields = ", ".join(kind.__struct_fields__)
        raise CallError(
            f"The {what} body is not valid: {_explain(exc)} (expected a JSON "
            f"object with: {fields}).",
            400,
        ) from None


def _explain(exc: msgspec.DecodeError) -> str:
    text = str(exc).replace("`", "'")
    return text[0].lower() + text[1:] if text else "malformed JSON"


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in _JSON_TYPES


def _registry(request: Request) -> CallRegistry:
    return request.app.state.calls


def _call(request: Request) -> Call:
    registry = _registry(request)
    call = registry.get(request.path_params["call_id"])
    call.touch(registry.clock())
    return call


def frame_json(frame: Frame) -> bytes:
    """A frame as the JSON the gateway sends (audio as base64 in ``pcm``)."""
    return encode_json(frame)


# -- handlers ------------------------------------------------------------------------


async def start_call(request: Request) -> Response:
    """POST /api/calls/{id}/start: start a call session (201)."""
    body = _decode(await read_body(request), StartBody, "start")
    call = await _registry(request).start(request.path_params["call_id"], body.sample_rate)
    return JSONResponse(call.summary(), 201)


async def send_audio(request: Request) -> Response:
    """POST /api/calls/{id}/audio: caller audio, raw PCM16 or ``{"pcm_b64"}`` (202)."""
    call = _call(request)
    data = await read_body(request)
    rate_param = request.query_params.get("sample_rate")
    if _is_json(request):
        body = _decode(data, AudioBody, "audio")
        pcm, rate = body.pcm_b64, body.sample_rate
    else:
        pcm, rate = data, None
    if rate is None:
        rate = (
            call.sample_rate
            if rate_param is None
            else check_rate_param(rate_param, "query parameter 'sample_rate'")
        )
    if not pcm:
        raise CallError("The audio body is empty: send PCM16 mono samples.", 400)
    if len(pcm) % 2:
        raise CallError(
            f"The audio body has {len(pcm)} bytes, an odd number: PCM16 samples take 2 bytes each.",
            400,
        )
    session = call.running_session()
    await session.stream_audio(pcm, rate)
    return JSONResponse(
        {
            "accepted_bytes": len(pcm),
            "sample_rate": rate,
            "duration_ms": round(len(pcm) * 500 / rate),
        },
        202,
    )


async def commit_audio(request: Request) -> Response:
    """POST /api/calls/{id}/commit: end the caller's turn (202)."""
    await read_body(request)
    await _call(request).running_session().commit_audio()
    return JSONResponse({"ok": True}, 202)


async def send_text(request: Request) -> Response:
    """POST /api/calls/{id}/text: caller text (chat, DTMF, IVR); optionally wait for the answer."""
    body = _decode(await read_body(request), TextBody, "text")
    call = _call(request)
    session = call.running_session()
    if not body.wait:
        await session.send_text(body.q)
        return JSONResponse({"ok": True}, 202)
    try:
        frames = await answer_text(session, body.q, body.timeout_s)
    except TimeoutError:
        return JSONResponse({"ok": True, "answered": False, "reply": ""}, 202)
    except LocalError as exc:
        raise CallError(f"Call {call.id} ended before it answered: {exc}", 409) from exc
    call.touch(_registry(request).clock())
    reply = " ".join(
        f.text.strip()
        for f in frames
        if getattr(f, "role", "") == "agent" and getattr(f, "final", False) and hasattr(f, "text")
    )
    tools = [msgspec.to_builtins(f) for f in frames if isinstance(f, ToolResult)]
    return JSONResponse(
        {"ok": True, "answered": True, "reply": reply, "tool_results": tools,
         "agent": call.agent_summary()}
    )


async def answer_text(session: Any, text: str, timeout_s: float) -> list[Frame]:
    """Send ``text`` and return the frames of the agent's answer to it
    (``AgentSession.answer``: a greeting or answer under way is not it).

    Raises:
        TimeoutError: no complete answer within ``timeout_s``.
    """
    frames: list[Frame] = await session.answer(text, timeout_s)
    return frames


async def cancel_response(request: Request) -> Response:
    """POST /api/calls/{id}/cancel: stop the agent's answer now (202)."""
    await read_body(request)
    session = _call(request).running_session()
    try:
        await session.cancel_response()
    except ConfigError as exc:
        raise CallError(f"This call cannot be cancelled: {exc}", 409) from exc
    return JSONResponse({"ok": True}, 202)


async def end_call(request: Request) -> Response:
    """POST /api/calls/{id}/end: close the session and keep its record (200)."""
    await read_body(request)
    registry = _registry(request)
    call = await registry.end(request.path_params["call_id"])
    return JSONResponse(call.summary())


async def get_call(request: Request) -> Response:
    """GET /api/calls/{id}: state, transcript, turns, tool calls and the agent's summary."""
    return JSONResponse(_call(request).summary())


async def list_calls(request: Request) -> Response:
    """GET /api/calls: every known call, briefly."""
    registry = _registry(request)
    calls = [call.summary(brief=True) for call in registry.calls()]
    return JSONResponse(
        {"calls": calls, "live": registry.live_count, "max_calls": registry.options.max_calls}
    )


async def get_agent_audio(request: Request) -> Response:
    """GET /api/calls/{id}/audio: the agent's audio so far as a WAV file."""
    call = _call(request)
    pcm, rate = call.agent_audio()
    return Response(wav_bytes(pcm, rate), media_type="audio/wav")


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """PCM16 mono as a complete WAV file in memory."""
    size = len(pcm)
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )
    return header + pcm


async def stream_agent_audio(request: Request) -> Response:
    """GET /api/calls/{id}/audio/stream: the agent's audio live, raw PCM16 at 24 kHz."""
    call = _call(request)
    call.running_session()
    audio_out = call.audio_out
    if audio_out is None:
        raise CallError(f"Call {call.id} plays its audio elsewhere (a phone stream); "
                        "it has no audio stream here.", 409)

    async def chunks() -> AsyncIterator[bytes]:
        async for frame in audio_out.listen():
            yield frame.pcm

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"X-Sample-Rate": "24000", "Cache-Control": "no-store"},
    )


async def stream_events(request: Request) -> Response:
    """GET /api/calls/{id}/events: the call's frames as server-sent events."""
    call = _call(request)
    with_audio = request.query_params.get("audio", "false").lower() in ("1", "true", "yes")
    return StreamingResponse(
        sse_stream(call, with_audio),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def sse_stream(
    call: Call, with_audio: bool = False, keepalive_s: float = 15.0
) -> AsyncIterator[bytes]:
    """``call`` then every frame as an SSE event named after its type; ``end`` last."""
    yield _sse("call", msgspec.json.encode(call.summary(brief=True)))
    session = call.session
    if session is not None and call.live:
        frames = session.subscribe(audio=with_audio)
        next_frame = asyncio.ensure_future(anext(frames, None))
        try:
            while True:
                done, _ = await asyncio.wait({next_frame}, timeout=keepalive_s)
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                frame = next_frame.result()
                if frame is None or isinstance(frame, EndOfStream):
                    break
                next_frame = asyncio.ensure_future(anext(frames, None))
                if type(frame) is AudioFrame and not with_audio:
                    continue
                tag = type(frame).__struct_config__.tag
                yield _sse(str(tag), frame_json(frame))
                if isinstance(frame, ToolResult):
                    yield _sse("agent", msgspec.json.encode({"agent": call.agent_summary()}))
        finally:
            next_frame.cancel()
            with contextlib.suppress(BaseException):
                await frames.aclose()
    yield _sse("end", msgspec.json.encode({"id": call.id}))


def _sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def routes() -> list[Route]:
    """The HTTP routes of the call API."""
    base = "/api/calls/{call_id}"
    return [
        Route("/api/calls", list_calls, methods=["GET"]),
        Route(base, get_call, methods=["GET"]),
        Route(f"{base}/start", start_call, methods=["POST"]),
        Route(f"{base}/audio", send_audio, methods=["POST"]),
        Route(f"{base}/audio", get_agent_audio, methods=["GET"]),
        Route(f"{base}/audio/stream", stream_agent_audio, methods=["GET"]),
        Route(f"{base}/commit", commit_audio, methods=["POST"]),
        Route(f"{base}/text", send_text, methods=["POST"]),
        Route(f"{base}/cancel", cancel_response, methods=["POST"]),
        Route(f"{base}/end", end_call, methods=["POST"]),
        Route(f"{base}/events", stream_events, methods=["GET"]),
    ]
