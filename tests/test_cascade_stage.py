"""The ``cascade`` stage end to end, offline: speech in, words, LLM, tools, speech out.

The caller's audio is espeak-ng speech, heard by pocketsphinx; the LLM is
the local script engine streaming Chat Completions chunks; the real
``tools`` stage runs the tool; the answer comes back as agent audio.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipeflow.agent import Agent
from pipeflow.asr.options import TranscriberOptions
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    PlayoutPosition,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    Transcript,
    TurnCommitted,
)
from pipeflow.pipeline import Pipeline, PipelineContext
from pipeflow.stage import Frames, Stage
from pipeflow.stages.cascade import CascadeTransport
from pipeflow.stages.tools import ToolDispatch
from pipeflow.tools import tool
from tests.speech import need_tts, spoken

SCRIPT = """\
turns:
  - match: [pizza]
    steps:
      - say: "Let me check that for you."
      - call: price
        arguments: {item: pizza}
      - say: "A pizza costs {result.price} dollars. Anything else?"
  - match: [goodbye]
    steps:
      - say: "Thank you for calling. Goodbye!"
"""

SENTENCES = ("how much is a pizza", "thank you goodbye", "one pizza please")

prices_asked: list[str] = []


@tool
def price(item: str) -> dict:
    """Price of a menu item."""
    prices_asked.append(item)
    return {"item": item, "price": 9}


class Source(Stage):
    def __init__(self, frames: Callable[[], AsyncIterator[Frame]]) -> None:
        super().__init__()
        self.frames = frames

    async def process(self, frames: Frames) -> Frames:
        async for frame in self.frames():
            yield frame


class Sink(Stage):
    """Records what reaches the end; reports a barge-in's played position like a sink."""

    def __init__(self, played_ms: int | None = None) -> None:
        super().__init__()
        self.seen: list[Frame] = []
        self.audio = asyncio.Event()
        self.played_ms = played_ms
        self._item = ""

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            self.seen.append(frame)
            if isinstance(frame, AudioFrame) and frame.item_id:
                self._item = frame.item_id
                self.audio.set()
            if isinstance(frame, Interrupt) and self.played_ms is not None and self._item:
                self.ctx.send_upstream(PlayoutPosition(item_id=self._item,
                                                       played_ms=self.played_ms,
                                                       interrupted=True))
            yield frame


def caller(text: str) -> list[Frame]:
    pcm = spoken(text, 16000).astype("<i2").tobytes()
    step = 640  # 20 ms
    return [AudioFrame(pcm=pcm[i:i + step], sample_rate=16000)
            for i in range(0, len(pcm), step)] + [TurnCommitted()]


def cascade(tmp_path: Path, **options: Any) -> CascadeTransport:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    return CascadeTransport(script=str(script),
                            transcriber=TranscriberOptions(sentences=SENTENCES), **options)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


async def test_a_spoken_question_gets_a_tool_call_and_a_spoken_answer(tmp_path: Path) -> None:
    need_tts()
    prices_asked.clear()

    async def frames() -> AsyncIterator[Frame]:
        for frame in caller("how much is a pizza"):
            yield frame
        yield EndOfStream()

    stage = cascade(tmp_path)
    sink = Sink()
    agent = Agent("You sell pizza.", tools=[price])
    pipeline = Pipeline([Source(frames), stage, ToolDispatch(), sink],
                        context=PipelineContext(agent=agent))
    out = [f async for f in pipeline.stream()]
    assert not [f for f in out if isinstance(f, ErrorFrame)], out
    users = [f.text for f in out if isinstance(f, Transcript) and f.role == "user"]
    assert users == ["how much is a pizza"]
    calls = [f for f in out if isinstance(f, ToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("price", {"item": "pizza"})]
    assert prices_asked == ["pizza"]  # the tools stage really ran it
    finals = [f.text for f in out if isinstance(f, Transcript) and f.role == "agent" and f.final]
    assert finals == ["Let me check that for you.",
                      "A pizza costs 9 dollars. Anything else?"]
    audio = [f for f in out if isinstance(f, AudioFrame) and f.item_id]
    items = sorted({f.item_id for f in audio})
    assert len(items) == 2 and all(f.sample_rate == 24000 for f in audio)
    second = b"".join(f.pcm for f in audio if f.item_id == items[1])
    assert len(second) / 2 / 24000 > 1.0  # the spoken answer, not a click
    assert [f.status for f in out if isinstance(f, ResponseDone)] == ["completed"] * 2
    # The history the LLM saw: the words, the call and its result, the answer.
    history = stage.history
    assert history is not None
    roles = [m["role"] for m in history.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert history.messages[2]["tool_calls"][0]["function"]["name"] == "price"
    assert json.loads(history.messages[3]["content"]) == {"item": "pizza", "price": 9}
    assert type(out[-1]) is EndOfStream


async def test_barge_in_stops_the_speech_and_keeps_what_was_heard(tmp_path: Path) -> None:
    need_tts()
    long_script = tmp_path / "long.yaml"
    long_script.write_text(
        "greeting: \"Welcome to the corner shop. Today we have pizza, salad, pasta and "
        "ice cream. Our pizza is baked fresh every evening. Our salads are large. "
        "What would you like?\"\n")
    sink = Sink(played_ms=1000)

    async def frames() -> AsyncIterator[Frame]:
        await sink.audio.wait()
        yield SpeechStarted(at=1.0)
        yield SpeechStopped(at=1.5)
        yield EndOfStream()

    stage = CascadeTransport(script=str(long_script), response_on_start=True,
                             transcriber=TranscriberOptions(sentences=SENTENCES),
                             offline_chunk_delay_ms=30)
    pipeline = Pipeline([Source(frames), stage, sink])
    out = [f async for f in pipeline.stream()]
    assert not [f for f in out if isinstance(f, ErrorFrame)], out
    assert [f.status for f in out if isinstance(f, ResponseDone)] == ["cancelled"]
    assert any(isinstance(f, Interrupt) for f in out)
    # The whole greeting is about 12 s of speech: the barge-in stopped it early.
    agent_s = sum(len(f.pcm) for f in out if isinstance(f, AudioFrame) and f.item_id) / 48000
    assert agent_s < 8.0
    history = stage.history
    assert history is not None
    said = history.messages[-1]
    assert said["role"] == "assistant"
    # Truncated to the first second heard: a few words of the first sentence.
    assert said["content"] and said["content"].startswith("Welcome")
    assert len(said["content"].split()) < 6


async def test_model_errors_become_error_frames_and_the_call_goes_on(tmp_path: Path) -> None:
    need_tts()
    from tests.test_cascade_chat import TEXT, Server, reply, sse

    sink = Sink()
    seen = asyncio.Event()

    class Watch(Stage):
        async def process(self, frames: Frames) -> Frames:
            async for frame in frames:
                if isinstance(frame, ErrorFrame | ResponseDone):
                    seen.set()
                yield frame

    async def frames() -> AsyncIterator[Frame]:
        for n in range(5):
            seen.clear()
            yield TextInput(text=f"question {n}")
            await seen.wait()
            await asyncio.sleep(0.05)  # a failed answer's ResponseDone follows its error
        yield EndOfStream()

    incomplete = TEXT.split(b"data: [DONE]")[0].replace(b'"finish_reason":"stop"',
                                                       b'"finish_reason":null')
    async with Server(
        reply("429 Too Many Requests", b'{"error": {"message": "Rate limit reached"}}',
              "Retry-After: 3"),
        reply("500 Internal Server Error", b'{"error": {"message": "boom"}}'),
        sse(TEXT, cut_at=900),
        sse(incomplete),
        sse(TEXT),
    ) as server:
        stage = CascadeTransport(base_url=server.url, model="gpt-4o-mini",
                                 transcriber=TranscriberOptions(sentences=SENTENCES))
        pipeline = Pipeline([Source(frames), stage, Watch(), sink])
        out = [f async for f in pipeline.stream()]
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["http_429", "http_500", "stream_cut", "stream_cut"]
    assert "retry after 3 s" in errors[0].message and not any(e.fatal for e in errors)
    assert "cut the stream mid-answer" in errors[2].message
    assert "ended before the answer was complete" in errors[3].message
    # Refused requests never began; the cut ones began and failed; the last one answered.
    assert [f.status for f in out if isinstance(f, ResponseDone)] == [
        "failed", "failed", "completed"]
    finals = [f.text for f in out if isinstance(f, Transcript) and f.final and f.role == "agent"]
    assert finals[-1] == "A pizza costs nine dollars. The crème brûlée is six."
    last = [f for f in out if isinstance(f, AudioFrame) and f.item_id][-1]
    assert last.item_id == "item_5"
    assert type(out[-1]) is EndOfStream


async def test_a_stream_that_ends_without_finishing_is_an_error(tmp_path: Path) -> None:
    need_tts()
    from tests.test_cascade_chat import TEXT, Server, sse

    incomplete = TEXT.split(b"data: [DONE]")[0].replace(b'"finish_reason":"stop"',
                                                       b'"finish_reason":null')
    async with Server(sse(incomplete)) as server:
        stage = CascadeTransport(base_url=server.url,
                                 transcriber=TranscriberOptions(sentences=SENTENCES))
        pipeline = Pipeline([Source(lambda: _one(TextInput(text="hi"))), stage, Sink()])
        out = [f async for f in pipeline.stream()]
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["stream_cut"]
    assert "ended before the answer was complete" in errors[0].message
    assert [f.status for f in out if isinstance(f, ResponseDone)] == ["failed"]
    history = stage.history
    assert history is not None
    # Only what was spoken before the error stopped the speech is kept (the first
    # sentence at most; the second was never heard).
    said = [m["content"] for m in history.messages if m["role"] == "assistant"]
    assert said in ([], ["A pizza costs nine dollars."])
    assert history.messages[0] == {"role": "user", "content": "hi"}


async def _one(frame: Frame) -> AsyncIterator[Frame]:
    yield frame
    yield EndOfStream()


async def test_a_short_retry_after_is_waited_out_once(tmp_path: Path) -> None:
    need_tts()
    from tests.test_cascade_chat import TEXT, Server, reply, sse

    limited = reply("429 Too Many Requests", b'{"error": {"message": "Rate limit reached"}}',
                    "Retry-After: 0.2")
    async with Server(limited, sse(TEXT), limited, limited) as server:
        stage = CascadeTransport(base_url=server.url, rate_limit_wait_max_s=1.0,
                                 transcriber=TranscriberOptions(sentences=SENTENCES))
        out = [f async for f in Pipeline([Source(lambda: _one(TextInput(text="hi"))), stage,
                                          Sink()]).stream()]
        assert not [f for f in out if isinstance(f, ErrorFrame)]
        assert [f.status for f in out if isinstance(f, ResponseDone)] == ["completed"]
        # Twice in a row is reported: one wait per answer, not a loop.
        stage = CascadeTransport(base_url=server.url, rate_limit_wait_max_s=1.0,
                                 transcriber=TranscriberOptions(sentences=SENTENCES))
        out = [f async for f in Pipeline([Source(lambda: _one(TextInput(text="hi"))), stage,
                                          Sink()]).stream()]
        assert [f.code for f in out if isinstance(f, ErrorFrame)] == ["http_429"]
