"""The pipeline runtime: a chain of stages run as composed async generators.

The common path costs one generator hop per stage: stage N's ``process`` is
called with stage N-1's output. Only duplex stages get a task (the pump that
fills their merged input). All tasks belong to the pipeline and are cancelled
and awaited when it ends, whatever way it ends, so nothing is left running.

An exception in any stage ends the run with an ``ErrorFrame`` naming that
stage; every stage's generator is then closed, last to first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeflow.build import Changes, build
from pipeflow.config import PipelineConfig, load_config
from pipeflow.context import PipelineContext
from pipeflow.errors import PipeflowError
from pipeflow.frames import ErrorFrame, Frame
from pipeflow.inbox import Inbox, merged_input
from pipeflow.registry import importable
from pipeflow.stage import Stage, StageContext

if TYPE_CHECKING:
    from pipeflow.agent import Agent
    from pipeflow.job import JobContext

__all__ = ["Pipeline", "PipelineContext", "RunResult"]

log = logging.getLogger("pipeflow.pipeline")


@dataclass
class RunResult:
    """What a finished run reports."""

    name: str
    duration: float = 0.0
    frames_out: int = 0
    frames_by_stage: dict[str, int] = field(default_factory=dict)
    frames_by_type: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorFrame] = field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """True when no fatal error ended the run."""
        return not any(e.fatal for e in self.errors) and not self.cancelled


class Pipeline:
    """A chain of stages.

    Build it from Python (``Pipeline([WavSource(path=...), Resample(rate=24000)])``)
    or from YAML (``Pipeline.from_file("pipelines/call.yaml")``), then ``await
    pipeline.run()`` or ``async for frame in pipeline.stream(): ...``.

    Args:
        stages: the chain, first stage first.
        name: used in logs and summaries.
        context: shared state; one is made when not given.
        inbox_size: bound of each duplex stage's data queue (back-pressure).
        count_frames: count frames leaving each stage (costs one extra hop
            per stage; the CLI turns it on for its summary).
    """

    def __init__(
        self,
        stages: Iterable[Stage],
        *,
        name: str = "pipeline",
        context: PipelineContext | None = None,
        inbox_size: int = 64,
        count_frames: bool = False,
        config: PipelineConfig | None = None,
    ) -> None:
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("a pipeline needs at least one stage")
        self.name = name
        self.context = context or PipelineContext(name=name)
        self.inbox_size = inbox_size
        self.count_frames = count_frames
        self.config = config
        self._ran = False
        self._counts: dict[str, int] = {}
        self.result: RunResult | None = None
        """The summary of ``run``, kept here too: a cancelled run raises but still has one."""

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        overrides: Iterable[str] = (),
        changes: Changes | None = None,
        **kwargs: Any,
    ) -> Pipeline:
        """Load, validate and build a pipeline from a YAML file.

        Built as ``pipeflow run`` builds it: the agent's userdata copied and
        its ``setup`` hook run (see ``from_config`` for the other arguments).

        Raises:
            ConfigError: the file is not a valid pipeline (message names the line).
        """
        return cls.from_config(load_config(path, overrides), changes, **kwargs)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig,
        changes: Changes | None = None,
        *,
        session_id: str = "",
        agent: Agent | None = None,
        job: JobContext | None = None,
        count_frames: bool = False,
    ) -> Pipeline:
        """Build a parsed pipeline file (``config`` itself is never changed).

        Args:
            config: from ``load_config`` / ``parse_config``.
            changes: what to change before building (output folder, push
                source, sinks...; see ``pipeflow.build.Changes``).
            session_id: the run's id (a random one when empty).
            agent: serve this agent instead of the file's ``agent`` section.
            job: the worker job the run belongs to (``context.job``).
            count_frames: count frames per stage (for the CLI's summary).

        Raises:
            ConfigError: a reference does not import or a stage refuses its options.
        """
        built = build(config, changes, session_id=session_id, agent=agent, job=job)
        return cls(built.stages, name=built.config.name, context=built.context,
                   inbox_size=built.config.inbox_size, count_frames=count_frames,
                   config=built.config)

    def __or__(self, operator: Any) -> Any:
        """``pipeline | pipe.filter(f)``: the output as an aiostream stream (see
        ``pipeflow.streams``); aiostream is imported only here, off the frame path."""
        from pipeflow.streams import as_stream

        return operator(as_stream(self))

    def _bind(self) -> None:
        if self._ran:
            raise RuntimeError("a pipeline runs once; build a new one for another run")
        self._ran = True
        self.context.stages = self.stages
        seen: dict[str, int] = {}
        for index, st in enumerate(self.stages):
            base = st.id or st.describe()
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}#{seen[base]}"
            inbox = Inbox(self.inbox_size) if st.is_duplex() else None
            st.bind(StageContext(name, index, self.context, inbox))

    async def stream(self, source: AsyncIterable[Frame] | None = None) -> AsyncIterator[Frame]:
        """Run the pipeline, yielding what leaves the last stage.

        A fatal ``ErrorFrame`` is yielded last when a stage raised. Closing
        this generator (or cancelling its consumer) shuts every stage down.
        """
        output, generators = self._start(source)
        # The file's folder stays importable while the run lasts (tools may import late).
        with importable(self.config.folder if self.config is not None else None):
            try:
                async for frame in output:
                    yield frame
            except asyncio.CancelledError:
                failure = self.context._failure
                if failure is None:
                    raise
                yield self._error_frame(failure)
            except Exception as exc:
                yield self._error_frame(exc)
            finally:
                await self._shutdown(generators)

    def _start(
        self, source: AsyncIterable[Frame] | None
    ) -> tuple[AsyncIterator[Frame], list[AsyncIterator[Frame]]]:
        """Bind the stages and compose their generators: the last one's output, and all."""
        self._bind()
        self.context._runner = asyncio.current_task()
        generators: list[AsyncIterator[Frame]] = []
        upstream: AsyncIterator[Frame] = aiter(source) if source is not None else _empty()
        for st in self.stages:
            frames = merged_input(upstream, st.ctx) if st.is_duplex() else upstream
            upstream = st.process(frames)
            if self.count_frames:
                upstream = self._counted(upstream, st.ctx.name)
            generators.append(upstream)
        return upstream, generators

    async def _counted(self, frames: AsyncIterator[Frame], name: str) -> AsyncIterator[Frame]:
        counts = self._counts
        counts[name] = 0
        async for frame in frames:
            counts[name] += 1
            yield frame

    def _error_frame(self, exc: BaseException) -> ErrorFrame:
        stage = self._blame(exc)
        name = stage.ctx.name if stage is not None else self.name
        log.error("stage %r failed: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, PipeflowError):
            message = f"{type(exc).__name__}: {message}"
        return ErrorFrame(stage=name, message=message, fatal=True)

    def _blame(self, exc: BaseException) -> Stage | None:
        """The stage whose code raised: the deepest traceback frame owned by one."""
        blamed = None
        for tb_frame, _ in traceback.walk_tb(exc.__traceback__):
            for st in self.stages:
                if st.owns_frame(tb_frame):
                    blamed = st
        return blamed

    async def _shutdown(self, generators: list[AsyncIterator[Frame]]) -> None:
        with contextlib.suppress(Exception):
            await generators[-1].aclose()  # type: ignore[attr-defined]
        await self.context.cancel_tasks()
        for gen in reversed(generators[:-1]):
            with contextlib.suppress(Exception):
                await gen.aclose()  # type: ignore[attr-defined]
        await self.context.cancel_tasks()
        self.context._runner = None

    async def run(
        self,
        source: AsyncIterable[Frame] | None = None,
        on_frame: Any = None,
    ) -> RunResult:
        """Run to the end, draining the output; returns a summary.

        Args:
            source: frames fed to the first stage (most pipelines start
                with a source stage and need none).
            on_frame: optional callable given every output frame.
        """
        result = self.result = RunResult(name=self.name)
        by_type = result.frames_by_type
        started = time.perf_counter()
        try:
            # The chain's output read here, not through ``stream``: one generator hop less
            # per frame for a run that only drains (the CLI, the worker, a file-fed call).
            output, generators = self._start(source)
            next_frame = output.__anext__
            with importable(self.config.folder if self.config is not None else None):
                try:
                    while True:
                        try:
                            frame = await next_frame()
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            failure = self.context._failure
                            if failure is None:
                                raise
                            frame = self._error_frame(failure)
                            next_frame = _ended
                        except Exception as exc:
                            frame = self._error_frame(exc)
                            next_frame = _ended
                        result.frames_out += 1
                        tag = type(frame).__name__
                        by_type[tag] = by_type.get(tag, 0) + 1
                        if isinstance(frame, ErrorFrame):
                            result.errors.append(frame)
                        if on_frame is not None:
                            on_frame(frame)
                finally:
                    await self._shutdown(generators)
        except asyncio.CancelledError:
            result.cancelled = True
            raise
        finally:
            result.duration = time.perf_counter() - started
            order = [st._ctx.name for st in self.stages if st._ctx is not None]
            result.frames_by_stage = {n: self._counts[n] for n in order if n in self._counts}
        return result


async def _ended() -> Frame:
    """What a run reads after its error frame: the end."""
    raise StopAsyncIteration


async def _empty() -> AsyncIterator[Frame]:
    return
    yield  # pragma: no cover
