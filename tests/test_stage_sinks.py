"""Sinks: playout clock, barge-in flush with played position, metrics, files."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.audio.wav import read_wav
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Interrupt,
    Metric,
    PlayoutPosition,
    ResponseDone,
    TextInput,
)
from pipeflow.pipeline import Pipeline
from pipeflow.stages.sinks import JsonlSink, NullSink, SpeakerSink, WavSink
from pipeflow.stages.sources import PushSource
from pipeflow.testing import run_stage

RATE = 24000


def agent_frames(count: int, item_id: str = "item_1", level: int = 1000) -> list[AudioFrame]:
    pcm = np.full(480, level, "<i2").tobytes()  # 20 ms at 24 kHz
    return [
        AudioFrame(pcm=pcm, sample_rate=RATE, pts=i * 0.02, item_id=item_id) for i in range(count)
    ]


class _Source(PushSource):
    """A push source that also takes the sink's feedback (and passes it on to the output)."""

    accepts = (PlayoutPosition,)


@pytest.fixture
async def clock():
    manual = ManualClock()
    set_clock(manual)
    yield manual
    set_clock(None)


class Call:
    """A running source -> sink pipeline whose output is recorded with clock times."""

    def __init__(self, sink, clock: ManualClock) -> None:
        self.source = _Source()
        self.clock = clock
        self.out: list[tuple[float, object]] = []
        self.task = asyncio.create_task(self._run(Pipeline([self.source, sink])))

    async def _run(self, pipeline: Pipeline) -> None:
        async for frame in pipeline.stream():
            self.out.append((self.clock.now(), frame))

    def of(self, cls: type) -> list:
        return [(t, f) for t, f in self.out if isinstance(f, cls)]

    async def late_feedback(self) -> list:
        """Feedback that reached the source after it ended (still in its inbox)."""
        inbox = self.source.ctx.inbox
        assert inbox is not None
        items = [await inbox.get() for _ in range(len(inbox))]
        return [f for f in items if isinstance(f, PlayoutPosition)]

    async def send(self, *frames) -> None:
        for frame in frames:
            if isinstance(frame, EndOfStream):
                self.source.end()
            else:
                self.source.push(frame)
        await settle()


async def test_interrupt_drops_unplayed_audio_and_reports_the_played_time(tmp_path, clock):
    path = tmp_path / "agent.wav"
    call = Call(WavSink(path=str(path)), clock)
    await call.send(*agent_frames(50))  # one second queued at once
    await clock.advance(0.31)
    await call.send(Interrupt())
    ((_, position),) = call.of(PlayoutPosition)
    assert position.item_id == "item_1" and position.interrupted
    assert position.played_ms == pytest.approx(310, abs=1)
    await call.send(EndOfStream())
    await asyncio.wait_for(call.task, 5)
    written = read_wav(path).duration
    assert 0.31 <= written <= 0.31 + 0.02  # the frame playing at the interrupt, no more


async def test_item_played_to_the_end_is_reported_when_it_ends(clock):
    call = Call(NullSink(), clock)
    await call.send(*agent_frames(10), ResponseDone())
    await clock.advance(0.15)
    assert call.of(PlayoutPosition) == []
    await clock.advance(0.1)
    ((when, position),) = call.of(PlayoutPosition)
    assert when == pytest.approx(0.2, abs=0.002)
    assert (position.played_ms, position.interrupted) == (200, False)
    await call.send(EndOfStream())
    await asyncio.wait_for(call.task, 5)


async def test_first_audio_out_is_yielded_when_each_item_starts_playing(clock):
    call = Call(NullSink(), clock)
    await call.send(*agent_frames(5, "a"), *agent_frames(5, "b"))
    await clock.advance(0.3)
    metrics = call.of(Metric)
    assert [m.name for _, m in metrics] == ["first_audio_out"] * 2
    assert [t for t, _ in metrics] == pytest.approx([0.0, 0.1], abs=0.002)
    # "a" ended when "b" began; "b" stays open until its response is done.
    positions = [(p.item_id, p.played_ms) for _, p in call.of(PlayoutPosition)]
    assert positions == [("a", 100)]
    await call.send(EndOfStream())
    await clock.advance(0.05)
    await asyncio.wait_for(call.task, 5)
    assert [(p.item_id, p.played_ms) for p in await call.late_feedback()] == [("b", 100)]


async def test_end_of_stream_waits_for_queued_audio_to_play(clock):
    call = Call(NullSink(), clock)
    await call.send(*agent_frames(10), EndOfStream())
    await clock.advance(0.1)
    assert not call.task.done()
    await clock.advance(0.12)
    await asyncio.wait_for(call.task, 5)
    assert isinstance(call.out[-1][1], EndOfStream)
    assert [p.played_ms for p in await call.late_feedback()] == [200]


async def test_drain_false_drops_queued_audio_at_the_end(clock):
    call = Call(NullSink(drain=False), clock)
    await call.send(*agent_frames(10))
    await clock.advance(0.05)
    await call.send(EndOfStream())
    await asyncio.wait_for(call.task, 5)
    (position,) = await call.late_feedback()
    assert position.interrupted and position.played_ms == pytest.approx(50, abs=1)


async def test_not_realtime_counts_audio_as_played_when_received():
    frames = [*agent_frames(10), TextInput(text="hi"), Interrupt()]
    result = await run_stage(NullSink(realtime=False), frames)
    (position,) = result.of(PlayoutPosition) or result.up
    assert position.played_ms == 200
    assert [type(f).__name__ for f in result.down].count("AudioFrame") == 10
    assert len(result.of(Metric)) == 1
    assert any(isinstance(f, TextInput) for f in result.down)


async def test_wav_sink_converts_rate_and_plays_only_agent_audio(tmp_path: Path):
    path = tmp_path / "out.wav"
    caller = AudioFrame(pcm=b"\1\0" * 320, sample_rate=16000)
    frames = [caller, *agent_frames(25), ResponseDone()]
    result = await run_stage(WavSink(path=str(path), sample_rate=8000, realtime=False), frames)
    assert not result.errors
    audio = read_wav(path)
    assert audio.sample_rate == 8000
    assert audio.duration == pytest.approx(0.5, abs=0.002)
    assert result.up == [PlayoutPosition(item_id="item_1", played_ms=500)]


async def test_wav_timeline_keeps_silence_between_items(tmp_path: Path, clock):
    path = tmp_path / "timeline.wav"
    call = Call(WavSink(path=str(path), timeline=True, source="all"), clock)
    await call.send(*agent_frames(5, "a"))
    await clock.advance(0.3)
    await call.send(*agent_frames(5, "b"), EndOfStream())
    await clock.advance(0.2)
    await asyncio.wait_for(call.task, 5)
    samples = read_wav(path).samples
    assert samples.size == pytest.approx(0.4 * RATE, abs=RATE * 0.002)
    assert not samples[round(0.12 * RATE) : round(0.28 * RATE)].any()  # the gap
    assert samples[: round(0.1 * RATE)].all() and samples[-round(0.09 * RATE) :].all()


async def test_speaker_without_any_output_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = await run_stage(SpeakerSink(), agent_frames(1))
    assert "no audio output is available" in result.errors[0].message


async def test_jsonl_records_every_frame_and_can_skip_audio(tmp_path: Path):
    full, small = tmp_path / "all.jsonl", tmp_path / "events.jsonl"
    frames = [*agent_frames(2), TextInput(text="hi")]
    await run_stage(JsonlSink(path=str(full)), frames)
    result = await run_stage(JsonlSink(path=str(small), skip_audio=True), frames)
    assert len(result.down) == 4  # every frame is passed on
    lines = [json.loads(line) for line in full.read_text().splitlines()]
    assert [line["frame"]["type"] for line in lines] == [
        "audio",
        "audio",
        "text_input",
        "end_of_stream",
    ]
    assert lines[0]["t"] == 0.0 and isinstance(lines[0]["frame"]["pcm"], str)  # base64
    assert [json.loads(x)["frame"]["type"] for x in small.read_text().splitlines()] == [
        "text_input",
        "end_of_stream",
    ]


async def test_odd_length_audio_names_the_frame():
    bad = AudioFrame(pcm=b"\0\0\0", sample_rate=RATE, pts=0.5, item_id="x")
    result = await run_stage(NullSink(realtime=False), [bad])
    assert "frame at pts 0.500 s" in result.errors[0].message


@pytest.mark.parametrize("realtime", [False, True])
@pytest.mark.parametrize(
    ("channels", "pcm", "message"),
    [(0, b"\0\0" * 4, "channel count must be at least 1"), (2, b"\0\0" * 5, "divide into 2")],
)
async def test_frames_with_bad_channels_name_the_frame(realtime, channels, pcm, message):
    bad = AudioFrame(pcm=pcm, sample_rate=RATE, channels=channels, pts=0.5, item_id="x")
    result = await run_stage(NullSink(realtime=realtime), [bad])
    assert "null sink input frame at pts 0.500 s" in result.errors[0].message
    assert message in result.errors[0].message
    assert "reshape" not in result.errors[0].message
