"""The script engine's Chat Completions endpoint, with the official ``openai`` SDK as client."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeflow.cascade.chat import ChatStream
from pipeflow.cascade.llm import HttpChat
from pipeflow.cascade.server import chat_completions_app
from pipeflow.realtime.script import parse_script

openai = pytest.importorskip("openai")

SCRIPT = parse_script("""\
greeting: "Hello, corner shop."
turns:
  - match: [pizza]
    steps:
      - say: "Let me check."
      - call: price
        arguments: {item: pizza}
      - say: "A pizza is {result.price} dollars."
""")

TOOLS = [{"type": "function", "function": {
    "name": "price", "description": "Price of an item.",
    "parameters": {"type": "object", "properties": {"item": {"type": "string"}},
                   "required": ["item"]}}}]


def client(api_key: str = "sk-local") -> openai.AsyncOpenAI:
    app = chat_completions_app(SCRIPT, api_key="sk-local")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(api_key=api_key, base_url="http://local/v1", http_client=http)


async def test_the_sdk_streams_text_then_a_tool_call_then_the_answer() -> None:
    sdk = client()
    messages: list[dict] = [{"role": "system", "content": "Sell pizza."}]
    greeting = await sdk.chat.completions.create(model="script", messages=messages)
    assert greeting.choices[0].message.content == "Hello, corner shop."
    messages += [{"role": "assistant", "content": "Hello, corner shop."},
                 {"role": "user", "content": "How much is a pizza?"}]
    text, calls, finish = "", {}, None
    stream = await sdk.chat.completions.create(model="script", messages=messages, tools=TOOLS,
                                               stream=True)
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me check." and finish == "tool_calls"
    (call,) = calls.values()
    assert call["name"] == "price" and json.loads(call["arguments"]) == {"item": "pizza"}
    messages += [
        {"role": "assistant", "content": text, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": "price", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"price": 9}'}]
    answer = await sdk.chat.completions.create(model="script", messages=messages, tools=TOOLS)
    assert answer.choices[0].message.content == "A pizza is 9 dollars."


async def test_a_wrong_key_is_the_sdks_authentication_error() -> None:
    with pytest.raises(openai.AuthenticationError):
        await client("sk-wrong").chat.completions.create(
            model="script", messages=[{"role": "user", "content": "hi"}])


async def test_the_cascade_client_reads_the_endpoint_like_a_provider() -> None:
    app = chat_completions_app(SCRIPT)
    chat = HttpChat("http://local/v1", "script", transport=httpx.ASGITransport(app=app))
    stream = ChatStream()
    async for data in chat.stream([{"role": "user", "content": "a pizza please"}], TOOLS):
        stream.feed_data(data)
    await chat.aclose()
    assert stream.text == "Let me check." and stream.done
    assert [c.name for c in stream.tool_calls()] == ["price"]
