"""Wire fidelity: whole calls through a logging proxy, every event checked against the SDK.

pipeflow's Realtime client (``RealtimeClient`` over ``RealtimeProtocol``, what
the ``realtime`` stage sends through) talks to the local server through
``LoggingProxy`` on 127.0.0.1; afterwards each logged event, both ways, must
validate against the ``openai`` SDK's pydantic models of the connection's
shape (GA and beta), with no field the models do not declare. The calls
cover audio in and out, text, a tool round trip, a barge-in with truncation
(client side and server VAD), a cancel, client mistakes answered with
``error`` events and an injected server fault.

The cascade's endpoints (Chat Completions stream chunks, the audio
transcription and speech) get the same check in tests/test_cascade_wire.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

from pipeflow.agent import Agent
from pipeflow.audio import g711
from pipeflow.frames import AudioFrame, Frame, Say, TextInput, ToolCall, ToolResult, TurnCommitted
from pipeflow.frames import ResponseDone as FrameResponseDone
from pipeflow.pipeline import PipelineContext
from pipeflow.realtime import events as ev
from pipeflow.realtime.client import RealtimeClient
from pipeflow.realtime.options import RealtimeOptions, ReconnectOptions
from pipeflow.realtime.protocol import SessionConfig
from pipeflow.realtime.script import parse_script
from pipeflow.realtime.server_faults import Faults
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from pipeflow.registry import registry
from pipeflow.testing import run_stage
from pipeflow.tools import tool
from tests.realtime_fixtures import *  # noqa: F403
from tests.realtime_fixtures import StartServer
from tests.realtime_sdk import LoggingProxy, Shape, conformance_problems

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]},
}
RATE = 24000
WIRE_SCRIPT = parse_script("""\
greeting: "Hello from the test server."
turns:
  - match: [weather]
    user: "What is the weather in Paris?"
    steps:
      - say: "Let me check the weather in Paris for you, it takes a moment to look it up."
      - call: get_weather
        arguments: {location: "Paris"}
      - say: "It is {result.temperature} degrees in {result.city}, a fine day for a long walk
          along the river, so do enjoy it while it lasts."
  - user: "I would like to order."
    steps:
      - say: "Sure, what would you like?"
fallback:
  - say: "I did not catch that."
""", "<wire script>")
"""Long answers where the calls barge in, so the barge-in lands mid-answer."""


def tone(seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(rate * seconds))
    return (np.sin(2 * np.pi * 220 * t / rate) * 8000).astype("<i2").tobytes()


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(int(rate * seconds) * 2)


def chunks(pcm: bytes, rate: int = RATE) -> list[bytes]:
    step = rate // 50 * 2
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


Event = ev.ServerEvent | ev.UnknownEvent


async def read_until(client: RealtimeClient, done: Callable[[Event], bool],
                     seen: list[Event]) -> Event:
    """Read events (into ``seen``) until one satisfies ``done``; returns it."""
    try:
        async with asyncio.timeout(20):
            async for event in client.events():
                assert isinstance(event, ev.ServerEvent | ev.UnknownEvent), event
                seen.append(event)
                if done(event):
                    return event
    except TimeoutError:
        names = [getattr(e, "type", None) or e.__struct_config__.tag for e in seen]
        last = [name for name in names if "delta" not in name][-20:]
        raise AssertionError(f"no such event within 20 s; the last ones: {last}") from None
    raise AssertionError("the connection ended early")


def response_done(event: Event) -> bool:
    return isinstance(event, ev.ResponseDone)


def error_event(code: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, ev.ErrorEvent) and e.error.code == code


async def barge_in(client: RealtimeClient, seen: list[Event]) -> tuple[str, int]:
    """Wait for the answer's audio, then cancel it and truncate it at what was heard."""
    first = await read_until(client, lambda e: isinstance(e, ev.OutputAudioDelta), seen)
    assert isinstance(first, ev.OutputAudioDelta)
    heard_ms = len(first.delta) * 1000 // (2 * RATE)
    client.protocol.cancel_response()
    client.protocol.truncate(first.item_id, heard_ms)
    await client.flush()
    return first.item_id, heard_ms


async def local_commit_call(client: RealtimeClient, seen: list[Event]) -> None:
    """Greeting, a text turn with a tool call, a barge-in, an audio turn, mistakes."""
    proto = client.protocol
    proto.create_response()  # the greeting (the injected error event comes in it)
    await client.flush()
    await read_until(client, response_done, seen)

    proto.create_text_item("What is the weather in Paris?")
    proto.create_response()
    await client.flush()
    await read_until(client, response_done, seen)
    call = next(e for e in seen if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
    proto.create_function_output(call.call_id, json.dumps({"city": "Paris", "temperature": 21}))
    proto.create_response()
    await client.flush()
    item_id, heard_ms = await barge_in(client, seen)
    done = await read_until(client, response_done, seen)
    assert isinstance(done, ev.ResponseDone) and done.response.status == "cancelled"
    truncated = await read_until(client, lambda e: isinstance(e, ev.ConversationItemTruncated),
                                 seen)
    assert isinstance(truncated, ev.ConversationItemTruncated)
    assert (truncated.item_id, truncated.audio_end_ms) == (item_id, heard_ms)

    for chunk in chunks(tone(0.4)):
        proto.append_audio(chunk)
    proto.commit()
    proto.create_response()
    await client.flush()
    await read_until(client, response_done, seen)

    proto.append_audio(tone(0.02))
    proto.clear_audio()
    await client.flush()
    await read_until(client, lambda e: isinstance(e, ev.InputAudioBufferCleared), seen)

    proto.cancel_response()  # nothing to cancel
    await client.flush()
    await read_until(client, error_event("response_cancel_not_active"), seen)
    proto.commit()  # nothing to commit
    await client.flush()
    await read_until(client, error_event("input_audio_buffer_commit_empty"), seen)
    proto.truncate("item_unknown", 10)
    await client.flush()
    await read_until(client, error_event("item_truncate_invalid_item_id"), seen)


async def server_vad_call(client: RealtimeClient, seen: list[Event]) -> None:
    """A spoken turn ended by server VAD, then a barge-in the server detects."""
    proto, begin = client.protocol, len(seen)
    for chunk in chunks(silence(0.3, 8000) + tone(0.5, 8000) + silence(0.8, 8000), 8000):
        proto.append_audio(g711.ulaw_encode(chunk))
    await client.flush()
    await read_until(client, lambda e: isinstance(e, ev.OutputAudioDelta), seen)
    for chunk in chunks(tone(0.5, 8000) + silence(0.8, 8000), 8000):  # the caller talks over it
        proto.append_audio(g711.ulaw_encode(chunk))
    await client.flush()
    done = await read_until(client, response_done, seen)
    assert isinstance(done, ev.ResponseDone) and done.response.status == "cancelled"
    assert done.response.status_details == {"type": "cancelled", "reason": "turn_detected"}
    item = next(e.item for e in seen[begin:] if isinstance(e, ev.OutputItemAdded))
    proto.truncate(item.id or "", 20)
    await client.flush()
    start = len(seen)

    def both(_: Event) -> bool:  # the truncation, and the answer to the barge-in
        later = seen[start:]
        return any(isinstance(e, ev.ConversationItemTruncated) for e in later) and any(
            isinstance(e, ev.ResponseDone) and e.response.status == "completed" for e in later)

    await read_until(client, both, seen)


def check_log(proxy: LoggingProxy, shape: Shape) -> tuple[set[str], set[str]]:
    """Every logged event conforms and ids hang together; returns the types seen."""
    problems: list[str] = []
    for side, data in proxy.log:
        problems += [f"{side}: {p}" for p in conformance_problems(data, shape, side)]
    assert not problems, "\n".join(problems)
    server = [json.loads(d) for d in proxy.of("server")]
    ids = [e["event_id"] for e in server]
    assert len(ids) == len(set(ids)), "server event ids repeat"
    items: dict[str, tuple[str, int]] = {}
    for e in server:
        if e["type"] == "response.output_item.added":
            items[e["item"]["id"]] = (e["response_id"], e["output_index"])
        if "item_id" in e and "response_id" in e:  # deltas, parts, arguments
            assert items[e["item_id"]] == (e["response_id"], e["output_index"]), e
        if e["type"] == "response.output_item.done":
            assert items[e["item"]["id"]] == (e["response_id"], e["output_index"]), e
    session: dict[str, Any] = {}
    for e in server:  # responses say the session's output format, like the API's
        if e["type"] == "session.updated":
            session = e["session"]
        if e["type"] in ("response.created", "response.done"):
            response = e["response"]
            assert response["conversation_id"], e
            if shape == "ga":
                assert response["audio"]["output"]["format"] == \
                    session["audio"]["output"]["format"], e
            else:
                assert response["output_audio_format"] == session["output_audio_format"], e
    client = {json.loads(d)["type"] for d in proxy.of("client")}
    return client, {e["type"] for e in server}


GA_NAMES = {"audio": "response.output_audio.delta", "item": "conversation.item.added"}
BETA_NAMES = {"audio": "response.audio.delta", "item": "conversation.item.created"}


@pytest.mark.parametrize("shape", ["ga", "beta"])
async def test_a_whole_call_conforms_to_the_sdk_both_ways(
    shape: Shape, start_realtime_server: StartServer
) -> None:
    server = await start_realtime_server(
        script=WIRE_SCRIPT, speed=3.0, options=ServerOptions(speech="tones"),
        faults=Faults(error_after_deltas=2))
    upstream = server.url.removesuffix("/v1/realtime")
    async with LoggingProxy(upstream) as proxy:
        options = RealtimeOptions(url=proxy.url, shape=shape,
                                  reconnect=ReconnectOptions(attempts=0))
        session = SessionConfig(instructions="You are a weather assistant.", voice="marin",
                                tools=[WEATHER_TOOL], transcription_model="gpt-4o-transcribe")
        seen: list[Event] = []
        async with RealtimeClient(options, session=session) as client:
            await local_commit_call(client, seen)
        vad = SessionConfig(input_format="g711_ulaw", output_format="g711_ulaw",
                            turn_detection="server_vad", tools=[WEATHER_TOOL])
        async with RealtimeClient(options, session=vad) as client:
            await server_vad_call(client, seen)
    sent, received = check_log(proxy, shape)
    names = GA_NAMES if shape == "ga" else BETA_NAMES
    assert {"session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
            "input_audio_buffer.clear", "conversation.item.create", "response.create",
            "response.cancel", "conversation.item.truncate"} <= sent
    assert {"session.created", "session.updated", "error", names["audio"], names["item"],
            "response.function_call_arguments.done", "conversation.item.truncated",
            "conversation.item.input_audio_transcription.completed",
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "input_audio_buffer.cleared",
            "rate_limits.updated", "response.done"} <= received
    assert not [e for e in seen if isinstance(e, ev.UnknownEvent)]
    errors = [e.error for e in seen if isinstance(e, ev.ErrorEvent)]
    assert {e.type for e in errors} == {"invalid_request_error", "server_error"}


def get_weather(location: str) -> dict[str, Any]:
    """Get the current weather for a city."""
    return {"city": location, "temperature": 21}


def answer_tools(frame: Frame) -> Iterable[Frame]:
    if isinstance(frame, ToolCall):
        output = json.dumps(get_weather(**json.loads(frame.arguments)))
        yield ToolResult(call_id=frame.call_id, name=frame.name, output=output)


@pytest.mark.parametrize("shape", ["ga", "beta"])
async def test_the_realtime_stage_sends_what_the_sdk_accepts(
    shape: Shape, start_realtime_server: StartServer
) -> None:
    server = await start_realtime_server(script=WIRE_SCRIPT, options=ServerOptions(
        speech="tones"))
    async with LoggingProxy(server.url.removesuffix("/v1/realtime")) as proxy:
        stage = registry.resolve("realtime")(url=proxy.url, shape=shape, drain_timeout_s=10,
                                             reconnect={"attempts": 0})
        agent = Agent("You are a weather assistant.", tools=[tool(get_weather)])
        frames = [TextInput(text="What is the weather in Paris?"), Say(text="Anything else?"),
                  *[AudioFrame(pcm=c, sample_rate=RATE, pts=i * 0.02)
                    for i, c in enumerate(chunks(tone(0.3)))],
                  TurnCommitted(at=0.3)]
        result = await run_stage(stage, frames, respond=answer_tools,
                                 context=PipelineContext(agent=agent))
    assert not result.errors
    assert of_type(result.down, ToolCall) and len(of_type(result.down, FrameResponseDone)) >= 3
    sent, received = check_log(proxy, shape)
    assert {"session.update", "conversation.item.create", "response.create",
            "input_audio_buffer.append", "input_audio_buffer.commit"} <= sent
    assert "response.function_call_arguments.done" in received


def of_type(frames: list[Frame], cls: type) -> list[Any]:
    return [f for f in frames if isinstance(f, cls)]


GA_EMITS = {
    "session.created", "session.updated", "error", "conversation.item.added",
    "conversation.item.done", "conversation.item.truncated", "conversation.item.deleted",
    "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "conversation.item.input_audio_transcription.completed", "response.created",
    "response.done", "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done",
    "response.output_audio.delta", "response.output_audio.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.output_text.delta", "response.output_text.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "rate_limits.updated",
}
"""Every event type the local server emits in the GA shape."""
BETA_EMITS = (GA_EMITS - {"conversation.item.added", "conversation.item.done"}) | {
    "conversation.item.created"}
for _ga, _beta in [("output_audio", "audio"), ("output_audio_transcript", "audio_transcript"),
                   ("output_text", "text")]:
    for _end in ("delta", "done"):
        BETA_EMITS = (BETA_EMITS - {f"response.{_ga}.{_end}"}) | {f"response.{_beta}.{_end}"}


class Driver:
    """A ``ServerSession`` fed client events (each checked against the SDK first)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.session = ServerSession(WIRE_SCRIPT, ServerOptions(
            speech="tones", speed=0, faults=Faults(error_after_deltas=1)), shape=shape)
        self.session.start(0.0)
        self.out: list[bytes] = []

    def send(self, event: dict[str, Any] | str, valid: bool = True) -> list[dict[str, Any]]:
        data = event if isinstance(event, str) else json.dumps(event)
        if valid:
            assert not conformance_problems(data, self.shape, "client"), data
        self.session.receive_data(data, 0.0)
        return self.read()

    def read(self) -> list[dict[str, Any]]:
        out = self.session.data_to_send(0.0)
        self.out += out
        return [json.loads(d) for d in out]

    def update(self, ga: dict[str, Any], beta: dict[str, Any]) -> None:
        session = {"type": "realtime", **ga} if self.shape == "ga" else beta
        self.send({"type": "session.update", "session": session})


def first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


@pytest.mark.parametrize("shape", ["ga", "beta"])
def test_every_event_the_local_server_emits_conforms(shape: Shape) -> None:
    wire = Driver(shape)
    alaw = {"type": "audio/pcma"}
    wire.update({"audio": {"input": {"format": alaw, "turn_detection": None,
                                     "transcription": {"model": "whisper-1"}},
                           "output": {"format": alaw, "voice": "cedar"}},
                 "tools": [WEATHER_TOOL]},
                {"input_audio_format": "g711_alaw", "output_audio_format": "g711_alaw",
                 "turn_detection": None, "voice": "ash", "tools": [WEATHER_TOOL],
                 "input_audio_transcription": {"model": "whisper-1"}})
    wire.send({"type": "response.create"})  # the greeting, with the injected error
    events = wire.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "What is the weather?"}]}})
    user_item = events[0]["item"]["id"]
    events = wire.send({"type": "response.create"})
    call = first(events, "response.function_call_arguments.done")
    wire.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call["call_id"],
        "output": json.dumps({"city": "Paris", "temperature": 21})}})
    events = wire.send({"type": "response.create"})
    answer = first(events, "response.output_item.added")["item"]["id"]
    wire.send({"type": "conversation.item.truncate", "item_id": answer, "content_index": 0,
               "audio_end_ms": 10})
    wire.send({"type": "conversation.item.delete", "item_id": user_item})
    audio = g711.alaw_encode(tone(0.3, 8000))
    wire.send({"type": "input_audio_buffer.append",
               "audio": base64.b64encode(audio).decode()})
    wire.send({"type": "input_audio_buffer.commit"})
    wire.send({"type": "input_audio_buffer.append",
               "audio": base64.b64encode(audio[:160]).decode()})
    wire.send({"type": "input_audio_buffer.clear"})
    wire.update({"output_modalities": ["text"]}, {"modalities": ["text"]})
    wire.send({"type": "response.create"})
    wire.update({"output_modalities": ["audio"], "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad"}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}},
        {"modalities": ["audio", "text"], "input_audio_format": "pcm16",
         "output_audio_format": "pcm16", "turn_detection": {"type": "server_vad"}})
    for chunk in chunks(silence(0.3) + tone(0.5) + silence(0.8)):
        wire.session.receive_data(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(chunk).decode()}), 0.0)
    wire.session.receive_data('{"type": "response.cancel"}', 0.0)  # before any of it is read
    wire.read()
    wire.send('{"type": "response.create"', valid=False)  # not JSON
    wire.send('{"type": "response.bogus"}', valid=False)
    wire.send({"type": "session.update", "session": {"voice": 7}}, valid=False)
    wire.send({"type": "response.cancel", "event_id": "c_1"})
    wire.send({"type": "input_audio_buffer.commit"})
    problems = [p for data in wire.out for p in conformance_problems(data, shape, "server")]
    assert not problems, "\n".join(problems)
    emitted = [json.loads(d) for d in wire.out]
    assert {e["type"] for e in emitted} == (GA_EMITS if shape == "ga" else BETA_EMITS)
    errors = [e["error"] for e in emitted if e["type"] == "error"]
    assert {(e["type"], e["code"]) for e in errors} >= {
        ("server_error", "server_error"), ("invalid_request_error", "invalid_json"),
        ("invalid_request_error", "response_cancel_not_active")}
    assert [e["event_id"] for e in errors if e["code"] == "response_cancel_not_active"] == ["c_1"]
    usage = first(emitted, "conversation.item.input_audio_transcription.completed")["usage"]
    assert usage == {"type": "duration", "seconds": 0.3}
    cancelled = [e["response"] for e in emitted
                 if e["type"] == "response.done" and e["response"]["status"] == "cancelled"]
    assert cancelled and all(r["usage"]["total_tokens"] > 0 for r in cancelled)


# --- the cascade ------------------------------------------------------------------
# The cascade's Chat Completions stream and audio endpoints, served on the same port
# as this Realtime server, get the same check in tests/test_cascade_wire.py: each
# streamed chunk against ``openai.types.chat.ChatCompletionChunk``, the
# transcription against ``openai.types.audio``, read by the SDK through a
# recording transport.
