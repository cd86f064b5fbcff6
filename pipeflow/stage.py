"""Stages: async-stream transformers with typed options.

A stage takes the upstream ``AsyncIterator[Frame]`` and yields frames. What it
does not handle it passes on unchanged and in order. Two ways to write one::

    class Gain(Stage):
        name = "gain"
        Options = GainOptions

        async def process(self, frames):
            async for frame in frames:
                ...
                yield frame

    @stage("gain")
    async def gain(frames: Frames, options: GainOptions) -> Frames:
        async for frame in frames:
            yield frame

A pure stage is one generator hop with no task and no queue. A *duplex*
stage (one that declares ``accepts`` or sets ``duplex = True``) is given one
merged input instead: its upstream, frames later stages send back with
``ctx.send_upstream``, and frames its own tasks ``ctx.emit``; urgent frames
(interrupts) overtake queued data.

A stage says what part it plays with ``role``: ``"source"`` (makes frames,
ignores its input: a session's push source takes its place), ``"sink"``
(the end of the line: a text chat drops it) or ``"transform"`` (the default:
everything else, kept whatever a caller changes). Keyword options are
validated exactly as YAML is (ranges, choices, unknown names).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import typing
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_type_hints

import msgspec

from pipeflow.convert import convert
from pipeflow.frames import Frame

if TYPE_CHECKING:
    from pipeflow.context import PipelineContext
    from pipeflow.inbox import Inbox

__all__ = ["NAMED_STAGES", "Frames", "NoOptions", "Role", "Stage", "StageContext", "stage"]

Frames = AsyncIterator[Frame]
Role = Literal["source", "transform", "sink"]
"""What part a stage plays in a chain (see ``Stage.role``)."""

NAMED_STAGES: dict[str, type[Stage]] = {}
"""Every Stage class defined with a ``name``, by name (the latest wins): the
registry's record of built-in and imported stages."""


class NoOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of a stage that takes none."""


class StageContext:
    """What a running stage can reach: its name, the pipeline, its neighbours.

    Attributes:
        name: the stage's id in its pipeline (``type`` or its ``id`` option).
        index: position in the chain, 0 for the first stage.
        pipeline: the shared ``PipelineContext`` (session id, userdata, agent).
        inbox: the merged input of a duplex stage, else ``None``.
        log: a logger named after the stage.
    """

    def __init__(
        self,
        name: str,
        index: int,
        pipeline: PipelineContext,
        inbox: Inbox | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.pipeline = pipeline
        self.inbox = inbox
        self.log = logging.getLogger(f"pipeflow.stage.{name}")

    def output_path(self, path: str | os.PathLike[str]) -> Path:
        """Where a stage writes ``path``: relative paths go under the pipeline's output_dir."""
        result = Path(path)
        folder = self.pipeline.output_dir
        if not result.is_absolute() and folder:
            result = Path(folder) / result
        return result

    def upstream_stages(self) -> list[Stage]:
        """Stages before this one, nearest first."""
        return list(reversed(self.pipeline.stages[: self.index]))

    def downstream_stages(self) -> list[Stage]:
        """Stages after this one, nearest first."""
        return self.pipeline.stages[self.index + 1 :]

    def send_upstream(self, frame: Frame) -> bool:
        """Drop ``frame`` into the inbox of the nearest upstream stage accepting its type.

        Stages further upstream that list the type in ``observes`` get a
        copy too (a simulated caller waits for the agent's audio to finish).
        Never blocks and never waits behind queued audio: feedback is small
        and must not deadlock against the audio flowing the other way.
        Returns False when no stage accepts it.
        """
        delivered = False
        for candidate in self.upstream_stages():
            inbox = candidate.ctx.inbox
            if inbox is None:
                continue
            if not delivered and isinstance(frame, candidate.accepts):
                inbox.put_feedback(frame)
                delivered = True
            elif isinstance(frame, candidate.observes):
                inbox.put_feedback(frame)
        if not delivered:
            self.log.debug("no upstream stage accepts %s; dropped", type(frame).__name__)
        return delivered

    async def emit(self, frame: Frame) -> None:
        """Feed a frame from this stage's own task into its merged input (bounded)."""
        if self.inbox is None:
            raise RuntimeError(f"stage {self.name!r} is not duplex; it cannot emit from a task")
        await self.inbox.put(frame)

    def emit_nowait(self, frame: Frame) -> None:
        """Like ``emit`` but never waits (for urgent or rare frames)."""
        if self.inbox is None:
            raise RuntimeError(f"stage {self.name!r} is not duplex; it cannot emit from a task")
        self.inbox.put_nowait(frame)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run a task owned by the pipeline: cancelled and awaited at shutdown.

        If the task raises, the exception is re-raised inside this stage's
        ``process`` (through its inbox) when the stage is duplex, so it is
        reported against this stage; otherwise the pipeline fails with it.
        """
        return self.pipeline.spawn(coro, inbox=self.inbox, name=name or self.name)


class Stage:
    """Base of every stage. Subclasses override ``process``.

    Class attributes:
        name: short registry name used in YAML (``type: resample``).
        Options: the msgspec Struct of this stage's options.
        role: ``"source"``, ``"transform"`` (the default) or ``"sink"``; what
            a session or a text chat may replace (see the module docstring).
        writes: names of options that are files this stage writes (under
            the pipeline's output_dir); a call's files are kept apart by them.
        accepts: frame types this stage takes from later stages (feedback).
        observes: feedback types this stage wants a copy of even when a
            nearer stage accepts them.
        duplex: give this stage a merged input even without ``accepts``.
        consumes / produces: frame types, for the generated reference.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    role: ClassVar[Role] = "transform"
    writes: ClassVar[tuple[str, ...]] = ()
    accepts: ClassVar[tuple[type[Frame], ...]] = ()
    observes: ClassVar[tuple[type[Frame], ...]] = ()
    duplex: ClassVar[bool] = False
    consumes: ClassVar[tuple[type[Frame], ...]] = ()
    produces: ClassVar[tuple[type[Frame], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.role not in typing.get_args(Role):
            raise TypeError(f"stage {cls.describe()}: role must be one of "
                            f"{', '.join(typing.get_args(Role))}, not {cls.role!r}")
        if cls.__dict__.get("name"):
            NAMED_STAGES[cls.name] = cls

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        """Make the stage from an options struct or keyword options.

        Either way the options are checked as a pipeline file's are.

        Raises:
            ConfigError: an option is unknown, missing, of the wrong type or
                out of range; the message names the stage and the option.
            TypeError: both a struct and keywords were given.
        """
        if options is not None and kwargs:
            raise TypeError("pass either an options struct or keyword options, not both")
        data = kwargs if options is None else msgspec.structs.asdict(options)
        self.options: Any = convert(data, self.Options, f"stage {self.describe()}")
        self._ctx: StageContext | None = None
        self.id = ""

    @classmethod
    def describe(cls) -> str:
        """The name users know this stage by."""
        return cls.name or f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def is_source(cls) -> bool:
        """Whether this stage makes frames of its own: it produces and consumes none."""
        return bool(cls.produces) and not cls.consumes

    @classmethod
    def is_duplex(cls) -> bool:
        """Whether the runtime gives this stage a merged input."""
        return cls.duplex or bool(cls.accepts) or bool(cls.observes)

    @property
    def ctx(self) -> StageContext:
        """The context, available once the stage is part of a running pipeline."""
        if self._ctx is None:
            raise RuntimeError(f"stage {self.describe()} is not bound to a pipeline")
        return self._ctx

    def bind(self, ctx: StageContext) -> None:
        """Attach the stage to a pipeline; called by the runtime before ``process``."""
        self._ctx = ctx

    def owns_frame(self, frame: Any) -> bool:
        """Whether a traceback frame belongs to this stage's ``process`` (for error reports)."""
        return frame.f_locals.get("self") is self

    async def process(self, frames: Frames) -> Frames:
        """Transform the stream. The default passes every frame on unchanged."""
        async for frame in frames:
            yield frame


class FunctionStage(Stage):
    """A stage made from an async generator function by ``@stage``."""

    function: ClassVar[Callable[..., Frames]]
    wants: ClassVar[tuple[str, ...]] = ()

    def owns_frame(self, frame: Any) -> bool:
        return frame.f_code is type(self).function.__code__ and (
            frame.f_locals.get("ctx") is self._ctx
            or frame.f_locals.get("options") is self.options
        )

    def process(self, frames: Frames) -> Frames:  # type: ignore[override]
        kwargs: dict[str, Any] = {}
        if "options" in self.wants:
            kwargs["options"] = self.options
        if "ctx" in self.wants:
            kwargs["ctx"] = self.ctx
        return type(self).function(frames, **kwargs)


def stage(
    name: str = "",
    *,
    options: type[msgspec.Struct] | None = None,
    accepts: tuple[type[Frame], ...] = (),
    duplex: bool = False,
    role: Role = "transform",
) -> Callable[[Callable[..., Frames]], type[Stage]]:
    """Turn an async generator function into a registered stage class.

    The function takes the upstream frames first, then optionally
    ``options`` (its annotation is the options struct) and ``ctx``.

    Args:
        name: short registry name; empty keeps it unregistered (reference it
            from YAML as ``module:attr``).
        options: the options struct, if not given by annotation.
        accepts: feedback frame types (makes the stage duplex).
        duplex: ask for a merged input.
        role: ``"source"``, ``"transform"`` (the default) or ``"sink"``.

    Returns:
        A ``Stage`` subclass; call it with keyword options to make an instance.
    """

    def decorate(function: Callable[..., Frames]) -> type[Stage]:
        if not inspect.isasyncgenfunction(function):
            raise TypeError(f"@stage needs an async generator function, got {function!r}")
        params = inspect.signature(function).parameters
        wants = tuple(p for p in ("options", "ctx") if p in params)
        opts = options
        if opts is None and "options" in params:
            hints = get_type_hints(function)
            opts = hints.get("options")
        attrs: dict[str, Any] = {
            "function": staticmethod(function),
            "wants": wants,
            "Options": opts or NoOptions,
            "accepts": accepts,
            "duplex": duplex,
            "role": role,
            "__doc__": function.__doc__,
            "__module__": function.__module__,
            "__qualname__": function.__qualname__,
        }
        if name:
            attrs["name"] = name
        return type(function.__name__, (FunctionStage,), attrs)

    return decorate
