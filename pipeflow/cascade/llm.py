"""Chat clients of the cascade: Chat Completions over HTTP, or the offline script.

Both yield the SSE ``data`` payloads of one streamed completion, so the
stage parses a real provider's stream and the offline one with the same
``ChatStream``: ``stream`` one by one, ``batches`` a list per arrival (one
network read's events; the offline model's whole answer at once), so the
stage passes what came together on as one text delta, not one per token.
Errors are ``ChatError``s whose text names the URL, the status and what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import msgspec

from pipeflow.cascade.chat import EXPECT_HEADER, ChatError, SseDecoder, http_error
from pipeflow.cascade.script_llm import ScriptChat

__all__ = ["ChatClient", "HttpChat", "OfflineChat"]


class ChatClient(Protocol):
    """What the cascade stage needs of a chat model."""

    def stream(self, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]]) -> AsyncIterator[str]:
        """The ``data`` payloads of one streamed completion over ``messages``."""
        ...

    def batches(self, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]]) -> AsyncIterator[list[str]]:
        """The same payloads, a list of those that arrived together at a time."""
        ...

    @property
    def expect(self) -> str | None:
        """What the caller is expected to say next, where the model knows (its script)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class HttpChat:
    """``POST {base_url}/chat/completions`` with ``stream: true``.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        model: the model name sent.
        api_key: sent as ``Authorization: Bearer``; empty sends none (local servers).
        timeout_s: connect and read timeout.
        transport: an httpx transport (an in-process ASGI app, for tests of
            a local endpoint).
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.extra = dict(extra or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout_s, transport=transport)
        self._expect: str | None = None

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str]:
        async for batch in self.batches(messages, tools):
            for data in batch:
                yield data

    async def batches(self, messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]]) -> AsyncIterator[list[str]]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True,
                                **self.extra}
        if tools:
            body["tools"] = tools
        decoder = SseDecoder()
        try:
            async with self._http.stream("POST", self.url,
                                         content=msgspec.json.encode(body),
                                         headers={"Content-Type": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise http_error(resp.status_code, await resp.aread(), dict(resp.headers),
                                     self.url)
                self._expect = resp.headers.get(EXPECT_HEADER) or None
                async for chunk in resp.aiter_bytes():
                    if events := decoder.feed(chunk):
                        yield events
        except httpx.TimeoutException as exc:
            raise ChatError(f"the chat model at {self.url} did not answer in time "
                            f"({type(exc).__name__})", "timeout") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ChatError(f"the chat model at {self.url} cut the stream mid-answer ({exc})",
                            "stream_cut") from None
        except httpx.TransportError as exc:
            raise ChatError(f"cannot reach the chat model at {self.url} ({exc})",
                            "unreachable") from None

    @property
    def expect(self) -> str | None:
        """What the caller is expected to say next: only the local server's script says
        (its ``X-Pipeflow-Expect`` header); a real model says nothing of it."""
        return self._expect

    async def aclose(self) -> None:
        await self._http.aclose()


class OfflineChat:
    """The local script engine as a chat model, in-process (``ScriptChat``).

    ``chunk_delay_s`` spaces the chunks like a model's token rate, so a
    barge-in can land mid-answer in tests and demos.
    """

    def __init__(self, chat: ScriptChat, chunk_delay_s: float = 0.0) -> None:
        self.chat = chat
        self.chunk_delay_s = chunk_delay_s

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str]:
        async for batch in self.batches(messages, tools):
            for data in batch:
                yield data

    async def batches(self, messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]]) -> AsyncIterator[list[str]]:
        datas = [msgspec.json.encode(chunk).decode() for chunk in self.chat.complete(messages)]
        datas.append("[DONE]")
        if not self.chunk_delay_s:
            yield datas  # made at once: it arrives at once
            return
        for data in datas[:-1]:
            await asyncio.sleep(self.chunk_delay_s)
            yield [data]
        yield datas[-1:]

    @property
    def expect(self) -> str | None:
        """The dialogue state's expectation, after the answers streamed so far."""
        return self.chat.dialogue.expect

    async def aclose(self) -> None:
        return None
