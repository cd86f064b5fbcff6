"""The ``realtime`` transport stage against a scripted Realtime peer on 127.0.0.1.

Each test's peer plays the model exactly (what it answers to which client
event), so turns, tools, barge-in, errors and dropped connections are
checked frame by frame with no timing luck.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection

from pipeflow.agent import Agent
from pipeflow.audio import g711
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
    ModelEvent,
    PlayoutPosition,
    ResponseDone,
    ResponseStarted,
    Say,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.pipeline import Pipeline, PipelineContext
from pipeflow.realtime.server import LocalRealtimeServer
from pipeflow.registry import registry
from pipeflow.stage import Frames, Stage
from pipeflow.stages.realtime import RealtimeTransport
from pipeflow.testing import run_stage
from pipeflow.tools import tool
from pipeflow.turns import Turn
from tests.speech import need_tts, spoken
from tests.test_realtime_client import Peer, send

TONE = (np.sin(np.arange(480) / 5) * 8000).astype("<i2").tobytes()  # 20 ms at 24 kHz


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def caller_audio(count: int = 3, rate: int = 24000) -> list[AudioFrame]:
    size = rate // 50
    pcm = TONE[: size * 2] if rate == 24000 else (np.ones(size) * 1000).astype("<i2").tobytes()
    return [AudioFrame(pcm=pcm, sample_rate=rate, pts=i * 0.02) for i in range(count)]


async def speak(ws: ServerConnection, rid: str, item: str, text: str = "Hello there.",
                chunks: int = 3, status: str = "completed", done: bool = True) -> None:
    """Play one spoken response: created, audio, transcript, done."""
    await send(ws, {"type": "response.created",
                    "response": {"id": rid, "status": "in_progress"}})
    await send(ws, {"type": "response.output_item.added", "response_id": rid,
                    "item": {"id": item, "type": "message", "role": "assistant"}})
    for _ in range(chunks):
        await send(ws, {"type": "response.output_audio.delta", "response_id": rid,
                        "item_id": item, "delta": b64(TONE)})
    for word in text.split():
        await send(ws, {"type": "response.output_audio_transcript.delta", "response_id": rid,
                        "item_id": item, "delta": word + " "})
    await send(ws, {"type": "response.output_audio_transcript.done", "response_id": rid,
                    "item_id": item, "transcript": text})
    if done:
        await send(ws, {"type": "response.done", "response": {
            "id": rid, "status": status, "usage": {"total_tokens": 5, "input_token_details": {}}
        }})


async def call_tools(ws: ServerConnection, rid: str, calls: list[tuple[str, str, dict]]) -> None:
    """Play a response made of function calls only."""
    await send(ws, {"type": "response.created", "response": {"id": rid}})
    for index, (call_id, name, args) in enumerate(calls):
        item = {"id": f"fc_{call_id}", "type": "function_call", "call_id": call_id,
                "name": name, "arguments": ""}
        await send(ws, {"type": "response.output_item.added", "response_id": rid,
                        "output_index": index, "item": item})
        await send(ws, {"type": "response.function_call_arguments.done", "response_id": rid,
                        "item_id": item["id"], "output_index": index, "call_id": call_id,
                        "name": name, "arguments": json.dumps(args)})
    await send(ws, {"type": "response.done", "response": {"id": rid, "status": "completed"}})


def transport(peer: Peer, **options: Any) -> RealtimeTransport:
    options.setdefault("reconnect", {"attempts": 0, "backoff_s": 0})
    options.setdefault("connect_timeout_s", 5)
    options.setdefault("drain_timeout_s", 5)
    return registry.resolve("realtime")(url=peer.url, **options)


def of(frames: list[Frame], cls: type) -> list[Any]:
    return [f for f in frames if isinstance(f, cls)]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OAI_REALTIME_URL", "OPENAI_API_KEY", "OAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


# --- a voice turn -----------------------------------------------------------------


async def test_voice_turn_appends_commits_and_streams_the_answer() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await send(ws, {"type": "conversation.item.input_audio_transcription.completed",
                        "item_id": "user_1", "content_index": 0,
                        "transcript": "What does a pizza cost?"})
        await speak(ws, "resp_1", "item_1", "A pizza costs nine euros.")
        await peer.rest(ws)

    async with Peer(model) as peer:
        stage = transport(peer, instructions="Be brief.")
        frames = [*caller_audio(3), TurnCommitted(at=0.06)]
        result = await run_stage(stage, frames)
    down = result.down
    assert isinstance(down[0], SessionStarted)
    assert isinstance(down[-1], EndOfStream) and not result.errors
    assert of(down, TurnCommitted) and len(of(down, AudioFrame)) == 3 + 3  # caller + agent
    sent = peer.received
    assert [e["type"] for e in sent] == ["session.update"] + ["input_audio_buffer.append"] * 3 + [
        "input_audio_buffer.commit", "response.create"]
    assert base64.b64decode(sent[1]["audio"]) == TONE
    assert sent[0]["session"]["instructions"] == "Be brief."
    agent_audio = [f for f in of(down, AudioFrame) if f.item_id]
    assert all(f.sample_rate == 24000 and f.item_id == "item_1" for f in agent_audio)
    assert [f.pts for f in agent_audio] == pytest.approx([0.0, 0.02, 0.04])
    assert of(down, ResponseStarted)[0].response_id == "resp_1"
    done = of(down, ResponseDone)[0]
    assert (done.response_id, done.status, done.usage) == ("resp_1", "completed",
                                                           {"total_tokens": 5})
    transcripts = of(down, Transcript)
    assert transcripts[0] == Transcript(role="user", text="What does a pizza cost?",
                                        item_id="user_1")
    agent = [t for t in transcripts if t.role == "agent"]
    assert "".join(t.text for t in agent if not t.final).strip() == "A pizza costs nine euros."
    assert agent[-1] == Transcript(role="agent", text="A pizza costs nine euros.", final=True,
                                   item_id="item_1")
    [metric] = of(down, Metric)
    assert metric.name == "commit_to_first_audio" and metric.unit == "s"
    assert 0 <= metric.value < 5
    assert down.index(metric) < down.index(agent_audio[0])
    assert stage.turns.history == [Turn.IDLE, Turn.THINKING, Turn.SPEAKING, Turn.IDLE,
                                   Turn.CLOSED]


async def test_audio_at_the_wrong_rate_is_a_config_error_with_a_hint() -> None:
    async with Peer(Peer.idle) as peer:
        result = await run_stage(transport(peer), caller_audio(1, rate=16000))
    [error] = result.errors
    assert error.fatal and error.stage == "realtime"
    assert "takes 24000 Hz audio" in error.message and "16000 Hz" in error.message
    assert "add a 'resample' stage (rate: 24000)" in error.message


async def test_g711_in_and_out() -> None:
    ulaw_audio = g711.ulaw_encode(TONE[:320])

    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await send(ws, {"type": "response.created", "response": {"id": "r"}})
        await send(ws, {"type": "response.output_audio.delta", "item_id": "it",
                        "delta": b64(ulaw_audio)})
        await send(ws, {"type": "response.done", "response": {"id": "r"}})
        await peer.rest(ws)

    async with Peer(model) as peer:
        stage = transport(peer, input_format="g711_ulaw", output_format="g711_ulaw")
        assert stage.input_rate == 8000
        result = await run_stage(stage, [*caller_audio(1, rate=8000), TurnCommitted()])
    update, append = peer.received[:2]
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    sent = base64.b64decode(append["audio"])
    assert len(sent) == 160  # one byte per sample
    assert sent == g711.ulaw_encode(caller_audio(1, rate=8000)[0].pcm)
    [out] = [f for f in of(result.down, AudioFrame) if f.item_id]
    assert out.sample_rate == 8000 and out.pcm == g711.ulaw_decode(ulaw_audio)


async def test_a_commit_with_no_audio_asks_for_nothing() -> None:
    async with Peer(Peer.idle) as peer:
        result = await run_stage(transport(peer), [TurnCommitted()])
    assert not result.errors and peer.types() == ["session.update"]


# --- text, say, agent -------------------------------------------------------------


@tool
def price(item: str) -> dict:
    """Price of a menu item."""
    return {"item": item, "price": 9}


async def test_text_input_and_say_and_the_agent_session() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        for n in range(2):
            while (await peer.recv(ws))["type"] != "response.create":
                pass
            await speak(ws, f"r{n}", f"i{n}", "Sure.")
        await peer.rest(ws)

    agent = Agent("You sell pizza.", tools=[price], voice="cedar", model="gpt-realtime-mini")
    async with Peer(model) as peer:
        stage = transport(peer)
        context = PipelineContext(agent=agent)
        result = await run_stage(stage, [TextInput(text="Hi!"), Say(text="Welcome to Pizza.")],
                                 context=context)
    assert not result.errors
    update, item, first, second = peer.received
    session = update["session"]
    assert session["instructions"] == "You sell pizza."
    assert session["audio"]["output"]["voice"] == "cedar"
    assert [t["name"] for t in session["tools"]] == ["price"]
    assert peer.requests[0].path.endswith("model=gpt-realtime-mini")
    assert item["item"]["content"] == [{"type": "input_text", "text": "Hi!"}]
    assert first["type"] == "response.create" and "response" not in first
    # Say waits for the first answer to finish, then asks for the text verbatim
    assert second["response"]["metadata"] == {"say": "Welcome to Pizza."}
    assert "Welcome to Pizza." in second["response"]["instructions"]
    assert len(of(result.down, ResponseDone)) == 2


async def test_session_options_win_over_the_agent() -> None:
    agent = Agent("agent text", voice="cedar")
    async with Peer(Peer.idle) as peer:
        stage = transport(peer, instructions="option text", voice="marin", shape="beta",
                          turn_detection="server_vad")
        await run_stage(stage, [], context=PipelineContext(agent=agent))
    session = peer.received[0]["session"]
    assert session["instructions"] == "option text" and session["voice"] == "marin"
    assert session["turn_detection"] == {"type": "server_vad"}


# --- tools ------------------------------------------------------------------------


def answer_tools(frame: Frame) -> Iterable[Frame]:
    if isinstance(frame, ToolCall):
        args = json.loads(frame.arguments)
        yield ToolResult(call_id=frame.call_id, name=frame.name,
                         output=json.dumps({"price": 9, "item": args["item"]}))


async def test_tool_results_go_back_as_outputs_then_one_response() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await call_tools(ws, "r1", [("call_a", "price", {"item": "pizza"}),
                                    ("call_b", "price", {"item": "salad"})])
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await speak(ws, "r2", "i2", "Pizza nine, salad nine.")
        await peer.rest(ws)

    async with Peer(model) as peer:
        result = await run_stage(transport(peer), [TextInput(text="Prices?")],
                                 respond=answer_tools)
    assert not result.errors
    calls = of(result.down, ToolCall)
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "price", {"item": "pizza"}), ("call_b", "price", {"item": "salad"})]
    assert not of(result.down, ToolResult)  # consumed: the tools stage reports results itself
    tail = peer.received[-3:]
    assert [e["type"] for e in tail] == ["conversation.item.create"] * 2 + ["response.create"]
    assert [e["item"]["call_id"] for e in tail[:2]] == ["call_a", "call_b"]
    assert json.loads(tail[1]["item"]["output"]) == {"price": 9, "item": "salad"}
    assert tail[0]["item"]["type"] == "function_call_output"
    assert of(result.down, Transcript)[-1].text == "Pizza nine, salad nine."


async def test_beta_function_calls_take_the_name_from_the_output_item() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await send(ws, {"type": "response.created", "response": {"id": "r1"}})
        await send(ws, {"type": "response.output_item.added", "response_id": "r1",
                        "item": {"id": "fc", "type": "function_call", "call_id": "c1",
                                 "name": "price"}})
        await send(ws, {"type": "response.function_call_arguments.done", "item_id": "fc",
                        "call_id": "c1", "arguments": '{"item": "tea"}'})
        await send(ws, {"type": "response.output_item.done", "response_id": "r1",
                        "item": {"id": "fc", "type": "function_call", "call_id": "c1",
                                 "name": "price", "arguments": '{"item": "tea"}'}})
        await send(ws, {"type": "response.done", "response": {"id": "r1"}})
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await speak(ws, "r2", "i2", "Tea is nine.")
        await peer.rest(ws)

    async with Peer(model) as peer:
        result = await run_stage(transport(peer, shape="beta"), [TextInput(text="Tea?")],
                                 respond=answer_tools)
    [call] = of(result.down, ToolCall)  # once, though two events describe it
    assert (call.call_id, call.name) == ("c1", "price")


async def test_a_tool_that_never_answers_gets_an_error_result() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await call_tools(ws, "r1", [("call_x", "slow_tool", {})])
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await speak(ws, "r2", "i2", "Sorry, that failed.")
        await peer.rest(ws)

    async with Peer(model) as peer:
        stage = transport(peer, tool_timeout_s=0.05)
        result = await run_stage(stage, [TextInput(text="Go")])  # nobody answers tool calls
    [error] = result.errors
    assert not error.fatal and error.code == "tool_timeout" and "slow_tool" in error.message
    output = [e for e in peer.received if e["type"] == "conversation.item.create"][-1]["item"]
    assert output["call_id"] == "call_x"
    assert "did not answer within 0.05 s" in json.loads(output["output"])["error"]
    assert peer.types()[-1] == "response.create"
    assert of(result.down, ResponseDone)[-1].response_id == "r2"


# --- barge-in ---------------------------------------------------------------------


def played_on_interrupt(frame: Frame) -> Iterable[Frame]:
    """A sink that had played 40 ms of the agent's item when interrupted."""
    if isinstance(frame, Interrupt):
        yield PlayoutPosition(item_id="item_1", played_ms=40, interrupted=True)


async def test_server_vad_barge_in_cancels_interrupts_and_truncates() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await speak(ws, "r1", "item_1", "A long answer", chunks=2, done=False)
        await send(ws, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1500,
                        "item_id": "user_2"})
        while (await peer.recv(ws))["type"] != "response.cancel":
            pass
        await send(ws, {"type": "response.output_audio.delta", "response_id": "r1",
                        "item_id": "item_1", "delta": b64(TONE)})  # in flight: dropped
        await send(ws, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2100,
                        "item_id": "user_2"})
        await send(ws, {"type": "response.done", "response": {"id": "r1",
                                                              "status": "cancelled"}})
        await peer.rest(ws)

    async with Peer(model) as peer:
        stage = transport(peer, turn_detection="server_vad")
        result = await run_stage(stage, [TextInput(text="Tell me everything")],
                                 respond=played_on_interrupt)
    down = result.down
    [interrupt] = of(down, Interrupt)
    assert interrupt.reason == "barge_in"
    started = of(down, SpeechStarted)[0]
    assert (started.at, started.item_id) == (1.5, "user_2")
    assert of(down, SpeechStopped)[0].at == 2.1
    assert len([f for f in of(down, AudioFrame) if f.item_id]) == 2  # the late delta dropped
    assert of(down, ResponseDone)[0].status == "cancelled"
    truncate = [e for e in peer.received if e["type"] == "conversation.item.truncate"]
    assert truncate == [{"type": "conversation.item.truncate", "item_id": "item_1",
                         "content_index": 0, "audio_end_ms": 40}]
    assert Turn.LISTENING in stage.turns.history


class Gated(Stage):
    """A source that yields frames as the test releases them."""

    def __init__(self, frames: Callable[[], AsyncIterator[Frame]]) -> None:
        super().__init__()
        self.frames = frames

    async def process(self, frames: Frames) -> Frames:
        async for frame in self.frames():
            yield frame


class Recorder(Stage):
    """Records what leaves the transport and plays a sink's feedback."""

    def __init__(self, respond: Callable[[Frame], Iterable[Frame]]) -> None:
        super().__init__()
        self.respond = respond
        self.seen: list[Frame] = []
        self.audio = asyncio.Event()

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            self.seen.append(frame)
            if isinstance(frame, AudioFrame) and frame.item_id:
                self.audio.set()
            for reply in self.respond(frame):
                self.ctx.send_upstream(reply)
            yield frame


async def barge_in(
    on_cancel: Callable[[ServerConnection, dict[str, Any]], Awaitable[None]],
) -> tuple[Peer, list[Frame], Recorder]:
    """A long answer, then the caller speaks over it; ``on_cancel`` is the model's reply
    to the response.cancel. Returns the peer, the frames out and the recorder."""
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        while True:
            event = await peer.recv(ws)
            if event["type"] == "response.create":
                await speak(ws, "r1", "item_1", "Long", chunks=2, done=False)
            elif event["type"] == "response.cancel":
                await on_cancel(ws, event)

    recorder = Recorder(played_on_interrupt)

    async def source() -> AsyncIterator[Frame]:
        yield TextInput(text="Talk")
        await recorder.audio.wait()
        yield SpeechStarted(at=3.0)
        yield SpeechStopped(at=3.5)

    async with Peer(model) as peer:
        pipeline = Pipeline([Gated(source), transport(peer), recorder])
        out = [frame async for frame in pipeline.stream()]
    return peer, out, recorder


async def test_upstream_vad_barge_in_and_a_cancel_from_the_app() -> None:
    async def cancelled(ws: ServerConnection, event: dict[str, Any]) -> None:
        await send(ws, {"type": "response.done", "response": {"id": "r1", "status": "cancelled"}})

    peer, out, recorder = await barge_in(cancelled)
    assert out == recorder.seen
    assert [type(f) for f in out if isinstance(f, Interrupt | SpeechStarted)] == [
        Interrupt, SpeechStarted]
    assert "response.cancel" in peer.types()
    assert peer.received[-1]["type"] == "conversation.item.truncate"
    assert of(out, ResponseDone)[0].status == "cancelled"


async def test_a_cancel_that_raced_the_end_of_the_answer_is_no_error() -> None:
    """The server ended the answer just before the barge-in's response.cancel arrived."""
    async def too_late(ws: ServerConnection, event: dict[str, Any]) -> None:
        await send(ws, {"type": "response.done", "response": {"id": "r1", "status": "completed"}})
        await send(ws, {"type": "error", "event_id": "evt_9", "error": {
            "type": "invalid_request_error", "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found.",
            "event_id": event.get("event_id")}})

    peer, out, _ = await barge_in(too_late)
    assert "response.cancel" in peer.types()
    assert of(out, ErrorFrame) == []
    assert of(out, ResponseDone)[0].status == "completed"


async def test_an_interrupt_with_nothing_playing_still_reaches_the_sink() -> None:
    async with Peer(Peer.idle) as peer:
        result = await run_stage(transport(peer), [Interrupt(reason="cancel")])
    assert of(result.down, Interrupt) == [Interrupt(reason="cancel")]
    assert "response.cancel" not in peer.types()  # no response was active


# --- errors and faults ------------------------------------------------------------


async def test_server_error_events_become_non_fatal_error_frames() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        event = await peer.recv(ws)  # the response.create
        await send(ws, {"type": "output_audio_buffer.started", "response_id": "r"})
        await send(ws, {"type": "error", "event_id": "evt_1", "error": {
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": "Busy.", "event_id": event.get("event_id")}})
        await peer.rest(ws)

    async with Peer(model) as peer:
        result = await run_stage(transport(peer), [Say(text="hello")])
    [error] = result.errors
    assert not error.fatal
    assert error.code == "conversation_already_has_active_response"
    assert error.error_type == "invalid_request_error"
    assert error.event_id == peer.received[-1]["event_id"]
    assert "invalid_request_error" in error.message and "Busy." in error.message
    [unknown] = of(result.down, ModelEvent)
    assert unknown.event == "output_audio_buffer.started" and unknown.data["response_id"] == "r"
    assert isinstance(result.down[-1], EndOfStream)  # the failed request does not block the end


async def test_connection_lost_for_good_mid_response_ends_with_a_fatal_error() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await peer.recv(ws)
        await speak(ws, "r1", "item_1", "Half", chunks=1, done=False)
        await ws.close(1011, "server went away")

    async with Peer(model) as peer:
        result = await asyncio.wait_for(
            run_stage(transport(peer), [TextInput(text="Hi")], end=False), 10)
    down = result.down
    [error] = result.errors
    assert error.fatal and error.code == "connection_lost"
    assert "1011" in error.message and "server went away" in error.message
    assert of(down, ResponseDone)[-1].status == "failed"
    assert isinstance(down[-1], EndOfStream)


async def test_connection_lost_mid_response_reconnects_and_goes_on() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        if peer.connections == 1:
            await peer.recv(ws)
            await speak(ws, "r1", "item_1", "Half", chunks=1, done=False)
            await ws.close(1011, "restart")
            return
        while (await peer.recv(ws))["type"] != "response.create":
            pass
        await speak(ws, "r2", "item_2", "Back again.")
        await peer.rest(ws)

    async with Peer(model) as peer:
        stage = transport(peer, reconnect={"attempts": 2, "backoff_s": 0})
        pipeline = Pipeline([Gated(lambda: reconnecting_source(stage)), stage])
        out = [frame async for frame in pipeline.stream()]
    errors = of(out, ErrorFrame)
    assert [e.code for e in errors] == ["reconnected"]
    assert not errors[0].fatal and "answer in progress was lost" in errors[0].message
    assert [d.status for d in of(out, ResponseDone)] == ["failed", "completed"]
    assert peer.types().count("session.update") == 2
    assert of(out, Transcript)[-1].text == "Back again."
    assert isinstance(out[-1], EndOfStream)


async def reconnecting_source(stage: RealtimeTransport) -> AsyncIterator[Frame]:
    """Asks again once the first response is over (it never completes: the connection drops)."""
    failed = asyncio.Event()
    stage.turns.on_change = lambda step: failed.set() if step.after is Turn.IDLE else None
    yield TextInput(text="Hi")
    await asyncio.wait_for(failed.wait(), 10)
    yield TextInput(text="Are you there?")


async def test_end_of_stream_waits_for_the_answer_within_the_drain_timeout() -> None:
    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await peer.recv(ws)
        await speak(ws, "r1", "item_1", "Never ends", chunks=1, done=False)
        await peer.rest(ws)

    async with Peer(model) as peer:
        result = await run_stage(transport(peer, drain_timeout_s=0.1), [TextInput(text="Hi")])
    [error] = result.errors
    assert not error.fatal and "drain_timeout_s=0.1" in error.message
    assert isinstance(result.down[-1], EndOfStream)
    assert of(result.down, Transcript)  # the answer was passed on while waiting


async def test_a_slow_consumer_holds_the_model_back_without_losing_frames() -> None:
    count = 300

    async def model(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await peer.recv(ws)
        await send(ws, {"type": "response.created", "response": {"id": "r"}})
        for n in range(count):
            await send(ws, {"type": "response.output_audio.delta", "item_id": "it",
                            "delta": b64(n.to_bytes(2, "little") * 240)})
        await send(ws, {"type": "response.done", "response": {"id": "r"}})
        await peer.rest(ws)

    release = asyncio.Event()
    peak = 0

    class Slow(Stage):
        async def process(self, frames: Frames) -> Frames:
            nonlocal peak
            async for frame in frames:
                if isinstance(frame, AudioFrame) and not release.is_set():
                    inbox = stage.ctx.inbox
                    assert inbox is not None
                    while len(inbox) < inbox.maxsize:  # let the reader fill the stage's input
                        await asyncio.sleep(0.001)
                    for _ in range(20):  # and give it every chance to overfill it
                        await asyncio.sleep(0)
                        peak = max(peak, len(inbox))
                    release.set()
                yield frame

    async with Peer(model) as peer:
        stage = transport(peer)
        pipeline = Pipeline([Gated(lambda: single(TextInput(text="go"))), stage, Slow()],
                            inbox_size=8)
        out = [frame async for frame in pipeline.stream()]
    assert peak <= 8 + 1
    audio = [f for f in of(out, AudioFrame) if f.item_id]
    assert [int.from_bytes(f.pcm[:2], "little") for f in audio] == list(range(count))


async def single(frame: Frame) -> AsyncIterator[Frame]:
    yield frame


# --- against the local Realtime server (the embedded default) -----------------------

SCRIPT = """\
turns:
  - match: [pizza]
    user: "What does a pizza cost?"
    steps:
      - say: "Let me check."
      - call: price
        arguments: {item: pizza}
      - say: "A pizza costs {result.price} euros."
  - user: "Thanks, bye."
    steps:
      - say: "Goodbye!"
"""


@pytest.fixture
def script(tmp_path: Any) -> str:
    path = tmp_path / "script.yaml"
    path.write_text(SCRIPT)
    return str(path)


def speech_frames(text: str) -> list[Frame]:
    samples = spoken(text, 24000)
    pcm = np.concatenate([samples, np.zeros(24000, dtype=np.int16)]).astype("<i2")
    data = pcm.tobytes()
    size = 960
    return [AudioFrame(pcm=data[i : i + size], sample_rate=24000, pts=i / 48000)
            for i in range(0, len(data) - size + 1, size)]


async def test_with_no_url_and_no_key_the_stage_runs_the_local_server(script: str) -> None:
    need_tts()
    stage = registry.resolve("realtime")(script=script, speed=0, drain_timeout_s=10)
    agent = Agent("You sell pizza.", tools=[price])
    pipeline = Pipeline([Gated(lambda: single(TextInput(text="How much is a pizza?"))), stage,
                         registry.resolve("tools")()],
                        context=PipelineContext(agent=agent))
    out = [frame async for frame in pipeline.stream()]
    assert not of(out, ErrorFrame), of(out, ErrorFrame)
    assert stage.server is None  # stopped at the end
    [call] = of(out, ToolCall)
    assert (call.name, json.loads(call.arguments)) == ("price", {"item": "pizza"})
    [result] = of(out, ToolResult)
    assert json.loads(result.output)["price"] == 9
    finals = [t.text for t in of(out, Transcript) if t.role == "agent" and t.final]
    assert finals == ["Let me check.", "A pizza costs 9 euros."]
    audio = [f for f in of(out, AudioFrame) if f.item_id]
    assert audio and all(f.sample_rate == 24000 for f in audio)
    samples = np.frombuffer(b"".join(f.pcm for f in audio), dtype="<i2")
    assert np.sqrt(np.mean(samples.astype(float) ** 2)) > 300  # real speech, not silence
    assert [d.status for d in of(out, ResponseDone)] == ["completed", "completed"]
    assert of(out, Metric)


async def test_a_spoken_turn_with_local_commit_and_server_vad(script: str) -> None:
    need_tts()
    frames = speech_frames("What does a pizza cost?")
    async with LocalRealtimeServer(script=script, port=0, speed=0) as server:
        local = transport_at(server.url)
        result = await run_stage(local, [*frames, TurnCommitted()], respond=answer_tools)
        assert not result.errors, result.errors
        user = [t for t in of(result.down, Transcript) if t.role == "user"]
        assert user[0].text == "What does a pizza cost?"
        assert of(result.down, ToolCall)[0].name == "price"

        # Server VAD: a caller who stays on the line until the server heard the turn end.
        recorder = Recorder(answer_tools)
        stopped = asyncio.Event()

        async def caller() -> AsyncIterator[Frame]:
            for frame in frames:
                yield frame
            await asyncio.wait_for(stopped.wait(), 10)  # fails the test if never heard

        def watch(frame: Frame) -> Iterable[Frame]:
            if isinstance(frame, SpeechStopped):
                stopped.set()
            return answer_tools(frame)

        recorder.respond = watch
        vad = transport_at(server.url, turn_detection="server_vad")
        out = [f async for f in Pipeline([Gated(caller), vad, recorder]).stream()]
        assert not of(out, ErrorFrame), of(out, ErrorFrame)
        started, stopped_at = of(out, SpeechStarted)[0], of(out, SpeechStopped)[0]
        assert 0 <= started.at < stopped_at.at < 3
        assert of(out, ToolCall)[0].name == "price"
        assert of(out, ResponseDone)[-1].status == "completed"
        assert of(out, Transcript)[0].role == "user"


async def test_server_vad_input_ending_mid_turn_commits_it(script: str) -> None:
    need_tts()
    speech = speech_frames("What does a pizza cost?")[:40]  # cut off mid-sentence
    async with LocalRealtimeServer(script=script, port=0, speed=0) as server:
        recorder = Recorder(answer_tools)

        heard = asyncio.Event()

        async def caller() -> AsyncIterator[Frame]:
            for frame in speech:
                yield frame
            await asyncio.wait_for(heard.wait(), 10)  # the server heard speech start

        vad = transport_at(server.url, turn_detection="server_vad")
        vad.turns.on_change = lambda step: heard.set() if step.after is Turn.LISTENING else None
        out = [f async for f in Pipeline([Gated(caller), vad, recorder]).stream()]
    assert not of(out, ErrorFrame), of(out, ErrorFrame)
    assert of(out, SpeechStarted) and of(out, ToolCall)


def transport_at(url: str, **options: Any) -> RealtimeTransport:
    options.setdefault("drain_timeout_s", 10)
    return registry.resolve("realtime")(url=url, **options)


async def test_say_through_the_local_server_is_spoken_verbatim(script: str) -> None:
    need_tts()
    stage = registry.resolve("realtime")(script=script, speed=0, drain_timeout_s=10)
    result = await run_stage(stage, [Say(text="Welcome to the order line.")])
    assert not result.errors, result.errors
    finals = [t.text for t in of(result.down, Transcript) if t.role == "agent" and t.final]
    assert finals == ["Welcome to the order line."]
    assert [f for f in of(result.down, AudioFrame) if f.item_id]


async def test_a_resample_stage_at_another_rate_gets_its_own_hint() -> None:
    async with Peer(Peer.idle) as peer:
        async def audio() -> AsyncIterator[Frame]:
            for frame in caller_audio(10):
                yield frame

        stages = [Gated(audio),
                  registry.resolve("resample")(rate=16000), transport(peer)]
        out = [f async for f in Pipeline(stages).stream()]
    [error] = of(out, ErrorFrame)
    assert error.fatal and "set the resample stage before it to rate: 24000" in error.message
