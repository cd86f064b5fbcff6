"""The Agent: who the pipeline talks as.

An ``Agent`` holds instructions, tools, voice and model, the component slots
(vad, stt, llm, tts) that map onto pipeline stages, event callbacks and the
initial per-session ``userdata``. Build one in Python or from the ``agent``
section of a pipeline file; stages read it from ``ctx.pipeline.agent``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeflow.config import AgentConfig, load_config
from pipeflow.errors import ConfigError
from pipeflow.events import check_event_name
from pipeflow.registry import import_ref, importable
from pipeflow.tools import ToolSet

__all__ = ["Agent"]


class Agent:
    """Instructions, tools, voice and callbacks for one kind of conversation.

    Args:
        instructions: system instructions for the model.
        tools: ``@tool`` functions, or a ``ToolSet``.
        name: used in logs and as the worker's agent name.
        voice: the model's voice.
        model: the model name.
        callbacks: event name -> callable or list of callables.
        userdata: initial per-session state (copied for each session).
        setup: ``fn(userdata, output_dir)`` run before each session starts.
        summary: ``fn(userdata) -> dict`` of extra lines for run summaries.
        vad, stt, llm, tts: component slots; a string names the engine or
            model, a mapping gives options. ``llm`` gives the transport's
            model (a name, or ``{"model": ...}``) and ``tts`` its voice (a
            name, or ``{"voice": ...}``) when ``model`` / ``voice`` are not
            set; ``stt`` the model that transcribes the caller's audio (the
            transport's ``transcription_model`` when that is not set); ``vad``
            gives the engine (a name) or the options of the vad stage of a
            session's default pipeline (see ``vad_options``).
        **seed_names: the reference library's spellings of these
            (``agent_id=`` for ``name``; see ``pipeflow.seednames``).

    Raises:
        ConfigError: a slot that is neither a string nor a mapping, or a name
            given under both spellings.
        TypeError: an unknown keyword argument.
    """

    def __init__(
        self,
        instructions: str = "You are a helpful voice assistant.",
        *,
        tools: Iterable[Any] = (),
        name: str = "agent",
        voice: str | None = None,
        model: str | None = None,
        callbacks: dict[str, Any] | None = None,
        userdata: dict[str, Any] | None = None,
        setup: Callable[..., Any] | None = None,
        summary: Callable[[Any], dict[str, Any]] | None = None,
        vad: str | dict[str, Any] | None = None,
        stt: str | dict[str, Any] | None = None,
        llm: str | dict[str, Any] | None = None,
        tts: str | dict[str, Any] | None = None,
        **seed_names: Any,
    ) -> None:
        from pipeflow.seednames import aliases, rename

        known = aliases("Agent")
        for key in seed_names:
            if key not in known:
                raise TypeError(f"Agent() got an unexpected keyword argument {key!r}")
        renamed = rename(seed_names, "Agent", frozenset())
        if "name" in renamed:
            if name != "agent":
                raise ConfigError("Agent: 'name' is given twice (as 'agent_id' and 'name')")
            name = renamed["name"]

        from pipeflow.realtime.slots import check_provider

        if model:
            check_provider("agent.model", model, "llm")
        if voice:
            check_provider("agent.voice", voice, "tts")
        self.instructions = instructions
        self.name = name
        self.voice = voice or _slot_value(tts, "voice", "tts")
        self.model = model or _slot_value(llm, "model", "llm")
        self.transcription_model = _slot_value(stt, "model", "stt")
        _slot_value(vad, "engine", "vad")
        self.tools: ToolSet = tools if isinstance(tools, ToolSet) else ToolSet(list(tools))
        self.callbacks: dict[str, list[Callable[..., Any]]] = {}
        for event, fns in (callbacks or {}).items():
            for fn in fns if isinstance(fns, list | tuple) else [fns]:
                self.on(event, fn)
        self.userdata = userdata or {}
        self.setup = setup
        self.summary = summary
        self.vad, self.stt, self.llm, self.tts = vad, stt, llm, tts

    @property
    def agent_id(self) -> str:
        """The reference library's name for ``name``."""
        return self.name

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register a sync or async callback for an event (see ``pipeflow.events``)."""
        check_event_name(event)
        self.callbacks.setdefault(event, []).append(callback)
        return callback

    def vad_options(self) -> dict[str, Any]:
        """Options for a ``vad`` stage from the ``vad`` slot (empty when unset)."""
        if self.vad is None:
            return {}
        if isinstance(self.vad, str):
            return {"engine": self.vad}
        return dict(self.vad)

    def tool_schemas(self, shape: str = "realtime") -> list[dict[str, Any]]:
        """The agent's tools in OpenAI function format (``realtime`` or ``chat``)."""
        return self.tools.to_openai_format(shape)

    def new_userdata(self) -> dict[str, Any]:
        """A fresh copy of the initial userdata for one session."""
        return copy.deepcopy(self.userdata)

    @classmethod
    def from_config(cls, config: AgentConfig) -> Agent:
        """Build an agent from a validated ``agent`` section.

        Raises:
            ConfigError: a tool or callback reference does not import.
        """
        try:
            tools = ToolSet.from_refs(config.tools)
        except ConfigError as exc:
            raise ConfigError(f"agent.tools: {exc}") from None
        callbacks: dict[str, list[Any]] = {}
        for event, refs in config.callbacks.items():
            for ref in [refs] if isinstance(refs, str) else refs:
                fn = import_ref(ref, f"callback for {event!r}")
                if not callable(fn):
                    raise ConfigError(f"agent.callbacks.{event}: {ref!r} is not callable")
                callbacks.setdefault(event, []).append(fn)
        setup = import_ref(config.setup, "agent setup") if config.setup else None
        summary = import_ref(config.summary, "agent summary") if config.summary else None
        return cls(
            config.instructions,
            tools=tools,
            name=config.name,
            voice=config.voice,
            model=config.model,
            callbacks=callbacks,
            userdata=config.userdata,
            setup=setup,
            summary=summary,
            vad=config.vad,
            stt=config.stt,
            llm=config.llm,
            tts=config.tts,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Agent:
        """Build the agent declared in a pipeline file's ``agent`` section."""
        config = load_config(path)
        with importable(config.folder):
            return cls.from_config(config.agent or AgentConfig())

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, tools={self.tools.names()!r})"


def _slot_value(slot: Any, key: str, where: str) -> str | None:
    """The name a component slot gives: the string itself, or ``slot[key]``,
    checked against what the transport serves (``openai/`` dropped)."""
    from pipeflow.realtime.slots import SUPPORTED, check_slot

    if slot is None or isinstance(slot, str):
        return check_slot(where, slot) if slot and where in SUPPORTED else slot or None
    if isinstance(slot, dict):
        value = slot.get(key)
        if value is None or isinstance(value, str):
            return check_slot(where, value) if value and where in SUPPORTED else value
        raise ConfigError(f"agent.{where}.{key} must be a string, got {type(value).__name__}")
    raise ConfigError(
        f"agent.{where} must be a name or a mapping of options, got {type(slot).__name__}"
    )

