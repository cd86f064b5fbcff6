"""``@tool``: make a typed Python function callable by the model.

Everything the model needs is worked out once, when the function is
decorated (see ``pipeflow.tools.function.build_tool``), and the tool joins
the global ``default_registry`` unless told otherwise. The decorated name
stays callable as the plain function::

    @tool
    def add_numbers(a: float, b: float) -> float:
        \"\"\"Add two numbers.\"\"\"
        return a + b

    add_numbers(1, 2)          # 3
    add_numbers.parameters     # {"type": "object", "properties": {...}, ...}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from pipeflow.tools.function import FunctionTool, build_tool
from pipeflow.tools.toolset import ToolSet, default_registry

__all__ = ["FunctionTool", "build_tool", "tool"]


@overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    on_loop: bool = False,
    registry: ToolSet | None = default_registry,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    on_loop: bool = False,
    registry: ToolSet | None = default_registry,
) -> Any:
    """Make a function (sync or async) callable by the model.

    Use bare (``@tool``) or with options (``@tool(timeout_s=5)``).

    Args:
        function: the function (given when used bare).
        name: the name the model sees (default: the function's name).
        description: what the tool does (default: the docstring's text
            before its sections).
        timeout_s: seconds one call may take before the model is told it
            timed out (default: the dispatcher's ``timeout_s``).
        on_loop: call a sync function on the event loop instead of in a
            thread (faster by a thread hop; only for code that never blocks).
        registry: the ``ToolSet`` the tool joins (default: the global
            ``default_registry``; None joins none).

    Returns:
        A callable ``FunctionTool`` (or a decorator, when used with options).

    Raises:
        ConfigError: the function cannot be a tool; the message names the
            function and the parameter.
    """

    def decorate(fn: Callable[..., Any]) -> FunctionTool:
        made = build_tool(fn, name=name, description=description, timeout_s=timeout_s,
                          on_loop=on_loop)
        if registry is not None:
            registry.add(made, replace=True)
        return made

    return decorate(function) if function is not None else decorate
