"""The local server's chat and audio endpoints, with the official ``openai`` SDK as client.

One ``LocalRealtimeServer`` serves the Realtime WebSocket and, on the same
port, ``/v1/chat/completions``, ``/v1/audio/transcriptions`` and
``/v1/audio/speech``. The SDK talks to it through an httpx transport that
records every byte it reads, and each streamed chunk is then checked field by
field against the SDK's pydantic models (``openai.types.chat``,
``openai.types.audio``), with no field the models do not declare. The
cascade's own clients parse the same answers, and the response shapes of
OpenAI's audio endpoints (tests/data/audio).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.audio import Transcription
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pipeflow.cascade.audio import HttpSpeech, HttpTranscriber, wav_bytes
from pipeflow.cascade.chat import ChatError, ChatStream, SseDecoder, http_error
from pipeflow.cascade.llm import HttpChat
from pipeflow.cascade.multipart import boundary_of, parse_form
from pipeflow.realtime.script import parse_script
from pipeflow.realtime.server import LocalRealtimeServer
from tests.realtime_sdk import _extras
from tests.speech import need_tts, spoken

AUDIO = Path(__file__).parent / "data" / "audio"
SCRIPT = parse_script("""\
turns:
  - match: [pizza]
    steps:
      - say: "Let me check. One moment."
      - call: get_product_info
        arguments: {product: pizza}
      - call: list_products
""")
TOOLS = [{"type": "function", "function": {"name": "get_product_info", "parameters": {
    "type": "object", "properties": {"product": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "list_products",
                                           "parameters": {"type": "object", "properties": {}}}}]


class Recording(httpx.AsyncBaseTransport):
    """The default transport, keeping each response body as it was read."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = bytearray()
        self.bodies.append(body)
        stream = response.stream

        class Tee(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for piece in stream:  # type: ignore[union-attr]
                    body.extend(piece)
                    yield piece

            async def aclose(self) -> None:
                await stream.aclose()  # type: ignore[union-attr]

        response.stream = Tee()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def conforms(model: type[pydantic.BaseModel], obj: Any) -> pydantic.BaseModel:
    """``obj`` validated by ``model``, with no field the model does not declare."""
    value = model.model_validate(obj)
    assert _extras(value, "") == [], _extras(value, "")
    return value


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    async with LocalRealtimeServer(SCRIPT, api_key="sk-local") as running:
        yield running


def sdk(server: LocalRealtimeServer, transport: httpx.AsyncBaseTransport | None = None,
        key: str = "sk-local") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=server.http_base_url, max_retries=0,
                       http_client=httpx.AsyncClient(transport=transport) if transport else None)


async def test_chat_streams_tool_call_deltas_the_sdk_reads(server: LocalRealtimeServer) -> None:
    recording = Recording()
    client = sdk(server, recording)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", stream=True, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "how much is a pizza"}])
    chunks = [chunk async for chunk in stream]
    await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Let me check. One moment."
    deltas = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.id is not None, d.function.name if d.function else None)
            for d in deltas if d.id] == [(0, True, "get_product_info"), (1, True, "list_products")]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.index == 0 and d.function)
    assert json.loads(arguments) == {"product": "pizza"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Every chunk on the wire, field by field; then the cascade's parser on the same bytes.
    decoder, parsed = SseDecoder(), ChatStream()
    datas = decoder.feed(bytes(recording.bodies[0]))
    assert datas[-1] == "[DONE]"
    for data in datas[:-1]:
        conforms(ChatCompletionChunk, json.loads(data))
    for data in datas:
        parsed.feed_data(data)
    assert parsed.text == text and parsed.done
    assert [c.name for c in parsed.tool_calls()] == ["get_product_info", "list_products"]


async def test_chat_whole_answer_and_the_cascade_client(server: LocalRealtimeServer) -> None:
    client = sdk(server)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    conforms(ChatCompletion, json.loads(raw.text))
    assert raw.headers["server-timing"].startswith("model;dur=")
    await client.close()
    chat = HttpChat(server.http_base_url, "gpt-4o-mini", api_key="sk-local")
    stream = ChatStream()
    async for data in chat.stream([{"role": "user", "content": "how much is a pizza"}], TOOLS):
        stream.feed_data(data)
    await chat.aclose()
    assert stream.text == "Let me check. One moment." and len(stream.tool_calls()) == 2


async def test_transcriptions_with_the_sdk_and_the_stt_client(server: LocalRealtimeServer) -> None:
    need_tts()
    wav = wav_bytes(spoken("how much is a pizza", 16000).astype("<i2").tobytes(), 16000)
    client = sdk(server)
    raw = await client.audio.transcriptions.with_raw_response.create(
        model="gpt-4o-mini-transcribe", file=("turn.wav", wav, "audio/wav"))
    result = conforms(Transcription, json.loads(raw.text))
    assert result.text == "how much is a pizza"  # type: ignore[attr-defined]
    assert raw.headers["server-timing"].startswith("model;dur=")
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", wav, "audio/wav"), response_format="text")
    assert text.strip() == "how much is a pizza"
    await client.close()
    stt = HttpTranscriber(server.http_base_url, "whisper-1", api_key="sk-local")
    pcm = spoken("how much is a pizza", 16000).astype("<i2").tobytes()
    assert await stt.transcribe(pcm, 16000) == "how much is a pizza"
    await stt.aclose()


async def test_speech_streams_pcm_the_sdk_reads(server: LocalRealtimeServer) -> None:
    need_tts()
    client = sdk(server)
    pieces: list[bytes] = []
    async with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", response_format="pcm",
            input="Hello there. Your pizza is on its way. Thank you for calling.") as response:
        assert response.headers["content-type"] == "audio/pcm"
        async for piece in response.iter_bytes():
            pieces.append(piece)
    await client.close()
    pcm = b"".join(pieces)
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 2.0  # 24 kHz PCM16, whole sentences
    voice = HttpSpeech(server.http_base_url, "gpt-4o-mini-tts", "alloy", api_key="sk-local")
    got = b"".join([p async for p in voice.speak("Hello there. Your pizza is on its way.")])
    await voice.aclose()
    assert len(got) % 2 == 0 and len(got) > 24000


async def test_a_wrong_key_and_bad_requests_are_clear(server: LocalRealtimeServer) -> None:
    import openai

    client = sdk(server, key="sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                    "content": "hi"}])
    await client.close()
    client = sdk(server)
    with pytest.raises(openai.BadRequestError, match=r"response_format 'opus'.*mp3, pcm"):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="hi",
                                         response_format="opus")
    with pytest.raises(openai.BadRequestError, match="WAV"):
        await client.audio.transcriptions.create(model="whisper-1",
                                                 file=("a.mp3", b"ID3....", "audio/mpeg"))
    await client.close()
    stt = HttpTranscriber(server.http_base_url, "whisper-1", api_key="sk-wrong")
    with pytest.raises(ChatError) as caught:
        await stt.transcribe(bytes(3200), 16000)
    await stt.aclose()
    assert caught.value.code == "http_401"
    assert "speech-to-text model" in str(caught.value) and "refused the API key" in str(
        caught.value)


async def test_the_realtime_websocket_still_answers_on_the_same_port(
        server: LocalRealtimeServer) -> None:
    client = AsyncOpenAI(api_key="sk-local", websocket_base_url=server.base_url)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        event = await connection.recv()
    assert event.type == "session.created"


# -- the shapes of OpenAI's audio endpoints, for the parsers -----------------------------


@pytest.mark.parametrize("name", ["transcription.json", "transcription_whisper.json"])
def test_transcription_shapes_are_the_sdks_and_parse(name: str) -> None:
    body = (AUDIO / name).read_bytes()
    conforms(Transcription, json.loads(body))

    async def answer(request: httpx.Request) -> httpx.Response:
        form = parse_form(request.content, boundary_of(request.headers["content-type"]))
        assert form["model"].data == b"gpt-4o-mini-transcribe"
        assert form["file"].filename == "turn.wav" and form["file"].data.startswith(b"RIFF")
        return httpx.Response(200, content=body)

    import asyncio

    async def run() -> str:
        stt = HttpTranscriber("http://api.test/v1", "gpt-4o-mini-transcribe",
                              transport=httpx.MockTransport(answer))
        try:
            return await stt.transcribe(bytes(3200), 16000)
        finally:
            await stt.aclose()

    assert asyncio.run(run()) == "How much is a pizza?"


async def test_speech_chunks_cut_mid_sample_come_out_whole_samples() -> None:
    recorded = json.loads((AUDIO / "speech_chunks.json").read_text())
    lengths = recorded["chunk_lengths"]
    body = bytes(i % 251 for i in range(sum(lengths)))

    class Chunked(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            at = 0
            for n in lengths:
                yield body[at:at + n]
                at += n

    def answer(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["response_format"] == "pcm"
        return httpx.Response(200, headers=recorded["headers"], stream=Chunked())

    voice = HttpSpeech("http://api.test/v1", "gpt-4o-mini-tts", "alloy",
                       transport=httpx.MockTransport(answer))
    pieces = [p async for p in voice.speak("Hello.")]
    await voice.aclose()
    assert all(len(p) % 2 == 0 for p in pieces)
    assert b"".join(pieces) == body[:len(body) - len(body) % 2]


def test_a_recorded_429_reads_its_retry_after() -> None:
    recorded = json.loads((AUDIO / "rate_limited.json").read_text())
    error = http_error(recorded["status"], json.dumps(recorded["body"]).encode(),
                       recorded["headers"], "https://api.openai.com/v1/audio/speech", "the voice")
    assert error.code == "http_429" and error.retry_after == 1.0
    assert str(error).startswith("the voice at https://api.openai.com/v1/audio/speech is rate")


async def test_closing_the_server_ends_idle_http_connections() -> None:
    server = LocalRealtimeServer(SCRIPT)
    await server.start()
    async with httpx.AsyncClient() as http:  # keeps its connection open between requests
        first = await http.post(server.http_base_url + "/chat/completions",
                                json={"model": "m", "messages": [{"role": "user",
                                                                  "content": "hi"}]})
        assert first.status_code == 200
        await asyncio.wait_for(server.close(), 5)
        with pytest.raises(httpx.TransportError):
            await http.post(server.http_base_url + "/chat/completions",
                            json={"model": "m", "messages": []})
