"""The runtime: ordering, feedback, urgency, back-pressure, failures, shutdown."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pipeflow import Pipeline, Stage, stage
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    PlayoutPosition,
    TextInput,
    ToolResult,
)
from pipeflow.stages.basic import PassThrough
from pipeflow.testing import run_stage


def audio(i: int) -> AudioFrame:
    return AudioFrame(pcm=i.to_bytes(2, "little") * 160, sample_rate=8000, pts=i * 0.02)


@stage()
async def numbers(frames, options=None):  # type: ignore[no-untyped-def]
    for i in range(20):
        yield audio(i)
    yield EndOfStream()


class Recorder(Stage):
    """Duplex stage recording feedback it receives."""

    accepts = (ToolResult, PlayoutPosition)

    def __init__(self) -> None:
        super().__init__()
        self.feedback: list[Frame] = []

    async def process(self, frames):  # type: ignore[no-untyped-def]
        async for frame in frames:
            if isinstance(frame, ToolResult | PlayoutPosition):
                self.feedback.append(frame)
                continue
            yield frame
            if isinstance(frame, EndOfStream):
                return


async def test_frames_pass_in_order_through_pure_and_duplex_stages() -> None:
    out = [
        f async for f in Pipeline([numbers(), PassThrough(), Recorder(), PassThrough()]).stream()
    ]
    assert [f.pts for f in out if isinstance(f, AudioFrame)] == [i * 0.02 for i in range(20)]
    assert isinstance(out[-1], EndOfStream)


async def test_unhandled_frames_pass_unchanged() -> None:
    frames = [TextInput(text="hi"), audio(1), ToolResult(call_id="x")]
    result = await run_stage(PassThrough(), frames)
    assert result.down[:3] == frames


async def test_send_upstream_reaches_nearest_accepting_stage() -> None:
    rec = Recorder()

    @stage()
    async def replier(frames, ctx):  # type: ignore[no-untyped-def]
        async for frame in frames:
            if isinstance(frame, AudioFrame) and frame.pts == 0:
                ctx.send_upstream(ToolResult(call_id="c1", output="42"))
                ctx.send_upstream(PlayoutPosition(item_id="i", played_ms=20))
            yield frame

    await Pipeline([numbers(), rec, PassThrough(), replier()]).run()
    assert ToolResult(call_id="c1", output="42") in rec.feedback
    assert any(isinstance(f, PlayoutPosition) for f in rec.feedback)


async def test_send_upstream_without_taker_returns_false() -> None:
    seen: list[bool] = []

    @stage()
    async def sender(frames, ctx):  # type: ignore[no-untyped-def]
        async for frame in frames:
            seen.append(ctx.send_upstream(ToolResult(call_id="x")))
            yield frame

    await Pipeline([numbers(), sender()]).run()
    assert seen and not any(seen)


async def test_urgent_frames_overtake_queued_audio() -> None:
    gate = asyncio.Event()
    order: list[str] = []

    class Slow(Stage):
        accepts = (Interrupt,)

        async def process(self, frames):  # type: ignore[no-untyped-def]
            await gate.wait()  # let audio pile up in the inbox first
            async for frame in frames:
                order.append(type(frame).__name__)
                yield frame
                if isinstance(frame, EndOfStream):
                    return

    slow = Slow()

    @stage()
    async def interrupter(frames, ctx):  # type: ignore[no-untyped-def]
        async for frame in frames:
            yield frame

    async def drive() -> None:
        for _ in range(100):
            if slow._ctx is not None and slow.ctx.inbox is not None and len(slow.ctx.inbox) >= 10:
                break
            await asyncio.sleep(0)
        slow.ctx.inbox.put_nowait(Interrupt())  # type: ignore[union-attr]
        gate.set()

    pipeline = Pipeline([numbers(), slow, interrupter()])
    driver = asyncio.create_task(drive())
    await pipeline.run()
    await driver
    assert order[0] == "Interrupt"
    assert order.count("AudioFrame") == 20


async def test_back_pressure_bounds_the_inbox() -> None:
    produced = 0
    peak = 0

    @stage()
    async def source(frames):  # type: ignore[no-untyped-def]
        nonlocal produced
        for i in range(200):
            produced += 1
            yield audio(i)

    class Lazy(Stage):
        duplex = True

        async def process(self, frames):  # type: ignore[no-untyped-def]
            nonlocal peak
            async for frame in frames:
                peak = max(peak, len(self.ctx.inbox))  # type: ignore[arg-type]
                await asyncio.sleep(0)
                yield frame
                if isinstance(frame, EndOfStream):
                    return

    await Pipeline([source(), Lazy()], inbox_size=8).run()
    assert produced == 200
    assert peak <= 8


async def test_exception_ends_pipeline_with_error_naming_the_stage() -> None:
    closed: list[str] = []

    class Boom(Stage):
        async def process(self, frames):  # type: ignore[no-untyped-def]
            async for frame in frames:
                if isinstance(frame, AudioFrame) and frame.pts > 0.1:
                    raise ValueError("cannot handle this frame")
                yield frame

    class Closer(Stage):
        async def process(self, frames):  # type: ignore[no-untyped-def]
            try:
                async for frame in frames:
                    yield frame
            finally:
                closed.append("closer")

    boom = Boom()
    boom.id = "boom"
    result = await Pipeline([numbers(), Recorder(), boom, Closer()]).run()
    assert not result.ok
    [error] = result.errors
    assert error.stage == "boom"
    assert "cannot handle this frame" in error.message
    assert error.fatal
    assert closed == ["closer"]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_failing_task_of_a_duplex_stage_is_blamed_on_it() -> None:
    class Spawner(Stage):
        duplex = True

        async def process(self, frames):  # type: ignore[no-untyped-def]
            async def fail() -> None:
                raise RuntimeError("socket reader died")

            self.ctx.spawn(fail())
            async for frame in frames:
                yield frame

    spawner = Spawner()
    spawner.id = "transport"
    result = await Pipeline([numbers(), spawner, PassThrough()]).run()
    assert [e.stage for e in result.errors] == ["transport"]
    assert "socket reader died" in result.errors[0].message


async def test_cancellation_shuts_down_cleanly_and_leaves_no_task() -> None:
    finalized: list[str] = []

    @stage()
    async def endless(frames):  # type: ignore[no-untyped-def]
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                yield audio(i % 100)
                i += 1
        finally:
            finalized.append("source")

    class Holder(Stage):
        duplex = True

        async def process(self, frames):  # type: ignore[no-untyped-def]
            try:
                async for frame in frames:
                    yield frame
            finally:
                finalized.append("holder")

    pipeline = Pipeline([endless(), Holder(), PassThrough()])
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(finalized) == ["holder", "source"]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_pipeline_runs_once() -> None:
    pipeline = Pipeline([numbers()])
    await pipeline.run()
    with pytest.raises(RuntimeError):
        await pipeline.run()


class GainOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    factor: int = 2


async def test_function_stage_gets_typed_options() -> None:
    @stage()
    async def double(frames, options: GainOptions):  # type: ignore[no-untyped-def]
        async for frame in frames:
            if isinstance(frame, AudioFrame):
                frame = msgspec.structs.replace(frame, pts=frame.pts * options.factor)
            yield frame

    assert double.Options is GainOptions
    result = await run_stage(double(factor=3), [audio(1)])
    assert result.of(AudioFrame)[0].pts == pytest.approx(0.06)


def test_bad_keyword_option_is_a_config_error() -> None:
    from pipeflow.errors import ConfigError

    @stage()
    async def double(frames, options: GainOptions):  # type: ignore[no-untyped-def]
        async for frame in frames:
            yield frame

    with pytest.raises(ConfigError, match="factr"):
        double(factr=3)


def test_stage_decorator_rejects_plain_functions() -> None:
    with pytest.raises(TypeError):
        stage()(lambda frames: frames)  # type: ignore[arg-type]


async def test_error_frame_from_harness() -> None:
    class Fails(Stage):
        async def process(self, frames):  # type: ignore[no-untyped-def]
            async for _ in frames:
                raise KeyError("x")
            yield  # pragma: no cover

    result = await run_stage(Fails(), [audio(0)])
    assert isinstance(result.down[-1], ErrorFrame)


async def test_a_cancelled_run_keeps_its_partial_summary() -> None:
    @stage()
    async def endless(frames):  # type: ignore[no-untyped-def]
        i = 0
        while True:
            await asyncio.sleep(0.001)
            yield audio(i % 100)
            i += 1

    pipeline = Pipeline([endless(), PassThrough()], count_frames=True)
    task = asyncio.create_task(pipeline.run())
    while pipeline.result is None or pipeline.result.frames_out < 5:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = pipeline.result
    assert result.cancelled and not result.ok
    assert result.frames_out >= 5 and result.duration > 0
    assert result.frames_by_stage["passthrough"] == result.frames_out


async def test_run_counts_what_stream_yields_and_shuts_down_when_on_frame_raises() -> None:
    # run() reads the chain's output itself (not through stream()): the same frames, and
    # a failing on_frame still closes every stage before the error leaves run().
    streamed = [frame async for frame in Pipeline([numbers(), PassThrough()]).stream()]
    result = await Pipeline([numbers(), PassThrough()]).run()
    assert result.frames_out == len(streamed) == 21
    assert result.frames_by_type == {"AudioFrame": 20, "EndOfStream": 1}
    closed: list[str] = []

    class Closer(Stage):
        async def process(self, frames):  # type: ignore[no-untyped-def]
            try:
                async for frame in frames:
                    yield frame
            finally:
                closed.append("closer")

    def refuse(frame: Frame) -> None:
        raise LookupError("the consumer failed")

    with pytest.raises(LookupError, match="the consumer failed"):
        await Pipeline([numbers(), Closer()]).run(on_frame=refuse)
    assert closed == ["closer"]
