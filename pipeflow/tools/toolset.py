"""``ToolSet``: the tools one agent offers, by name, in OpenAI format.

``@tool`` adds every tool to the global ``default_registry``; an agent holds
its own ``ToolSet`` (from Python objects, or from YAML references through
``ToolSet.from_refs``), so two agents in one process can offer different
tools under the same names.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from pipeflow.errors import ConfigError
from pipeflow.tools.function import FunctionTool, build_tool

__all__ = ["ToolSet", "default_registry"]

log = logging.getLogger("pipeflow.tools")


class ToolSet:
    """An ordered set of tools with unique names.

    Args:
        tools: ``FunctionTool``s (from ``@tool``), plain typed functions
            (made into tools without joining the global registry) or other
            ``ToolSet``s.

    Raises:
        ConfigError: two different tools share a name, or a function cannot
            be a tool.
    """

    def __init__(self, tools: Iterable[FunctionTool | Callable[..., Any] | ToolSet] = ()) -> None:
        self._tools: dict[str, FunctionTool] = {}
        for item in tools:
            if isinstance(item, ToolSet):
                for member in item:
                    self.add(member)
            else:
                self.add(item)

    def add(
        self, item: FunctionTool | Callable[..., Any], *, replace: bool = False
    ) -> FunctionTool:
        """Add a tool (a plain function is inspected as ``@tool`` would).

        Args:
            item: the tool or function.
            replace: let it replace another tool of the same name (the
                global registry does, so re-imported modules win).

        Returns:
            The ``FunctionTool`` added.

        Raises:
            ConfigError: another tool already has this name and ``replace``
                is false.
        """
        made = item if isinstance(item, FunctionTool) else build_tool(item)
        current = self._tools.get(made.name)
        if current is not None and current is not made and current.function is not made.function:
            if not replace:
                raise ConfigError(
                    f"two tools are named {made.name!r}: {current.qualified_name} and"
                    f" {made.qualified_name}; rename one with @tool(name=...)"
                )
            log.debug("tool %r: %s replaces %s", made.name, made.qualified_name,
                      current.qualified_name)
        self._tools[made.name] = made
        return made

    def remove(self, name: str) -> None:
        """Forget a tool; unknown names are ignored."""
        self._tools.pop(name, None)

    def get(self, name: str) -> FunctionTool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def __getitem__(self, name: str) -> FunctionTool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[FunctionTool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __repr__(self) -> str:
        return f"ToolSet({self.names()!r})"

    def names(self) -> list[str]:
        """Tool names, in the order they were added."""
        return list(self._tools)

    def to_openai_format(self, shape: str = "realtime") -> list[dict[str, Any]]:
        """Every tool as an OpenAI function definition (see ``FunctionTool.to_openai_format``).

        Args:
            shape: ``realtime`` (Realtime ``session.tools``) or ``chat``
                (Chat Completions ``tools``).

        Raises:
            ConfigError: an unknown shape.
        """
        if shape not in ("realtime", "chat"):
            raise ConfigError(f"unknown tool schema shape {shape!r}; use one of: realtime, chat")
        return [t.to_openai_format(shape) for t in self._tools.values()]

    @classmethod
    def from_refs(cls, refs: Iterable[str]) -> ToolSet:
        """Collect tools from references, as YAML names them.

        ``package.module:name`` takes one tool (a ``FunctionTool``, a plain
        typed function or a ``ToolSet``); a bare ``package.module`` takes
        every ``@tool`` defined in that module (not ones it imports).

        Raises:
            ConfigError: a module does not import, a name is missing or is
                not a tool, or a module defines no tools.
        """
        tools = cls()
        for ref in refs:
            for found in _resolve(ref):
                tools.add(found)
        return tools


def _import(module_name: str, ref: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ConfigError as exc:  # a bad @tool inside the module
        raise ConfigError(f"tool reference {ref!r}: {exc}") from exc
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"tool reference {ref!r}: no module named {module_name!r}"
                " (is its folder on the Python path?)"
            ) from exc
        raise ConfigError(
            f"tool reference {ref!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"tool reference {ref!r}: importing {module_name!r} failed:"
            f" {type(exc).__name__}: {exc}"
        ) from exc


def _resolve(ref: str) -> list[FunctionTool | Callable[..., Any]]:
    module_name, sep, attr = ref.strip().partition(":")
    if not module_name or (sep and not attr):
        raise ConfigError(
            f"tool reference {ref!r} must look like 'package.module:function' or 'package.module'"
        )
    module = _import(module_name, ref)
    if not sep:
        found = [
            value for value in vars(module).values()
            if isinstance(value, FunctionTool)
            and getattr(value.function, "__module__", None) == module.__name__
        ]
        if not found:
            raise ConfigError(f"tool reference {ref!r}: module {module_name!r} defines no @tool")
        return list(found)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            import difflib

            names = [n for n, v in vars(module).items() if isinstance(v, FunctionTool)]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"tool reference {ref!r}: module {module_name!r} has no {attr!r}{hint}"
            ) from None
    if isinstance(obj, ToolSet):
        return list(obj)
    if isinstance(obj, FunctionTool) or (callable(obj) and not isinstance(obj, type)):
        return [obj]
    raise ConfigError(
        f"tool reference {ref!r} is {type(obj).__name__}, not a tool: use an @tool function"
    )


default_registry = ToolSet()
"""Every ``@tool`` joins this set unless told otherwise (the tools stage's fallback)."""
