"""AgentSession against the local Realtime server: text, audio, tools, barge-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pipeflow import Agent, AgentSession, Pipeline, Stage
from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.audio.playout import Chunk
from pipeflow.audio.tts import synthesize
from pipeflow.errors import LocalError
from pipeflow.frames import (
    AudioFrame,
    ResponseDone,
    SpeechStarted,
    ToolCall,
    ToolResult,
    Transcript,
)
from pipeflow.registry import registry
from pipeflow.stages.sinks import NullSink

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "pipelines" / "scripts" / "demo.yaml")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL"):
        monkeypatch.delenv(name, raising=False)


def demo_agent() -> Agent:
    from pipelines.example_tools import add_numbers, get_weather

    return Agent("You are a helpful assistant.", tools=[add_numbers, get_weather])


def make(name: str, **options: object) -> Stage:
    return registry.resolve(name)(**options)


async def speak(session: AgentSession, text: str, rate: int = 16000, realtime: bool = True) -> None:
    """Stream synthesised speech and a second of silence as 20 ms chunks."""
    samples = np.concatenate([synthesize(text, rate), np.zeros(rate, np.int16)])
    step = rate // 50
    for start in range(0, samples.size, step):
        await session.stream_audio(samples[start : start + step].tobytes(), rate)
        if realtime:
            await asyncio.sleep(0.02)


async def test_text_turn_with_tool_call() -> None:
    async with AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0}) as session:
        start = session.frames_seen
        await session.send_text("What is two plus three?")
        call = await session.wait_for(ToolCall, 20, after=start)
        assert call.name == "add_numbers"  # type: ignore[attr-defined]
        result = await session.wait_for(ToolResult, 20, after=start)
        assert float(result.output) == 5 and not result.is_error  # type: ignore[attr-defined]
        said = await session.wait_for(
            lambda f: isinstance(f, Transcript) and f.role == "agent" and f.final, 20, after=start
        )
        assert said.text == "2 plus 3 is 5."  # the numbers said, the sum the tool made  # type: ignore[attr-defined]
        assert session.state != "closed"
    assert session.state == "closed"
    roles = [(t.role, t.source) for t in session.conversation.turns]
    assert roles == [("user", "text"), ("agent", "audio")]
    assert session.conversation.turns[1].audio_duration > 0.5
    assert float(session.conversation.tool_calls[0].output or 0) == 5


async def test_audio_turn_is_committed_by_vad_and_answered() -> None:
    async with AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0}) as session:
        start = session.frames_seen
        await speak(session, "What is the weather in Paris?", realtime=False)
        call = await session.wait_for(ToolCall, 30, after=start)
        assert call.name == "get_weather"  # type: ignore[attr-defined]
        await session.wait_for(
            lambda f: (
                isinstance(f, Transcript) and f.role == "agent" and f.final and "Paris" in f.text
            ),
            30,
            after=start,
        )
    user = [t for t in session.conversation.turns if t.role == "user"]
    assert user and user[0].source == "audio"
    assert 1.0 < user[0].audio_duration < 4.0
    assert user[0].text == "What is the weather in Paris?"  # the script's transcript


async def test_commit_audio_ends_the_turn_on_demand() -> None:
    stages = [
        make("push", sample_rate=16000),
        make("resample"),
        make("realtime", script=DEMO, speed=0),
        make("tools"),
        make("callbacks"),
        make("null", realtime=False),
    ]
    session = AgentSession(demo_agent(), pipeline=Pipeline(stages))
    async with session:
        start = session.frames_seen
        pcm = synthesize("What is the weather in Paris?", 16000).tobytes()
        await session.stream_audio(pcm, 16000)
        await session.commit_audio()  # no vad stage: nothing else would end the turn
        done = await session.wait_for(ToolCall, 20, after=start)
        assert done.name == "get_weather"  # type: ignore[attr-defined]


async def test_say_makes_the_agent_speak() -> None:
    async def first_agent_audio(session: AgentSession) -> AudioFrame:
        async for frame in session.subscribe():
            if isinstance(frame, AudioFrame) and frame.item_id:
                return frame
        raise AssertionError("the session ended before the agent spoke")

    async with AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0}) as session:
        heard = asyncio.create_task(first_agent_audio(session))  # audio is streamed, not logged
        await asyncio.sleep(0)
        await session.say("Your table is ready.")
        said = await session.wait_for(
            lambda f: isinstance(f, Transcript) and f.role == "agent" and f.final, 20, after=0
        )
        assert "Your table is ready." in said.text  # type: ignore[attr-defined]
        assert (await asyncio.wait_for(heard, 20)).item_id


async def test_misuse_gives_clear_errors() -> None:
    session = AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0})
    with pytest.raises(LocalError, match="not started"):
        await session.send_text("hi")
    async with session:
        with pytest.raises(LocalError, match="already started"):
            await session.start()
    with pytest.raises(LocalError, match="closed"):
        await session.send_text("hi")


async def test_ask_waits_for_the_answer_after_the_tool_round_trip() -> None:
    async with AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0}) as session:
        start = session.frames_seen
        answer = await session.ask("What is the weather in Paris?", 20)
        assert answer == (  # the city asked about
            "Let me check the weather for you. Weather in Paris: snowy, 28 °C."
        )
        frames = session.frames[start:]
        # The answer spans the response that called the tool and the one that used it.
        assert sum(isinstance(f, ToolCall) for f in frames) == 1
        assert sum(isinstance(f, ResponseDone) for f in frames) == 2
        assert isinstance(frames[-1], ResponseDone)
        assert await session.ask("And what is two plus three?", 20) == "2 plus 3 is 5."


async def test_ask_on_a_closed_session_is_a_clear_error() -> None:
    session = AgentSession(demo_agent(), transport={"script": DEMO, "speed": 0})
    with pytest.raises(LocalError, match="not started"):
        await session.ask("hello")


def test_from_file_puts_a_push_source_before_a_pipeline_without_one(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: no-source\nagent:\n  instructions: hi\nstages:\n"
        "  - type: realtime\n  - type: tools\n  - type: \"null\"\n"
    )
    names = [st.name for st in AgentSession.from_file(path).pipeline.stages]
    assert names == ["push", "realtime", "tools", "null"]
    path.write_text(path.read_text().replace(
        "stages:\n", "stages:\n  - type: tone\n    sample_rate: 8000\n"))
    session = AgentSession.from_file(path)
    assert [st.name for st in session.pipeline.stages] == ["push", "realtime", "tools", "null"]
    assert session.pipeline.stages[0].options.sample_rate == 8000


@pytest.mark.parametrize("speed", [0, 1])
async def test_ask_answers_the_question_even_with_a_greeting_on_start(speed: float) -> None:
    # A greeting is asked for at start; a question asked at once waits for it, then is
    # answered: the reply is the answer, never the greeting.
    transport = {"script": DEMO, "speed": speed, "response_on_start": True}
    async with AgentSession(demo_agent(), transport=transport) as session:
        assert await session.ask("What is two plus three?", 30) == "2 plus 3 is 5."
        assert session.conversation.turns[0].text.startswith("Hello! This is the local")


async def test_ask_answers_the_question_from_a_pipeline_file() -> None:
    session = AgentSession.from_file(
        ROOT / "pipelines" / "call.yaml",
        overrides=["model.speed=0", "model.first_audio_delay_ms=0"],
        replace_sinks=[NullSink(realtime=False)],
    )
    async with session:
        reply = await session.ask("How much is a salad?", 30)
    assert "salad" in reply.lower() and "$" in reply, reply


async def test_cancel_truncates_where_the_playout_clock_says_the_caller_was() -> None:
    # On the manual clock: the whole greeting arrives at once (speed 0) and plays on the
    # sink's clock; 600 ms in, a cancel cuts it and the model's item is truncated at 600 ms.
    clock = ManualClock()
    set_clock(clock)
    try:
        transport = make("realtime", script=DEMO, response_on_start=True, speed=0)
        sink = ClockedSink(clock)
        stages = [make("push", sample_rate=16000), transport, make("tools"),
                  make("callbacks"), sink]
        async with AgentSession(demo_agent(), pipeline=Pipeline(stages)) as session:
            greeting = await session.wait_for(
                lambda f: isinstance(f, AudioFrame) and bool(f.item_id), 20)
            await session.wait_for(ResponseDone, 20)
            await clock.advance(0.6, step=0.02)
            await session.cancel_response()
            await settle()  # the cancel travels the pipeline before the clock moves on
            await clock.advance(0.2, step=0.02)  # time for any chunk that would play late
            [server_session] = transport.server.sessions
            for _ in range(500):
                if server_session.truncated:
                    break
                await asyncio.sleep(0.01)
            truncated = dict(server_session.truncated)
    finally:
        set_clock(None)
    assert truncated == {greeting.item_id: 600}  # type: ignore[attr-defined]
    assert sink.played and max(t for t, _, _ in sink.played) <= 0.6  # nothing after the cancel
    # The model had sent the whole greeting: the conversation still marks what was heard.
    first = session.conversation.turns[0]
    assert first.role == "agent" and first.interrupted and first.heard_ms == 600
    assert "[interrupted after 0.6 s]" in session.conversation.transcript()


class ClockedSink(NullSink):
    """A null sink that notes, on the pacing clock, when each chunk of agent audio plays."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(realtime=True, drain=False)
        self.clock = clock
        self.played: list[tuple[float, str, float]] = []

    def write(self, chunk: Chunk) -> None:
        self.played.append((self.clock.now(), chunk.item_id, chunk.end - chunk.start))


class ClockedTap(Stage):
    """Notes, on the pacing clock, when the VAD reported the caller's speech."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.speech_at: list[float] = []

    async def process(self, frames):  # type: ignore[no-untyped-def]
        async for frame in frames:
            if isinstance(frame, SpeechStarted):
                self.speech_at.append(self.clock.now())
            yield frame


async def test_barge_in_stops_agent_audio_at_once_on_the_manual_clock() -> None:
    # The greeting arrives whole (speed 0) and plays on the sink's clock; the caller talks
    # over it 500 ms in, one 20 ms chunk per 20 ms of clock. Playback stops on the tick the
    # VAD reports the speech, and the model's item is cut where playback stopped.
    clock = ManualClock()
    set_clock(clock)
    try:
        sink, tap = ClockedSink(clock), ClockedTap(clock)
        transport = make("realtime", script=DEMO, response_on_start=True, speed=0)
        stages = [make("push", sample_rate=16000), make("resample"),
                  make("vad", commit_on_silence=True), tap, transport, make("tools"),
                  make("callbacks"), sink]
        interrupted: list[str] = []
        session = AgentSession(demo_agent(), pipeline=Pipeline(stages))
        session.on("interrupted", lambda event: interrupted.append(event.name))
        async with session:
            await session.wait_for(ResponseDone, 20)  # the whole greeting has arrived
            await clock.advance(0.5, step=0.02)
            speech = np.concatenate([synthesize("What is two plus three?", 16000),
                                     np.zeros(16000, np.int16)])
            for start in range(0, speech.size, 320):
                await session.stream_audio(speech[start : start + 320].tobytes(), 16000)
                await clock.advance(0.02, step=0.02)
            await session.wait_for(ToolCall, 20, after=0)
            [server_session] = transport.server.sessions
            truncated = dict(server_session.truncated)
    finally:
        set_clock(None)
    assert tap.speech_at, "the VAD never heard the caller"
    heard = tap.speech_at[0]
    greeting_item = sink.played[0][1]
    greeting = [(t, s) for t, item, s in sink.played if item == greeting_item]
    before = [(t, s) for t, s in greeting if t <= heard]
    assert before and before[-1][0] + before[-1][1] >= heard - 0.001, "nothing was playing"
    assert [t for t, _ in greeting if t > heard] == []  # not one chunk after the speech
    played_ms = 1000 * sum(s for _, s in greeting)
    assert abs(truncated[greeting_item] - played_ms) <= 20 + 1e-6, (truncated, played_ms)
    assert 0 < truncated[greeting_item] <= 1000 * heard + 20
    assert interrupted == ["interrupted"]
    first = session.conversation.turns[0]
    assert first.role == "agent" and first.interrupted
    assert first.heard_ms == truncated[greeting_item]
