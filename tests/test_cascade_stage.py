"""The ``stt``, ``llm`` and ``tts`` stages end to end, offline: speech in, words, LLM,
tools, speech out.

The caller's audio is espeak-ng speech, heard by pocketsphinx (``stt``); the LLM
is the local script engine streaming Chat Completions chunks (``llm``); the real
``tools`` stage runs the tool; the answer is spoken by espeak-ng (``tts``), sentence
by sentence, and comes back as agent audio.
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
from pipeflow.cascade.retry import RetryPolicy
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
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
from pipeflow.stages.llm import ChatModel
from pipeflow.stages.stt import SpeechToText
from pipeflow.stages.tools import ToolDispatch
from pipeflow.stages.tts import TextToSpeech
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
        self.reported = asyncio.Event()  # the played position of a barge-in went back
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
                self.reported.set()
            yield frame


def caller(text: str) -> list[Frame]:
    pcm = spoken(text, 16000).astype("<i2").tobytes()
    step = 640  # 20 ms
    return [AudioFrame(pcm=pcm[i:i + step], sample_rate=16000)
            for i in range(0, len(pcm), step)] + [TurnCommitted()]


def cascade(tmp_path: Path, **options: Any) -> tuple[SpeechToText, ChatModel, TextToSpeech]:
    """The three stages over the test script (``options`` are the llm's)."""
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    options.setdefault("script", str(script))
    return (SpeechToText(transcriber=TranscriberOptions(sentences=SENTENCES)),
            ChatModel(**options), TextToSpeech())


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

    stt, llm, tts = cascade(tmp_path)
    sink = Sink()
    agent = Agent("You sell pizza.", tools=[price])
    pipeline = Pipeline([Source(frames), stt, llm, tts, ToolDispatch(), sink],
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
    # Each response ends after its speech: its audio comes before its ResponseDone.
    first_done = next(i for i, f in enumerate(out) if isinstance(f, ResponseDone))
    assert max(i for i, f in enumerate(out)
               if isinstance(f, AudioFrame) and f.item_id == items[0]) < first_done
    # The history the LLM saw: the words, the call and its result, the answer.
    history = llm.history
    assert history is not None
    roles = [m["role"] for m in history.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert history.messages[2]["tool_calls"][0]["function"]["name"] == "price"
    assert json.loads(history.messages[3]["content"]) == {"item": "pizza", "price": 9}
    metrics = {f.name for f in out if isinstance(f, Metric)}
    assert {"stt_s", "llm_first_token_s", "tts_first_audio_s", "commit_to_first_audio"} <= metrics
    assert type(out[-1]) is EndOfStream


async def test_the_first_audio_follows_the_first_sentence(tmp_path: Path) -> None:
    """With a slow model (50 ms a chunk), speech starts long before the answer is done."""
    need_tts()
    long_script = tmp_path / "long.yaml"
    long_script.write_text(
        "greeting: \"Welcome to the corner shop. Today we have pizza, salad, pasta and "
        "ice cream, and our pizza is baked fresh every evening.\"\n")
    order: list[str] = []

    class Watch(Stage):
        async def process(self, frames: Frames) -> Frames:
            async for frame in frames:
                if isinstance(frame, AudioFrame) and frame.item_id and "audio" not in order:
                    order.append("audio")
                if isinstance(frame, Transcript) and frame.final and frame.role == "agent":
                    order.append("final text")
                yield frame

    llm = ChatModel(script=str(long_script), response_on_start=True,
                    offline_chunk_delay_ms=50)
    out = [f async for f in Pipeline([Source(lambda: _none()), llm, TextToSpeech(),
                                      Watch()]).stream()]
    assert not [f for f in out if isinstance(f, ErrorFrame)], out
    assert order == ["audio", "final text"]


async def _none() -> AsyncIterator[Frame]:
    await asyncio.sleep(0)
    return
    yield


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
        await sink.reported.wait()
        yield EndOfStream()

    llm = ChatModel(script=str(long_script), response_on_start=True, offline_chunk_delay_ms=30)
    pipeline = Pipeline([Source(frames), llm, TextToSpeech(), sink])
    out = [f async for f in pipeline.stream()]
    assert not [f for f in out if isinstance(f, ErrorFrame)], out
    assert [f.status for f in out if isinstance(f, ResponseDone)] == ["cancelled"]
    assert any(isinstance(f, Interrupt) for f in out)
    # The whole greeting is about 12 s of speech: the barge-in stopped it early.
    agent_s = sum(len(f.pcm) for f in out if isinstance(f, AudioFrame) and f.item_id) / 48000
    assert agent_s < 8.0
    history = llm.history
    assert history is not None
    said = history.messages[-1]
    assert said["role"] == "assistant"
    # Truncated to the first second heard: a few words of the first sentence.
    assert said["content"] and said["content"].startswith("Welcome")
    assert len(said["content"].split()) < 6


async def test_a_barge_in_after_the_text_but_during_the_speech_cancels(tmp_path: Path) -> None:
    """The LLM is done long before the voice: the response lasts until the speech ends."""
    need_tts()
    long_script = tmp_path / "long.yaml"
    long_script.write_text(
        "greeting: \"Welcome to the corner shop. Today we have pizza, salad, pasta and "
        "ice cream. Our pizza is baked fresh every evening. Our salads are large.\"\n")
    sink = Sink(played_ms=500)
    texts = asyncio.Event()

    class Watch(Stage):
        async def process(self, frames: Frames) -> Frames:
            async for frame in frames:
                if isinstance(frame, Transcript) and frame.final:
                    texts.set()
                yield frame

    async def frames() -> AsyncIterator[Frame]:
        await texts.wait()
        await sink.audio.wait()
        yield SpeechStarted(at=1.0)
        await sink.reported.wait()
        yield EndOfStream()

    llm = ChatModel(script=str(long_script), response_on_start=True)
    out = [f async for f in Pipeline([Source(frames), llm, Watch(), TextToSpeech(),
                                      sink]).stream()]
    assert [f.status for f in out if isinstance(f, ResponseDone)] == ["cancelled"]
    assert any(isinstance(f, Interrupt) for f in out)
    history = llm.history
    assert history is not None
    assert len(history.messages[-1]["content"].split()) < 4  # cut to the half second heard


def _limited(seconds: str) -> Any:
    from tests.test_cascade_chat import reply

    return reply("429 Too Many Requests", b'{"error": {"message": "Rate limit reached"}}',
                 f"Retry-After: {seconds}")


async def test_a_refused_key_ends_the_call_with_one_clear_fatal_error() -> None:
    """A 401 refuses every later request too: the call ends, it does not run on mute."""
    from tests.test_cascade_chat import Server, reply

    async def frames() -> AsyncIterator[Frame]:
        yield TextInput(text="question")
        await asyncio.sleep(30)  # the call would go on; the refusal must end it
        yield EndOfStream()

    refusal = reply("401 Unauthorized", b'{"error": {"message": "Incorrect API key provided."}}')
    async with Server(refusal, refusal) as server:
        llm = ChatModel(base_url=server.url, model="gpt-4o-mini", retry=RetryPolicy(retries=0))
        pipeline = Pipeline([Source(frames), llm, Sink()])
        out = await asyncio.wait_for(_collect(pipeline), 10)
    fatal = [f for f in out if isinstance(f, ErrorFrame) and f.fatal]
    assert len(fatal) == 1 and "refused the API key" in fatal[0].message
    assert "so the call ends" in fatal[0].message


async def _collect(pipeline: Pipeline) -> list[Frame]:
    return [f async for f in pipeline.stream()]


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
        _limited("30"),  # longer than the stage waits: reported at once
        reply("500 Internal Server Error", b'{"error": {"message": "boom"}}'),
        sse(TEXT, cut_at=900),
        sse(incomplete),
        sse(TEXT),
    ) as server:
        llm = ChatModel(base_url=server.url, model="gpt-4o-mini",
                        retry=RetryPolicy(retries=0))
        pipeline = Pipeline([Source(frames), llm, Watch(), TextToSpeech(), sink])
        out = [f async for f in pipeline.stream()]
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["http_429", "http_500", "stream_cut", "stream_cut"]
    assert "retry after 30 s" in errors[0].message and not any(e.fatal for e in errors)
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


async def _one(frame: Frame) -> AsyncIterator[Frame]:
    yield frame
    yield EndOfStream()


async def test_429_and_5xx_are_retried_with_a_bounded_backoff(tmp_path: Path) -> None:
    need_tts()
    from tests.test_cascade_chat import TEXT, Server, reply, sse

    failing = reply("503 Service Unavailable", b'{"error": {"message": "overloaded"}}')
    policy = RetryPolicy(retries=2, backoff_s=0.01, max_wait_s=1.0)
    async with Server(_limited("0.05"), failing, sse(TEXT), failing, failing, failing) as server:
        llm = ChatModel(base_url=server.url, retry=policy)
        out = [f async for f in Pipeline([Source(lambda: _one(TextInput(text="hi"))), llm,
                                          TextToSpeech(), Sink()]).stream()]
        assert not [f for f in out if isinstance(f, ErrorFrame)], out
        assert [f.status for f in out if isinstance(f, ResponseDone)] == ["completed"]
        # Three failures in a row: two retries, then the third is reported; no loop.
        llm = ChatModel(base_url=server.url, retry=policy)
        out = [f async for f in Pipeline([Source(lambda: _one(TextInput(text="hi"))), llm,
                                          TextToSpeech(), Sink()]).stream()]
        assert [f.code for f in out if isinstance(f, ErrorFrame)] == ["http_503"]
        assert not server.handlers  # exactly 1 + 2 + 3 requests were made


async def test_the_old_cascade_type_says_what_to_write_instead() -> None:
    import msgspec

    from pipeflow.stages.cascade import CascadeOptions

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({"script": "s.yaml", "response_on_start": True, "voice": "en-gb"},
                        CascadeOptions)
    text = str(caught.value)
    assert "'- type: stt {script: \"s.yaml\"}'" in text
    assert "'- type: llm {script: \"s.yaml\", response_on_start: true}'" in text
    assert "'- type: tts {voice: \"en-gb\"}'" in text
