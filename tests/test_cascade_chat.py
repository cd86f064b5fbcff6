"""The cascade's chat parts: SSE and chunk parsing against OpenAI's stream shapes,
sentences, the history's truncation, and HTTP errors from a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.cascade.chat import (
    ChatError,
    ChatHistory,
    ChatStream,
    SentenceSplitter,
    SseDecoder,
    StreamedCall,
)
from pipeflow.cascade.llm import HttpChat

DATA = Path(__file__).parent / "data" / "chat"
TOOL_CALLS = (DATA / "tool_calls.sse").read_bytes()
TEXT = (DATA / "text.sse").read_bytes()


def parse(body: bytes, piece: int) -> ChatStream:
    decoder, stream = SseDecoder(), ChatStream()
    for start in range(0, len(body), piece):
        for data in decoder.feed(body[start:start + piece]):
            stream.feed_data(data)
    return stream


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_streamed_parallel_tool_calls_are_assembled(piece: int) -> None:
    stream = parse(TOOL_CALLS, piece)  # cut anywhere, even inside "crème"'s UTF-8
    assert stream.done and stream.finish_reason == "tool_calls" and stream.text == ""
    calls = stream.tool_calls()
    assert [(c.call_id, c.name) for c in calls] == [
        ("call_Qx1bD0kq7XyP", "get_product_info"), ("call_Zr8Lm2nTq4Vw", "get_product_info")]
    assert [json.loads(c.arguments) for c in calls] == [{"name": "pizza"},
                                                        {"name": "crème brûlée"}]
    assert stream.usage["total_tokens"] == 223  # the include_usage chunk with no choices


def test_text_deltas_and_sentences() -> None:
    decoder, stream, splitter = SseDecoder(), ChatStream(), SentenceSplitter()
    sentences: list[str] = []
    for data in decoder.feed(TEXT):
        sentences += splitter.feed(stream.feed_data(data))
    sentences += splitter.flush()
    assert stream.text == "A pizza costs nine dollars. The crème brûlée is six."
    assert sentences == ["A pizza costs nine dollars.", "The crème brûlée is six."]
    assert stream.finish_reason == "stop" and stream.saw_done


def test_sse_fields_comments_and_crlf() -> None:
    decoder = SseDecoder()
    body = b": keep-alive\r\nevent: x\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n"
    assert decoder.feed(body) == ['{"a":\n1}', "[DONE]"]


def test_a_chunk_that_is_not_json_or_an_error_mid_stream() -> None:
    with pytest.raises(ChatError, match="not JSON") as bad:
        ChatStream().feed_data("{oops")
    assert bad.value.code == "bad_chunk"
    with pytest.raises(ChatError, match="mid-stream: overloaded") as err:
        ChatStream().feed_data('{"error": {"message": "overloaded", "type": "server_error"}}')
    assert err.value.code == "stream_error"


@given(st.lists(st.text(alphabet="ab .!?", max_size=8), max_size=12))
def test_the_splitter_loses_and_adds_no_text(deltas: list[str]) -> None:
    splitter = SentenceSplitter(min_chars=3)
    out = [s for d in deltas for s in splitter.feed(d)] + splitter.flush()
    assert "".join(out).replace(" ", "") == "".join(deltas).replace(" ", "")


def test_history_truncates_to_the_words_heard() -> None:
    history = ChatHistory("Be brief.")
    history.add_message("Hi")
    history.spoken("item_1", "Welcome to the corner shop.", 2000)
    history.spoken("item_1", "Today we have pizza and salad.", 4000)
    history.add_assistant("item_1", "Welcome to the corner shop. Today we have pizza and salad.")
    history.truncate("item_1", 3000)  # half of the second sentence
    assert history.messages[-1] == {"role": "assistant",
                                    "content": "Welcome to the corner shop. Today we have"}
    history.truncate("item_1", 0)  # nothing heard: the answer is gone
    assert [m["role"] for m in history.messages] == ["system", "user"]


def test_history_keeps_tool_calls_and_results_in_openai_shape() -> None:
    history = ChatHistory()
    history.add_assistant("cancelled", "")  # nothing said: no message the API would refuse
    history.add_assistant("i", "", [StreamedCall(call_id="c1", name="price", arguments="")])
    history.add_tool_result("c1", '{"price": 9}')
    assert history.messages == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "price", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"price": 9}'}]


# --- HTTP, over a real socket ------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> dict:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return json.loads(await reader.readexactly(length))


def reply(status: str, body: bytes, *headers: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = [f"HTTP/1.1 {status}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        writer.close()
    return handle


def sse(body: bytes, cut_at: int | None = None) -> Handler:
    """A 200 event stream, sent chunked; ``cut_at``: drop the connection there."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        data = body if cut_at is None else body[:cut_at]
        for start in range(0, len(data), 300):
            piece = data[start:start + 300]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if cut_at is None:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
    return handle


class Server:
    """A TCP server that answers each connection with the next handler."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.url = ""

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.handlers.pop(0)(reader, writer)

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def collect(chat: HttpChat) -> ChatStream:
    stream = ChatStream()
    items: AsyncIterator[str] = chat.stream([{"role": "user", "content": "hi"}], [])
    async for data in items:
        stream.feed_data(data)
    return stream


async def test_a_stream_over_http_parses_like_the_fixture() -> None:
    async with Server(sse(TOOL_CALLS)) as server:
        chat = HttpChat(server.url, "gpt-4o-mini", api_key="sk-test")
        stream = await collect(chat)
        await chat.aclose()
    assert [c.name for c in stream.tool_calls()] == ["get_product_info"] * 2


@pytest.mark.parametrize(("handler", "code", "words"), [
    (reply("401 Unauthorized", b'{"error": {"message": "Incorrect API key provided: sk-te**st.",'
           b' "type": "invalid_request_error", "code": "invalid_api_key"}}'),
     "http_401", ["refused the API key (401)", "OPENAI_API_KEY", "Incorrect API key"]),
    (reply("429 Too Many Requests", b'{"error": {"message": "Rate limit reached", '
           b'"type": "requests", "code": "rate_limit_exceeded"}}', "Retry-After: 2"),
     "http_429", ["rate limiting", "retry after 2 s", "Rate limit reached"]),
    (reply("503 Service Unavailable", b"upstream overloaded"),
     "http_503", ["failed on its side (503)", "upstream overloaded"]),
    (sse(TEXT, cut_at=700), "stream_cut", ["cut the stream mid-answer"]),
])
async def test_http_errors_are_clear_sentences(handler: Handler, code: str,
                                               words: list[str]) -> None:
    async with Server(handler) as server:
        chat = HttpChat(server.url, "gpt-4o-mini", api_key="sk-test")
        with pytest.raises(ChatError) as caught:
            await collect(chat)
        await chat.aclose()
    assert caught.value.code == code
    for word in words:
        assert word in str(caught.value)
    assert server.url + "/chat/completions" in str(caught.value)
    if code == "http_429":
        assert caught.value.retry_after == 2.0
