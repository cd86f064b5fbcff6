"""Checks of a pipeline file's ``agent`` section that its struct alone cannot make.

Kept apart from ``pipeflow.agent`` so that ``pipeflow.config`` can run them
while it reads a file without importing the ``Agent`` (which imports config).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeflow.errors import ConfigError
from pipeflow.registry import import_ref

__all__ = ["check_agent_config"]


def check_agent_config(
    config: Any, where: Callable[[tuple[str | int, ...]], str]
) -> list[ConfigError]:
    """Every mistake in an ``agent`` section that the struct alone cannot see.

    Tool, callback, setup and summary references that do not import, event
    names that do not exist, and model slots the transport does not serve,
    each located by ``where(path)`` (``file:line:column`` of ``agent.PATH``).
    """
    from pipeflow.events import check_event_name
    from pipeflow.realtime.slots import check_provider, check_slot
    from pipeflow.tools import ToolSet

    errors: list[ConfigError] = []

    def check(path: tuple[str | int, ...], label: str, test: Callable[[], Any]) -> None:
        try:
            test()
        except ConfigError as exc:
            errors.append(ConfigError(f"{label}: {exc}", where(("agent", *path))))

    for i, ref in enumerate(config.tools):
        check(("tools", i), f"agent.tools[{i}]", lambda ref=ref: ToolSet.from_refs([ref]))
    for event, refs in config.callbacks.items():
        check(("callbacks", event), f"agent.callbacks.{event}",
              lambda event=event: check_event_name(event))
        for j, ref in enumerate([refs] if isinstance(refs, str) else refs):
            path = ("callbacks", event) if isinstance(refs, str) else ("callbacks", event, j)
            check(path, f"agent.callbacks.{event}",
                  lambda ref=ref, event=event: _callable_ref(ref, f"callback for {event!r}"))
    for key in ("setup", "summary"):
        ref = getattr(config, key)
        if ref:
            check((key,), f"agent.{key}", lambda ref=ref, key=key: _callable_ref(ref, key))
    for field, slot in (("model", "llm"), ("voice", "tts")):
        value = getattr(config, field, None)
        if isinstance(value, str) and value:
            try:
                check_provider(f"agent.{field}", value, slot)
            except ConfigError as exc:
                errors.append(ConfigError(str(exc), where(("agent", field))))
    for slot, key in (("llm", "model"), ("tts", "voice"), ("stt", "model")):
        value = getattr(config, slot)
        name, path = (value, (slot,)) if isinstance(value, str) else (
            (value.get(key), (slot, key)) if isinstance(value, dict) else (None, ()))
        if isinstance(name, str) and name:
            try:
                check_slot(slot, name)
            except ConfigError as exc:
                errors.append(ConfigError(str(exc), where(("agent", *path))))
    return errors


def _callable_ref(ref: str, what: str) -> None:
    if not callable(import_ref(ref, what)):
        raise ConfigError(f"{ref!r} is not callable")
