"""A Chat Completions endpoint over the script engine: ``POST /v1/chat/completions``.

An ASGI app (starlette) that answers OpenAI's request shape with the
script's answer, streamed as SSE ``chat.completion.chunk``s (``stream:
true``) or as one ``chat.completion``. Each request carries the whole
conversation, so the script's state (turns used, steps left after a tool
call) is rebuilt by replaying it: the answers it gave before are decided
again, deterministically, then the new one. Serve it with uvicorn, or use it
in-process through ``httpx.ASGITransport``.

The local Realtime server mounts the same route (with the audio ones of
``pipeflow.cascade.audio_server``) on its own port.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeflow.cascade.chat import EXPECT_HEADER
from pipeflow.cascade.script_llm import ScriptChat
from pipeflow.realtime.script import DEFAULT_SCRIPT, Script

__all__ = ["BodyRefused", "chat_completions_app", "chat_route", "read_body", "read_json",
           "refused", "replay", "timing", "usage"]

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON body taken (a long conversation is well under it)."""


class BodyRefused(Exception):
    """A request body that is too large or not JSON: its ``response`` is the error to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (413 past it, before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(_error(413, f"The request body is {int(declared)} bytes; "
                                      f"at most {limit} are taken."))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyRefused(_error(413, f"The request body is over {limit} bytes; "
                                          f"at most {limit} are taken."))
    return bytes(body)


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON body, bounded; a parse error or nesting too deep to decode is a 400."""
    data = await read_body(request, limit)
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BodyRefused(_error(400, "We could not parse the JSON body of your request "
                                      f"({exc}).")) from None
    except RecursionError:
        raise BodyRefused(_error(400, "The JSON body of your request is nested too deeply."))\
            from None


def replay(script: Script, messages: list[dict[str, Any]],
           tools: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The chunks of the script's answer to the last turn of ``messages``.

    Only functions in ``tools`` are called (None: every call of the script).
    """
    return _replayed(script, messages, tools)[0]


def _replayed(script: Script, messages: list[dict[str, Any]],
              tools: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], str | None]:
    """The answer's chunks, and what the dialogue expects after it."""
    chat = ScriptChat(script)
    for i, message in enumerate(messages):
        if message.get("role") == "assistant":
            chat.complete(messages[:i])  # the answer given then, decided again
    chunks = chat.complete(messages, tools)
    return chunks, chat.dialogue.expect


def usage(messages: list[dict[str, Any]], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``usage`` object for the answer: words counted as tokens (no tokenizer offline)."""
    prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
    completion = 0
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            completion += len((delta.get("content") or "").split())
            completion += sum(len(call.get("function", {}).get("arguments") or "") // 4
                              for call in delta.get("tool_calls") or [])
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": None}}, status_code=status)


def refused(request: Request, api_key: str | None) -> Response | None:
    """The 401 of a request without ``Authorization: Bearer KEY`` (None: it may pass)."""
    if not api_key:
        return None
    sent = request.headers.get("authorization", "").encode()
    if hmac.compare_digest(sent, f"Bearer {api_key}".encode()):
        return None
    return JSONResponse({"error": {
        "message": "Incorrect API key provided.", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}}, status_code=401)


def timing(seconds: float) -> dict[str, str]:
    """A ``Server-Timing`` header: how long the model itself took (for the benchmark)."""
    return {"Server-Timing": f"model;dur={seconds * 1000:.3f}"}


def chat_completions_app(script: Script | None = None, api_key: str = "") -> Starlette:
    """The app; with ``api_key`` set, requests must send ``Authorization: Bearer KEY``."""
    return Starlette(routes=[chat_route(script, api_key)])


def chat_route(script: Script | None = None, api_key: str | None = "") -> Route:
    """``POST /v1/chat/completions`` over ``script`` (see the module docstring)."""
    played = script or DEFAULT_SCRIPT

    async def completions(request: Request) -> Response:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        try:
            body = await read_json(request)
        except BodyRefused as refusal:
            return refusal.response
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a list of message objects.", "messages")
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            return _error(400, "'tools' must be a list of tool objects.", "tools")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            return _error(400, "'stream_options' must be an object.", "stream_options")
        started = time.perf_counter()
        chunks, expect = _replayed(played, messages, tools)
        took = timing(time.perf_counter() - started)
        if expect:
            took[EXPECT_HEADER] = expect
        if body.get("stream"):
            return StreamingResponse(_events(chunks, messages, bool(options.get("include_usage"))),
                                     media_type="text/event-stream", headers=took)
        return JSONResponse(_whole(chunks, messages), headers=took)

    return Route("/v1/chat/completions", completions, methods=["POST"])


async def _events(chunks: list[dict[str, Any]], messages: list[dict[str, Any]],
                  include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body; with ``include_usage`` (``stream_options``), as OpenAI streams it:
    ``usage: null`` on every chunk, then one chunk with no choices and the usage."""
    for chunk in chunks:
        if include_usage:
            chunk = {**chunk, "usage": None}
        yield b"data: " + msgspec.json.encode(chunk) + b"\n\n"
    if include_usage:
        last = chunks[-1]
        yield b"data: " + msgspec.json.encode({
            "id": last["id"], "object": "chat.completion.chunk", "created": last["created"],
            "model": last["model"], "system_fingerprint": last.get("system_fingerprint"),
            "choices": [], "usage": usage(messages, chunks)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _whole(chunks: list[dict[str, Any]], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` the chunks add up to."""
    text = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = "stop"
    for chunk in chunks:
        choice = chunk["choices"][0]
        delta = choice["delta"]
        text += delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            whole = calls.setdefault(call["index"], {"id": "", "type": "function",
                                                     "function": {"name": "", "arguments": ""}})
            whole["id"] = call.get("id") or whole["id"]
            whole["function"]["name"] += call.get("function", {}).get("name") or ""
            whole["function"]["arguments"] += call.get("function", {}).get("arguments") or ""
        finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    first = chunks[0]
    return {"id": first["id"], "object": "chat.completion", "created": first["created"],
            "model": first["model"], "choices": [{"index": 0, "message": message,
                                                  "logprobs": None, "finish_reason": finish}],
            "usage": usage(messages, chunks)}
