"""What the official ``openai`` SDK asks of the local server beyond the basics.

Each case is a gap a review found with the SDK as the client: the usage chunk
of ``stream_options.include_usage``, no tool calls to functions the request
does not declare, a tool result without the field a script's text reads, and
``audio.speech.create()`` with its default ``mp3``.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import pipeflow.cascade.audio_server as audio_server
from pipeflow.realtime.script import parse_script
from pipeflow.realtime.server import LocalRealtimeServer
from tests.speech import need_tts
from tests.test_cascade_wire import TOOLS, Recording, conforms

SCRIPT = parse_script("""\
turns:
  - match: [pizza]
    steps:
      - say: "Let me check."
      - call: get_product_info
        arguments: {product: pizza}
      - say: "{result.message} Would you like one?"
""")
ASK = [{"role": "user", "content": "how much is a pizza"}]


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    async with LocalRealtimeServer(SCRIPT) as server:
        sdk = AsyncOpenAI(api_key="unused", base_url=server.http_base_url, max_retries=0)
        yield sdk
        await sdk.close()


async def test_include_usage_sends_the_usage_chunk_last(client: AsyncOpenAI) -> None:
    recording = Recording()
    sdk = client.with_options(http_client=httpx.AsyncClient(transport=recording))
    stream = await sdk.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == 5 and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    datas = [line[6:] for line in bytes(recording.bodies[0]).decode().split("\n\n")
             if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    for data in datas[:-1]:  # "usage": null on each chunk before, as OpenAI's
        assert "usage" in json.loads(data)
        conforms(ChatCompletionChunk, json.loads(data))
    plain = await client.chat.completions.create(model="m", messages=ASK, stream=True)  # type: ignore[arg-type]
    assert all(c.usage is None and c.choices for c in [c async for c in plain])


async def test_no_tool_calls_when_the_request_declares_no_tools(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="m", messages=ASK, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert not [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me check."
    whole = await client.chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    conforms(ChatCompletion, whole.model_dump(mode="json", exclude_unset=True))
    assert whole.choices[0].message.tool_calls is None
    assert whole.choices[0].finish_reason == "stop"
    # a request declaring other functions only gets none of the script's calls either
    other = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {}}}}]
    whole = await client.chat.completions.create(model="m", messages=ASK, tools=other)  # type: ignore[arg-type]
    assert whole.choices[0].message.tool_calls is None
    declared = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
    calls = declared.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_product_info"]  # type: ignore[union-attr]


async def _after_the_tool(client: AsyncOpenAI, output: str) -> str:
    first = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    answer = await client.chat.completions.create(model="m", tools=TOOLS, messages=[  # type: ignore[arg-type]
        *ASK, message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": output}])
    return answer.choices[0].message.content or ""


async def test_a_tool_result_without_message_never_speaks_the_template(
        client: AsyncOpenAI) -> None:
    said = await _after_the_tool(client, '{"ok": true, "price": "10.00"}')
    assert "{" not in said and "result" not in said
    assert said == "Would you like one?"
    said = await _after_the_tool(client, "A pizza is ten dollars.")  # plain text: the message
    assert said == "A pizza is ten dollars. Would you like one?"
    said = await _after_the_tool(client, '{"message": "Pizza: $10.00."}')
    assert said == "Pizza: $10.00. Would you like one?"


async def test_speech_in_the_default_mp3(client: AsyncOpenAI) -> None:
    need_tts()
    text = "Hello there. Your pizza is on its way."
    mp3 = await client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    data = mp3.read()
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # an MPEG audio frame's sync word
    pcm = await client.audio.speech.create(model="tts-1", voice="alloy", input=text,
                                           response_format="pcm")
    seconds = len(pcm.read()) / 2 / 24000
    assert abs(len(data) * 8 / 64000 - seconds) < 0.25 * seconds  # 64 kbit/s of that speech


async def test_mp3_without_the_encoder_is_a_clear_400(client: AsyncOpenAI,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_server, "mp3_encoder", lambda: None)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    assert caught.value.status_code == 400
    message = caught.value.body["message"]  # type: ignore[index]
    assert "response_format 'mp3' is not served here" in message
    assert "pcm (24 kHz PCM16 mono) or wav" in message and "pipeflow[mp3]" in message
    assert caught.value.body["param"] == "response_format"  # type: ignore[index]
