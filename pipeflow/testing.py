"""A harness for testing one stage: frames in, frames out, both directions.

    result = await run_stage(Resample(rate=24000), [AudioFrame(...), ...])
    result.down   # frames the stage yielded downstream
    result.up     # frames it (or ``respond``) sent upstream with send_upstream

``respond(frame)`` plays the part of later stages: it is called with every
frame the stage yields and returns frames to send back upstream into the
stage (a sink's played position, a tool result...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeflow.frames import EndOfStream, ErrorFrame, Frame
from pipeflow.pipeline import Pipeline, PipelineContext
from pipeflow.stage import Frames, Stage

__all__ = ["StageResult", "run_stage"]


@dataclass
class StageResult:
    """What a stage did during ``run_stage``."""

    down: list[Frame] = field(default_factory=list)
    up: list[Frame] = field(default_factory=list)

    def of(self, cls: type[Frame]) -> list[Any]:
        """Downstream frames of one type."""
        return [f for f in self.down if isinstance(f, cls)]

    @property
    def errors(self) -> list[ErrorFrame]:
        """Error frames that came out."""
        return self.of(ErrorFrame)


class _Feed(Stage):
    """Yields the given frames; records what reaches it from downstream."""

    accepts = (Frame,)

    def __init__(self, frames: Iterable[Frame], end: bool) -> None:
        super().__init__()
        self.frames = list(frames)
        self.end = end

    async def process(self, frames: Frames) -> Frames:  # ignores its (empty) input
        for frame in self.frames:
            yield frame
        if self.end and not any(isinstance(f, EndOfStream) for f in self.frames):
            yield EndOfStream()


class _Respond(Stage):
    """Answers downstream frames with frames sent upstream."""

    def __init__(self, respond: Callable[[Frame], Iterable[Frame]] | None) -> None:
        super().__init__()
        self.respond = respond

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            yield frame
            if self.respond is not None:
                for reply in self.respond(frame) or ():
                    self.ctx.send_upstream(reply)


async def run_stage(
    stage: Stage,
    frames: Iterable[Frame],
    *,
    respond: Callable[[Frame], Iterable[Frame]] | None = None,
    end: bool = True,
    context: PipelineContext | None = None,
) -> StageResult:
    """Run ``stage`` between a feeder and a responder and collect its traffic.

    Args:
        stage: the stage under test (a fresh instance).
        frames: frames fed to it, in order.
        respond: stands in for later stages (see the module docstring).
        end: append an EndOfStream when ``frames`` has none.
        context: a pipeline context (agent, userdata) when the stage needs one.
    """
    feed = _Feed(frames, end)
    pipeline = Pipeline([feed, stage, _Respond(respond)], name="test", context=context)
    result = StageResult()
    async for frame in pipeline.stream():
        result.down.append(frame)
    inbox = feed.ctx.inbox
    assert inbox is not None
    while len(inbox):
        item = await inbox.get()
        if item is not None:
            result.up.append(item)
    return result
