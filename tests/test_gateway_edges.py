"""The call edge stages: frames in and out, feedback upstream, on the manual clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.audio.g711 import samples_to_ulaw, ulaw_decode
from pipeflow.audio.wav import read_wav
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Frame,
    Interrupt,
    PlayoutPosition,
    ResponseDone,
    TextInput,
)
from pipeflow.pipeline import Pipeline, PipelineContext
from pipeflow.server.edges import CallAudioOut, MediaStream, TwilioMediaIn, TwilioMediaOut
from pipeflow.server.twilio_media import TwilioMediaTranslator
from pipeflow.stage import Frames, Stage
from pipeflow.stages.sources import PushSource
from tests.test_gateway_twilio import SID, agent, mark_message, media_message, started

MS_100 = b"\x10\x00" * 2400  # 100 ms at 24 kHz


class Upstream(Stage):
    """Stands in for the model transport: keeps the played positions sent back to it."""

    accepts = (PlayoutPosition,)

    def __init__(self) -> None:
        super().__init__()
        self.positions: list[PlayoutPosition] = []

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, PlayoutPosition):
                self.positions.append(frame)
                continue
            yield frame


def context(folder: Path) -> PipelineContext:
    ctx = PipelineContext(name="edge-test", output_dir=str(folder))
    return ctx


async def drain(pipeline: Pipeline, out: list[Frame]) -> None:
    async for frame in pipeline.stream():
        out.append(frame)


@pytest.fixture
async def clock() -> AsyncIterator[ManualClock]:
    manual = ManualClock()
    set_clock(manual)
    yield manual
    set_clock(None)


async def test_call_audio_plays_on_the_clock_and_a_barge_in_reports_what_was_heard(
    clock: ManualClock, tmp_path: Path
) -> None:
    push, upstream = PushSource(sample_rate=16000), Upstream()
    sink = CallAudioOut(record="heard.wav")
    pipeline = Pipeline([push, upstream, sink], context=context(tmp_path))
    out: list[Frame] = []
    runner = asyncio.create_task(drain(pipeline, out))
    await settle()
    heard: list[AudioFrame] = []
    listener = asyncio.create_task(_collect(sink.listen(), heard))
    for index in range(10):  # one second of the agent's item, all queued at once
        push.push(AudioFrame(pcm=MS_100, sample_rate=24000, pts=index / 10, item_id="item_1"))
    await settle()
    await clock.advance(0.25, step=0.01)
    # Released in 20 ms pieces as each starts (a pause or a cut lands within 20 ms).
    assert [round(f.pts, 2) for f in heard] == [round(0.02 * i, 2) for i in range(13)]
    push.push(Interrupt())
    await settle()
    assert upstream.positions == [PlayoutPosition(item_id="item_1", played_ms=250,
                                                  interrupted=True)]
    await clock.advance(1.0, step=0.05)
    assert len(heard) == 13  # nothing more plays after the cut
    push.end()
    await asyncio.wait_for(runner, 5)
    await asyncio.wait_for(listener, 5)  # the listener ends with the call
    recorded = read_wav(tmp_path / "heard.wav")
    assert recorded.sample_rate == 24000 and recorded.pcm == (MS_100 * 3)[: 13 * 960]
    assert any(isinstance(f, Interrupt) for f in out)


async def test_an_item_played_to_its_end_is_reported_and_the_first_listener_gets_the_greeting(
    clock: ManualClock, tmp_path: Path
) -> None:
    push, upstream = PushSource(sample_rate=16000), Upstream()
    sink = CallAudioOut()
    pipeline = Pipeline([push, upstream, sink], context=context(tmp_path))
    runner = asyncio.create_task(drain(pipeline, []))
    for index in range(3):
        push.push(AudioFrame(pcm=MS_100, sample_rate=24000, pts=index / 10, item_id="hello"))
    push.push(ResponseDone())
    await settle()
    await clock.advance(0.35, step=0.01)
    assert upstream.positions == [PlayoutPosition(item_id="hello", played_ms=300)]
    first: list[AudioFrame] = []
    second: list[AudioFrame] = []
    readers = [asyncio.create_task(_collect(sink.listen(), first)),
               asyncio.create_task(_collect(sink.listen(), second))]
    await settle()
    push.push(AudioFrame(pcm=MS_100, sample_rate=24000, item_id="answer"))
    await settle()
    await clock.advance(0.2, step=0.01)
    push.end()
    await asyncio.wait_for(runner, 5)
    await asyncio.wait_for(asyncio.gather(*readers), 5)
    # In 20 ms pieces: the greeting it missed, then the answer.
    assert [f.item_id for f in first] == ["hello"] * 15 + ["answer"] * 5
    assert [f.item_id for f in second] == ["answer"] * 5  # later listeners: live audio only
    assert sink.recorded() == (b"", 24000)  # not asked to record


def twilio_stream(messages: list[str] | None = None,
                  translator: TwilioMediaTranslator | None = None,
                  ) -> tuple[MediaStream, list[dict]]:
    """A Media Stream whose socket is ``messages`` in, a list out."""
    sent: list[dict] = []
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for message in messages or []:
        queue.put_nowait(message)

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    return MediaStream(translator or started(), queue.get, send), sent


async def test_twilio_out_sends_media_and_marks_and_reports_from_echoed_marks(
    tmp_path: Path,
) -> None:
    stream, sent = twilio_stream()
    push, upstream = PushSource(sample_rate=8000), Upstream()
    pipeline = Pipeline([push, upstream, TwilioMediaOut(stream, record="sent.wav")],
                        context=context(tmp_path))
    runner = asyncio.create_task(drain(pipeline, []))
    push.push(agent(1600, "item_1", rate=8000))  # 200 ms
    push.push(ResponseDone())
    await settle()
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    assert len(marks) == 2 and {m["streamSid"] for m in sent} == {SID}
    assert sum(1 for m in sent if m["event"] == "media") == 10  # 20 ms payloads
    for name in marks:  # Twilio played it all: its marks come back (through the source)
        for event in stream.translator.receive(mark_message(name)):
            stream.marks.put_nowait(event)  # type: ignore[arg-type]
    await settle()
    assert upstream.positions == [PlayoutPosition(item_id="item_1", played_ms=200)]

    push.push(agent(1600, "item_2", rate=8000))
    push.push(agent(1600, "item_2", rate=8000))
    await settle()
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"][2:]
    for event in stream.translator.receive(mark_message(marks[0])):  # 200 ms heard
        stream.marks.put_nowait(event)  # type: ignore[arg-type]
    push.push(Interrupt())  # the caller talks over it
    await settle()
    assert sent[-1] == {"event": "clear", "streamSid": SID}
    assert upstream.positions[-1] == PlayoutPosition(item_id="item_2", played_ms=200,
                                                     interrupted=True)
    assert len(upstream.positions) == 2
    push.end()
    await asyncio.wait_for(runner, 5)
    assert len(read_wav(tmp_path / "sent.wav").pcm) == 3 * 3200


async def test_twilio_in_turns_media_and_digits_into_frames_and_stop_into_the_end() -> None:
    ulaw = samples_to_ulaw(np.frombuffer(agent(160, rate=8000).pcm, "<i2"))
    outbound = started()  # the stream's translator, which sent the agent's audio
    mark = [json.loads(m) for m in outbound.agent_audio(agent(160, rate=8000))][-1]
    messages = [media_message(ulaw, 0),
                json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "5"}}),
                mark_message(mark["mark"]["name"]),
                json.dumps({"event": "stop", "streamSid": SID})]
    stream, _ = twilio_stream(messages, outbound)
    source = TwilioMediaIn(stream)
    out: list[Frame] = []
    await asyncio.wait_for(drain(Pipeline([source]), out), 5)
    audio = [f for f in out if isinstance(f, AudioFrame)]
    assert len(audio) == 1 and audio[0].sample_rate == 8000
    assert audio[0].pcm == ulaw_decode(ulaw)
    assert [f for f in out if isinstance(f, TextInput)] == [TextInput(text="5")]
    assert isinstance(out[-1], EndOfStream)
    assert stream.ended.is_set() and stream.error is None
    echoed = stream.marks.get_nowait()  # handed to the sink half
    assert echoed.item_id == "item_1" and echoed.played_ms == 20


async def test_twilio_in_ends_the_stream_on_a_message_it_does_not_know() -> None:
    stream, _ = twilio_stream(['{"event": "bogus"}'])
    out: list[Frame] = []
    await asyncio.wait_for(drain(Pipeline([TwilioMediaIn(stream)]), out), 5)
    assert stream.error is not None and "not a known Media Streams event" in str(stream.error)
    assert isinstance(out[-1], EndOfStream)


async def _collect(frames: AsyncIterator[AudioFrame], into: list[AudioFrame]) -> None:
    async for frame in frames:
        into.append(frame)
