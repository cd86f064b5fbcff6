"""aiostream integration: a pipeline as an aiostream stream, operators as stages."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiostream import pipe, stream

from pipeflow import Pipeline
from pipeflow.frames import AudioFrame, EndOfStream, ErrorFrame, Frame, TextInput
from pipeflow.registry import registry
from pipeflow.stage import Frames, Stage
from pipeflow.streams import OperatorStage, as_stream, operator_stage


def tone(ms: int = 100) -> Stage:
    return registry.resolve("tone")(duration_ms=ms, frame_ms=20, speed=0)


class Texts(Stage):
    """A source of numbered text frames, then EndOfStream."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.closed = False

    async def process(self, frames: Frames) -> Frames:
        try:
            for i in range(self.n):
                yield TextInput(text=str(i))
            yield EndOfStream()
        finally:
            self.closed = True


async def test_a_pipeline_pipes_into_aiostream_operators() -> None:
    pipeline = Pipeline([tone(100), registry.resolve("resample")(rate=24000)])
    frames = await (pipeline | pipe.filter(lambda f: isinstance(f, AudioFrame)) | pipe.list())
    assert frames and {f.sample_rate for f in frames} == {24000}
    assert abs(sum(len(f.pcm) // 2 for f in frames) - 2400) <= 240  # 100 ms at 24 kHz


async def test_as_stream_merges_pipelines_and_closes_them() -> None:
    a, b = Texts(3), Texts(1000)
    merged = stream.merge(as_stream(Pipeline([a])), as_stream(Pipeline([b])))
    texts = await (merged | pipe.filter(lambda f: isinstance(f, TextInput)) | pipe.take(5)
                   | pipe.list())
    assert len(texts) == 5
    assert a.closed and b.closed  # take() ended the stream: both pipelines shut down


async def test_operator_stages_sit_between_ordinary_stages() -> None:
    seen: list[Frame] = []

    async def collect(frames: Frames) -> Frames:
        async for frame in frames:
            seen.append(frame)
            yield frame

    odd = operator_stage(pipe.filter(
        lambda f: not isinstance(f, TextInput) or int(f.text) % 2 == 1))
    sink = registry.resolve("passthrough")()
    sink.process = collect  # type: ignore[method-assign]
    result = await Pipeline([Texts(6), odd, operator_stage(pipe.take(3)), sink]).run()
    assert result.ok
    assert [f.text for f in seen if isinstance(f, TextInput)] == ["1", "3", "5"]
    assert odd.id == "aiostream:filter"


async def test_an_operator_that_raises_is_reported_against_its_stage() -> None:
    def boom(frame: Frame) -> Frame:
        raise ValueError("bad frame")

    result = await Pipeline([Texts(2), operator_stage(pipe.map(boom), "boom")]).run()
    [error] = [e for e in result.errors if isinstance(e, ErrorFrame)]
    assert error.fatal and "bad frame" in error.message
    assert error.stage == "aiostream:boom"


def test_an_operator_stage_needs_an_operator() -> None:
    with pytest.raises(TypeError, match="aiostream operator"):
        OperatorStage("filter")  # type: ignore[arg-type]


def test_plain_pipelines_never_import_aiostream() -> None:
    code = (
        "import asyncio, sys\n"
        "from pipeflow import Pipeline\n"
        "from pipeflow.registry import registry\n"
        "p = Pipeline([registry.resolve('tone')(duration_ms=100, speed=0),"
        " registry.resolve('resample')(rate=24000), registry.resolve('null')(realtime=False)])\n"
        "assert asyncio.run(p.run()).ok\n"
        "print('aiostream' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
