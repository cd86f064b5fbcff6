"""Pause, resume and the heard position on the gateway's sinks: WebSocket calls and Twilio."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.frames import (
    AudioFrame,
    Interrupt,
    PausePlayout,
    PlayoutPosition,
    ResponseDone,
    ResumePlayout,
)
from pipeflow.pipeline import Pipeline
from pipeflow.server.edges import CallAudioOut, TwilioMediaOut
from pipeflow.stages.sources import PushSource
from tests.test_gateway_edges import MS_100, Upstream, _collect, context, drain, twilio_stream
from tests.test_gateway_twilio import SID, agent, mark_message


async def test_the_call_sink_holds_on_a_pause_plays_on_after_and_cuts_at_the_pause(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    set_clock(clock)
    try:
        push, upstream = PushSource(sample_rate=16000), Upstream()
        sink = CallAudioOut()
        pipeline = Pipeline([push, upstream, sink], context=context(tmp_path))
        runner = asyncio.create_task(drain(pipeline, []))
        await settle()
        heard: list[AudioFrame] = []
        listener = asyncio.create_task(_collect(sink.listen(), heard))
        for index in range(10):  # one second of the agent's answer
            push.push(AudioFrame(pcm=MS_100, sample_rate=24000, pts=index / 10, item_id="a"))
        await settle()
        await clock.advance(0.2, step=0.01)
        push.push(PausePlayout())  # the caller may be barging in
        await settle()
        count = len(heard)
        await clock.advance(0.5, step=0.01)
        assert len(heard) == count  # held: nothing goes to the caller
        push.push(ResumePlayout())  # it was a cough: play on from there
        await settle()
        await clock.advance(0.2, step=0.01)
        assert len(heard) > count
        pts = [round(f.pts, 2) for f in heard]
        assert pts[count] >= 0.7  # resumed after the hold, not skipped ahead
        push.push(PausePlayout())
        await settle()
        held_at = sum(len(f.pcm) for f in heard) / 48  # ms played when held again
        await clock.advance(0.3, step=0.01)
        push.push(Interrupt())  # now it is meant: cut where the pause held it
        await settle()
        [position] = upstream.positions
        assert position.item_id == "a" and position.interrupted
        assert abs(position.played_ms - held_at) <= 20
        assert isinstance(position, PlayoutPosition)
        push.end()
        await asyncio.wait_for(runner, 5)
        await asyncio.wait_for(listener, 5)
    finally:
        set_clock(None)


async def test_twilio_has_no_pause_so_a_pause_clears_and_a_resume_sends_the_rest_again(
    tmp_path: Path,
) -> None:
    stream, sent = twilio_stream()
    push, upstream = PushSource(sample_rate=8000), Upstream()
    pipeline = Pipeline([push, upstream, TwilioMediaOut(stream)], context=context(tmp_path))
    runner = asyncio.create_task(drain(pipeline, []))
    for _ in range(3):
        push.push(agent(1600, "item_1", rate=8000))  # 3 x 200 ms, all sent at once
    await settle()
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    for event in stream.translator.receive(mark_message(marks[0])):  # 200 ms heard
        stream.marks.put_nowait(event)  # type: ignore[arg-type]
    await settle()
    before = len(sent)
    push.push(PausePlayout())  # the caller may be barging in: Twilio stops now
    await settle()
    assert sent[before:] == [{"event": "clear", "streamSid": SID}]
    push.push(agent(1600, "item_1", rate=8000))  # more comes while paused: held back
    await settle()
    assert len(sent) == before + 1
    push.push(ResumePlayout())  # a cough: the 600 ms not heard are sent again
    push.push(ResponseDone())
    await settle()
    media = [m for m in sent[before + 1 :] if m["event"] == "media"]
    assert len(media) == 30  # 600 ms in 20 ms payloads (400 unplayed + 200 held back)
    marks = [m["mark"]["name"] for m in sent[before + 1 :] if m["event"] == "mark"]
    for name in marks:  # Twilio plays it all: the item is reported whole, from its start
        for event in stream.translator.receive(mark_message(name)):
            stream.marks.put_nowait(event)  # type: ignore[arg-type]
    await settle()
    assert upstream.positions[-1] == PlayoutPosition(item_id="item_1", played_ms=800)
    # Paused again and then meant: the cut is where the pause stopped the audio.
    push.push(agent(1600, "item_2", rate=8000))
    await settle()
    push.push(PausePlayout())
    await settle()
    push.push(Interrupt())
    await settle()
    assert upstream.positions[-1] == PlayoutPosition(item_id="item_2", played_ms=0,
                                                     interrupted=True)
    push.end()
    await asyncio.wait_for(runner, 5)
