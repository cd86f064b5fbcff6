"""Pause, resume and the heard position on the gateway's call audio sink (WebSocket calls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.frames import AudioFrame, Interrupt, PausePlayout, PlayoutPosition, ResumePlayout
from pipeflow.pipeline import Pipeline
from pipeflow.server.edges import CallAudioOut
from pipeflow.stages.sources import PushSource
from tests.test_gateway_edges import MS_100, Upstream, _collect, context, drain


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
