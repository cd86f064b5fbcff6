"""One way to build a pipeline from a parsed file.

``Pipeline.from_file`` / ``from_config``, ``pipeflow run``, the worker's jobs,
``AgentSession.from_file`` / ``from_config`` and the gateway's calls all build
through ``build``, in three steps:

1. ``prepare``: a copy of the parsed file with the caller's ``Changes``: its
   output folder, a push source (or the caller's own source) first, the file's
   sinks swapped for the caller's (a text chat) or its playout sinks for one
   of the caller's (a gateway call's audio out), every written file kept
   inside the output folder (a gateway call), model stages pointed at a URL.
   The caller's config is never changed, so one parsed file serves many runs.
2. ``new_context``: the agent (given, or from the file's ``agent`` section),
   a fresh copy of its userdata, the output folder made and the agent's
   ``setup(userdata, output_dir)`` run in it, the job.
3. one fresh stage per spec, then the caller's own sinks.

Steps 2 and 3 import user code (tools, callbacks, setup hooks): the file's
folder is importable while they run, and while the pipeline runs, never after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from pipeflow.agent import Agent
from pipeflow.config import PipelineConfig, StageSpec
from pipeflow.context import PipelineContext
from pipeflow.registry import importable, registry
from pipeflow.stage import Stage
from pipeflow.stages.sinks import AudioSink

if TYPE_CHECKING:
    from pipeflow.job import JobContext

__all__ = ["Built", "Changes", "build", "new_context", "playout_realtime", "prepare"]

ModelUrl = Callable[[Any], "str | tuple[str, str] | None"]
"""Given a stage's options, the URL its model connection should use, or the URL
and the key to send there (None: as it is)."""


@dataclass(frozen=True, kw_only=True)
class Changes:
    """What a caller changes in a parsed pipeline file before it is built."""

    output_dir: str | None = None
    """Replaces the file's ``output_dir``."""
    push_source: bool = False
    """Put a ``push`` source first, for a session to feed: it takes the place
    (and sample rate) of the file's source, or goes before the first stage."""
    source: Stage | None = None
    """This stage first instead (a call's own source): it takes the place of
    the file's source, or goes before the first stage; wins over ``push_source``."""
    audio_sink: Stage | None = None
    """This stage takes the place of the file's first playout sink (an
    ``AudioSink``: speaker, null, wav_sink, each running a playout clock of
    its own) and the other playout sinks go; with none, it goes last. So a
    call has one playout clock: its edge's (the gateway's caller audio out)."""
    sinks: Sequence[Stage] | None = None
    """When given, the file's sinks (``role = "sink"``) give way to these stages
    (instances: a stage runs once, so give fresh ones to each build)."""
    contain_outputs: bool = False
    """Keep every file a stage writes (its ``writes`` options) inside
    ``output_dir``: a relative path stays where it is below it, any other
    keeps only its file name (two calls never write the same file)."""
    model_url: ModelUrl | None = None
    """Where each model stage connects: called with every stage's options, a
    URL replaces that stage's ``url`` option (the gateway's shared local server)."""


class Built(NamedTuple):
    """What ``build`` makes: the config it built from, the context, the stages."""

    config: PipelineConfig
    context: PipelineContext
    stages: list[Stage]


def prepare(config: PipelineConfig, changes: Changes) -> PipelineConfig:
    """A copy of ``config`` with ``changes`` applied (``config`` is left as it was).

    Raises:
        ConfigError: the push source cannot take the file source's sample rate.
    """
    specs = list(config.stages)
    base = config.output_dir
    if changes.source is not None:
        specs = specs[1:] if specs[0].cls.role == "source" else specs
    elif changes.push_source:
        specs = _push_source_first(specs)
    if changes.sinks is not None:
        specs = [spec for spec in specs if spec.cls.role != "sink"]
    if changes.contain_outputs:
        specs = [_contained(spec, base) for spec in specs]
    if changes.model_url is not None:
        specs = [_pointed(spec, changes.model_url) for spec in specs]
    output_dir = changes.output_dir if changes.output_dir is not None else base
    return msgspec.structs.replace(config, stages=specs, output_dir=output_dir)


def new_context(
    name: str,
    output_dir: str,
    *,
    session_id: str = "",
    agent: Agent | None = None,
    job: JobContext | None = None,
) -> PipelineContext:
    """A fresh context for one run: agent, userdata, output folder, job.

    The output folder is made and the agent's ``setup(userdata, output_dir)``
    hook runs here, before any stage starts, so tools find what it prepared
    (a repository, an order...).
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    context = PipelineContext(name=name, session_id=session_id, agent=agent,
                              output_dir=str(folder), job=job)
    if agent is not None:
        context.userdata = agent.new_userdata()
        if agent.setup is not None:
            agent.setup(context.userdata, str(folder))
    return context


def build(
    config: PipelineConfig,
    changes: Changes | None = None,
    *,
    session_id: str = "",
    agent: Agent | None = None,
    job: JobContext | None = None,
) -> Built:
    """Prepare ``config``, make its context and stages (see the module docstring).

    Args:
        config: a parsed pipeline file (left as it is).
        changes: what to change first.
        session_id: the run's id (a random one when empty).
        agent: the agent to serve (default: the file's ``agent`` section).
        job: the worker job the run belongs to.

    Raises:
        ConfigError: a reference does not import or a stage refuses its options.
    """
    changes = changes or Changes()
    prepared = prepare(config, changes)
    playout_at = len(prepared.stages)
    if changes.audio_sink is not None:
        playout = [i for i, spec in enumerate(prepared.stages) if issubclass(spec.cls, AudioSink)]
        playout_at = playout[0] if playout else playout_at
        kept = [spec for spec in prepared.stages if not issubclass(spec.cls, AudioSink)]
        prepared = msgspec.structs.replace(prepared, stages=kept)
    with importable(prepared.folder):
        if agent is None and prepared.agent is not None:
            agent = Agent.from_config(prepared.agent)
        context = new_context(prepared.name, prepared.output_dir, session_id=session_id,
                              agent=agent, job=job)
        stages = [spec.build() for spec in prepared.stages]
    if changes.audio_sink is not None:
        stages.insert(playout_at, changes.audio_sink)
    first = [changes.source] if changes.source is not None else []
    return Built(prepared, context, [*first, *stages, *(changes.sinks or ())])


def playout_realtime(config: PipelineConfig) -> bool:
    """Whether the file's playout sinks play in real time (the first one says; True if none)."""
    spec = next((s for s in config.stages if issubclass(s.cls, AudioSink)), None)
    return True if spec is None else bool(spec.options.realtime)


def _push_source_first(specs: list[StageSpec]) -> list[StageSpec]:
    if any(spec.cls.name == "push" for spec in specs):
        return specs
    first = specs[0]
    rate = getattr(first.options, "sample_rate", None) or 16000
    push_cls = registry.resolve("push")
    push = StageSpec(type="push", id="", cls=push_cls, where=first.where,
                     options=msgspec.convert({"sample_rate": rate}, push_cls.Options))
    return [push, *specs[1:]] if first.cls.role == "source" else [push, *specs]


def _contained(spec: StageSpec, base: str) -> StageSpec:
    changes: dict[str, Any] = {}
    for name in spec.cls.writes:
        path = getattr(spec.options, name, None)
        if isinstance(path, str) and path:
            inside = str(_inside(Path(path), Path(base)))
            if inside != path:
                changes[name] = inside
    if not changes:
        return spec
    return msgspec.structs.replace(spec, options=msgspec.structs.replace(spec.options, **changes))


def _inside(path: Path, base: Path) -> Path:
    """``path`` relative to the output folder: below it as it was, or its name alone."""
    if not path.is_absolute():
        with contextlib.suppress(ValueError):
            return path.relative_to(base)
        if ".." not in path.parts:
            return path
    return Path(path.name)


def _pointed(spec: StageSpec, model_url: ModelUrl) -> StageSpec:
    url = model_url(spec.options)
    if url is None:
        return spec
    changes = {"url": url} if isinstance(url, str) else {"url": url[0], "api_key": url[1]}
    return msgspec.structs.replace(spec, options=msgspec.structs.replace(spec.options, **changes))
