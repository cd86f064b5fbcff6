"""Pipeline files: YAML -> msgspec-typed config -> Pipeline.

A pipeline file has a ``name``, an optional ``agent`` section and an ordered
list of ``stages``; each stage is a mapping with ``type`` (a short name or a
``package.module:Name`` reference), an optional ``id``, and that stage's own
options inline::

    name: echo
    stages:
      - type: tone
        frequency: 440
      - type: resample
        rate: 24000
      - type: wav_sink
        path: out/tone.wav

Every mistake is a ``ConfigError`` naming the file, line and column, the stage
and the field, with a suggestion for misspellings; a file with several raises
``ConfigErrors`` holding all of them in file order (``pipeflow validate``
prints each), agent references and model slots included.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from pipeflow.convert import explain, value_at
from pipeflow.errors import ConfigError, ConfigErrors
from pipeflow.registry import importable, registry
from pipeflow.stage import Stage
from pipeflow.yamlsource import Located, load_yaml

__all__ = [
    "AgentConfig",
    "PipelineConfig",
    "StageSpec",
    "load_config",
    "parse_config",
]


class AgentConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``agent`` section: who the pipeline talks as."""

    name: str = "agent"
    """A name for logs and the worker's agent name."""
    instructions: str = "You are a helpful voice assistant."
    """System instructions for the model."""
    voice: str | None = None
    """Voice of the model's speech (e.g. alloy, marin), passed as is; another
    provider's (elevenlabs/NAME) is an error."""
    model: str | None = None
    """Model name (e.g. gpt-realtime), passed as is (a dated model, a deployment);
    the transport's own option wins; another provider's (anthropic/NAME) is an error."""
    tools: list[str] = msgspec.field(default_factory=list)
    """Tool references: 'package.module:function' or a whole 'package.module'."""
    callbacks: dict[str, str | list[str]] = msgspec.field(default_factory=dict)
    """Event name -> 'module:function' callback(s)."""
    userdata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Initial per-session state handed to tools."""
    setup: str | None = None
    """'module:function(userdata, output_dir)' run before the pipeline starts."""
    summary: str | None = None
    """'module:function(userdata) -> dict' of lines for the end-of-run summary."""
    vad: str | dict[str, Any] | None = None
    """VAD component slot (maps to the vad stage's engine)."""
    stt: str | dict[str, Any] | None = None
    """Speech-to-text component slot: the transport's transcription model
    (gpt-4o-mini-transcribe, gpt-4o-transcribe, whisper-1; openai/NAME too)."""
    llm: str | dict[str, Any] | None = None
    """Language-model component slot: the realtime transport's model (gpt-realtime,
    gpt-realtime-mini, gpt-4o-realtime-preview...; openai/NAME too). Another
    provider is an error naming the supported models."""
    tts: str | dict[str, Any] | None = None
    """Text-to-speech component slot: the realtime transport's voice (alloy, ash,
    ballad, cedar, coral, echo, marin, sage, shimmer, verse; openai/NAME too)."""


class _FileShape(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = "pipeline"
    description: str = ""
    agent: AgentConfig | None = None
    stages: list[dict[str, Any]]
    output_dir: str = "out"
    inbox_size: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 64


class StageSpec(msgspec.Struct, kw_only=True):
    """One validated stage: its class, options and where it was declared."""

    type: str
    id: str
    cls: Any
    options: Any
    where: str = ""

    def build(self) -> Stage:
        """A fresh stage instance."""
        stage = self.cls(self.options)
        stage.id = self.id
        return stage


class PipelineConfig(msgspec.Struct, kw_only=True):
    """A validated pipeline file."""

    name: str
    description: str
    agent: AgentConfig | None
    stages: list[StageSpec]
    output_dir: str
    inbox_size: int
    source: str = ""
    """The file it came from ('' when built from a mapping)."""
    folder: str = ""
    """The file's folder: importable while the pipeline is built and run ('' for none)."""


def _convert(
    data: Any,
    target: type,
    located: Located,
    base: tuple[str | int, ...],
    what: str,
    noun: str = "option",
) -> Any:
    try:
        return msgspec.convert(data, target)
    except msgspec.ValidationError as exc:
        problem = explain(exc, target, data, noun)
        error = ConfigError(problem.message(what, noun), located.where((*base, *problem.path)))
        error.path = problem.path  # type: ignore[attr-defined]
        raise error from None


def _convert_all(
    data: dict[str, Any],
    target: type,
    located: Located,
    base: tuple[str | int, ...],
    what: str,
    errors: list[ConfigError],
    noun: str = "option",
) -> Any:
    """``_convert`` that reports every bad field, not only the first.

    Each failing field is recorded in ``errors`` and dropped before trying
    again, so one pass finds them all. Returns the struct converted without
    the bad fields, or None when no such struct can be made (a required field
    is missing or wrong).
    """
    data = copy.deepcopy(data)
    dropped_unknown = False
    for _ in range(100):
        try:
            return _convert(data, target, located, base, what, noun)
        except ConfigError as exc:
            if dropped_unknown and "missing required" in str(exc):
                return None  # most likely the misspelled field just reported
            dropped_unknown = dropped_unknown or f"unknown {noun}" in str(exc)
            errors.append(exc)
            path = list(getattr(exc, "path", ()))
            while path and not isinstance(path[-1], str):
                path.pop()  # drop the whole list, not one item: later indexes stay true
            parent: Any = value_at(data, tuple(path[:-1])) if path else None
            if not isinstance(parent, dict) or path[-1] not in parent:
                return None
            del parent[path[-1]]
    return None


def _apply_overrides(located: Located, overrides: Iterable[str]) -> None:
    """Apply ``stage.option=value`` overrides (``stage`` is an id, a type or a 0-based index).

    Each overridden value is located at its ``--set``, so an error in it names
    the command line, not the file.
    """
    data = located.data
    for item in overrides:
        target, sep, raw = item.partition("=")
        stage_ref, dot, option = target.partition(".")
        if not sep or not dot or not stage_ref or not option:
            raise ConfigError(
                f"--set {item!r}: expected STAGE.OPTION=VALUE", located.filename
            )
        stages = data.get("stages")
        if not isinstance(stages, list):
            stages = []  # the shape check below reports what is wrong with it
        chosen = None
        for index, spec in enumerate(stages):
            if isinstance(spec, dict) and (
                spec.get("id") == stage_ref
                or spec.get("type") == stage_ref
                or str(index) == stage_ref
            ):
                chosen = spec
                located.override(("stages", index, option), f"{located.filename}: --set {item!r}")
                break
        if chosen is None:
            names = [str(s.get("id") or s.get("type")) for s in stages if isinstance(s, dict)]
            close = difflib.get_close_matches(stage_ref, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--set {item!r}: no stage {stage_ref!r}{hint}", located.filename)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        chosen[option] = value


def parse_config(
    text: str,
    filename: str = "<string>",
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Validate pipeline YAML text.

    Raises:
        ConfigError: a mistake, with file:line:column, stage and field;
            ``ConfigErrors`` (a ConfigError) when there are several: every one.
    """
    located = load_yaml(text, filename, env)
    if not isinstance(located.data, dict):
        raise ConfigError("a pipeline file must be a mapping with a 'stages' list", filename)
    if "turns" in located.data and "stages" not in located.data:
        raise ConfigError(
            "this is a Realtime script (it has 'turns' and no 'stages'), not a pipeline file. "
            f"Type to it with: pipeflow chat {filename} (its 'tools', or --tools MODULE); "
            f"or play it in a pipeline: a realtime stage with script: {filename} and a tools "
            "stage after it (docs/realtime.md)", filename)
    _apply_overrides(located, overrides)
    _seed_agent_keys(located)
    errors: list[ConfigError] = []
    shape = _convert_all(located.data, _FileShape, located, (), "pipeline file", errors, "field")
    if shape is None:
        raise ConfigErrors(errors)
    if shape.agent is not None:
        from pipeflow.agent_check import check_agent_config

        errors.extend(check_agent_config(shape.agent, located.where))
    if not shape.stages:
        errors.append(ConfigError("'stages' is empty: a pipeline needs at least one stage",
                                  located.where(("stages",))))
    specs: list[StageSpec] = []
    for index, raw in enumerate(shape.stages):
        try:
            spec = _stage_spec(index, raw, located, errors)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if spec is not None:
            specs.append(spec)
    seen: set[str] = set()
    for spec in specs:
        if spec.id and spec.id in seen:
            errors.append(ConfigError(f"stage id {spec.id!r} is used twice", spec.where))
        seen.add(spec.id)
    if errors:
        errors.sort(key=_position)
        raise ConfigErrors(errors) if len(errors) > 1 else errors[0]
    return PipelineConfig(
        name=shape.name,
        description=shape.description,
        agent=shape.agent,
        stages=specs,
        output_dir=shape.output_dir,
        inbox_size=shape.inbox_size,
        source=filename,
    )


def _seed_agent_keys(located: Located) -> None:
    """Read the reference library's keys of the ``agent`` section (``agent_id``) as ours,
    keeping their place in the file for error messages."""
    from pipeflow.seednames import aliases, rename

    agent = located.data.get("agent")
    if not isinstance(agent, dict):
        return
    try:
        located.data["agent"] = rename(agent, "Agent", set(AgentConfig.__struct_fields__))
    except ConfigError as exc:
        raise ConfigError(str(exc), located.where(("agent",))) from None
    for row in aliases("Agent").values():
        if ("agent", row.seed) in located.marks:
            located.marks[("agent", row.ours)] = located.marks[("agent", row.seed)]


def _position(error: ConfigError) -> tuple[int, int]:
    """(line, column) of an error, for reporting in file order (unlocated last)."""
    found = re.search(r":(\d+):(\d+)$", error.location)
    return (int(found.group(1)), int(found.group(2))) if found else (1 << 30, 0)


def _stage_spec(
    index: int, raw: dict[str, Any], located: Located, errors: list[ConfigError]
) -> StageSpec | None:
    base: tuple[str | int, ...] = ("stages", index)
    label = f"stage {index + 1}"
    type_name = raw.get("type")
    if "type" in raw and type_name is None:
        raise ConfigError(
            f"{label}: 'type' is empty (YAML reads a bare null as nothing); "
            "for the null sink write type: \"null\" in quotes",
            located.where((*base, "type")),
        )
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{label}: missing 'type' (the stage's name)", located.where(base))
    label = f"stage {index + 1} ({type_name})"
    stage_id = raw.get("id", "")
    if not isinstance(stage_id, str):
        raise ConfigError(f"{label}: 'id' must be a string", located.where((*base, "id")))
    try:
        cls = registry.resolve(type_name)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}", located.where((*base, "type"))) from None
    options = {k: v for k, v in raw.items() if k not in ("type", "id")}
    found = len(errors)
    converted = _convert_all(options, cls.Options, located, base, label, errors)
    if len(errors) > found:
        return None
    return StageSpec(
        type=type_name,
        id=stage_id,
        cls=cls,
        options=converted,
        where=located.where(base),
    )


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Read and validate a pipeline file.

    The file's folder is importable while the file is read (so ``type:
    mystages:Denoise`` next to the file resolves) and again while the
    pipeline is built and run (``PipelineConfig.folder``), never after; it
    is ``${PIPELINE_DIR}`` in the file (for paths next to it).

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline file {file}: {exc}") from None
    folder = str(file.resolve().parent)
    env = {**(os.environ if env is None else env), "PIPELINE_DIR": folder}
    with importable(folder):
        config = parse_config(text, str(path), overrides, env)
    config.folder = folder
    return config
