"""A typed Python function -> an immutable ``FunctionTool`` record (``build_tool``).

``@tool`` (``pipeflow.tools.decorator``) calls ``build_tool`` and adds the
record to a ``ToolSet``; this module knows nothing of tool sets, so both
build on it. Everything the model needs is worked out once, when the
function is decorated: the name, the description (docstring), the JSON schema of the
parameters (annotations, ``Annotated`` notes, docstring ``Args:``) and a
msgspec Struct that validates the model's arguments before each call. A
function the model could not call correctly (an untyped parameter,
``*args``, a type with no JSON form) is refused right there with a
``ConfigError`` naming the function and the parameter.

"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, get_origin

import msgspec

from pipeflow.errors import ConfigError
from pipeflow.tools.context import RunContext
from pipeflow.tools.schema import UnsupportedType, parse_docstring, split_annotated, type_schema

__all__ = ["FunctionTool", "build_tool"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHAPES = ("realtime", "chat")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class FunctionTool:
    """What pipeflow knows about one tool; made by ``@tool``, never changed.

    Attributes:
        name: the name the model calls it by.
        description: what it does, for the model.
        parameters: JSON schema (an object) of its arguments.
        function: the decorated function.
        timeout_s: seconds one call may take (None: the dispatcher's default).
        is_async: whether ``function`` is a coroutine function (sync ones run
            in a worker thread).
        on_loop: call a sync ``function`` on the event loop, not in a thread
            (only for code that never blocks: a blocking one stalls every call).
        context_param: the parameter that receives the ``RunContext``, if any.
        args_type: the msgspec Struct the arguments are validated against.
        positional: parameters that can only be passed by position.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any]
    timeout_s: float | None = None
    is_async: bool = False
    on_loop: bool = False
    context_param: str | None = None
    args_type: type[msgspec.Struct] | None = None
    positional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Look like the wrapped function to help(), inspect and doc tools.
        for attr in ("__module__", "__qualname__", "__doc__"):
            object.__setattr__(self, attr, getattr(self.function, attr, None))
        object.__setattr__(self, "__name__", self.name)
        object.__setattr__(self, "__wrapped__", self.function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (no validation, no timeout)."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r}, {self.qualified_name})"

    @property
    def qualified_name(self) -> str:
        """``module:qualname`` of the function, for messages."""
        fn = self.function
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', self.name)}"

    def to_openai_format(self, shape: str = "realtime") -> dict[str, Any]:
        """This tool as an OpenAI function definition.

        Args:
            shape: ``realtime`` for the Realtime API's ``session.tools``
                (``{"type": "function", "name", "description", "parameters"}``),
                ``chat`` for Chat Completions' ``tools``
                (``{"type": "function", "function": {...}}``).

        Raises:
            ConfigError: an unknown shape.
        """
        function = {
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(dict(self.parameters)),
        }
        if shape == "realtime":
            return {"type": "function", **function}
        if shape == "chat":
            return {"type": "function", "function": function}
        raise ConfigError(f"unknown tool schema shape {shape!r}; use one of: {', '.join(_SHAPES)}")


def build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    on_loop: bool = False,
) -> FunctionTool:
    """Inspect ``fn`` and make its ``FunctionTool`` (``@tool`` without registering).

    Raises:
        ConfigError: the function cannot be a tool; the message names the
            function and the parameter.
    """
    if isinstance(fn, FunctionTool):
        changes = {k: v for k, v in
                   (("name", name), ("description", description), ("timeout_s", timeout_s))
                   if v is not None}
        if on_loop:
            changes["on_loop"] = True
        return dataclasses.replace(fn, **changes) if changes else fn
    where = _where(fn)
    if not callable(fn) or inspect.isclass(fn):
        raise ConfigError(f"@tool needs a function, got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(f"tool {where}: a generator cannot be a tool; return the result instead")
    tool_name = name or getattr(fn, "__name__", "")
    if not _NAME.match(tool_name):
        raise ConfigError(
            f"tool {where}: name {tool_name!r} is not allowed; OpenAI function names are"
            " 1-64 letters, digits, '_' or '-'"
        )
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"tool {where}: timeout_s must be a positive number of seconds")
    summary, param_docs = parse_docstring(inspect.getdoc(fn))
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError, ValueError) as exc:
        raise ConfigError(f"tool {where}: cannot read its signature: {exc}") from exc

    properties: dict[str, Any] = {}
    required: list[str] = []
    fields: list[tuple[Any, ...]] = []
    positional: list[str] = []
    context_param: str | None = None
    for param in signature.parameters.values():
        subject = f"tool {where}: parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ConfigError(
                f"tool {where}: parameter '{star}{param.name}' is not allowed; a tool takes"
                " named, typed parameters only so the model knows what to send"
            )
        if param.name in ("self", "cls") and param.name not in hints:
            raise ConfigError(
                f"{subject}: @tool on a method is not supported; decorate a module-level"
                " function, or add the bound method (obj.method) to a ToolSet"
            )
        if param.name not in hints:
            raise ConfigError(
                f"{subject} has no type annotation; annotate it (for example"
                f" '{param.name}: str') so the model knows what to send"
            )
        annotation = hints[param.name]
        if split_annotated(annotation)[0] is Any:
            raise ConfigError(
                f"{subject} is annotated as Any; give it a concrete type so the model"
                " knows what to send"
            )
        if _is_run_context(annotation):
            if context_param is not None:
                raise ConfigError(f"{subject}: only one parameter may take the RunContext")
            context_param = param.name
            if param.kind is param.POSITIONAL_ONLY:
                positional.append(param.name)
            continue
        try:
            schema = type_schema(annotation)
        except UnsupportedType as exc:
            raise ConfigError(
                f"{subject} has an unsupported type: {exc}; use str, int, float, bool, a"
                " Literal or Enum, list/tuple/dict of those, a msgspec Struct or a dataclass"
            ) from exc
        _, notes, metas = split_annotated(annotation)
        if param.name in param_docs and not notes and not any(m.description for m in metas):
            schema.setdefault("description", param_docs[param.name])
        if param.default is param.empty:
            required.append(param.name)
            fields.append((param.name, annotation))
        else:
            default = _json_default(param.default)
            if default is not _NO_JSON:
                schema["default"] = default
            fields.append((param.name, annotation, _field_default(param.default)))
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(param.name)
        properties[param.name] = schema

    args_type = msgspec.defstruct(
        f"{tool_name}_arguments",
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        module=getattr(fn, "__module__", None),
    )
    try:
        msgspec.json.Decoder(args_type)  # checks every type once, now
    except TypeError as exc:
        raise ConfigError(f"tool {where}: msgspec cannot validate its parameters: {exc}") from exc
    return FunctionTool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        function=fn,
        timeout_s=timeout_s,
        is_async=inspect.iscoroutinefunction(fn),
        on_loop=on_loop,
        context_param=context_param,
        args_type=args_type,
        positional=tuple(positional),
    )


def _where(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"'{module}:{qualname}'"


def _is_run_context(annotation: Any) -> bool:
    base = split_annotated(annotation)[0]
    base = get_origin(base) or base
    return isinstance(base, type) and issubclass(base, RunContext)


_NO_JSON: Any = object()


def _json_default(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value)
    except (TypeError, ValueError):
        return _NO_JSON


def _field_default(value: Any) -> Any:
    """A msgspec field default; mutable defaults are copied for each call."""
    if isinstance(value, list | dict | set | bytearray):
        return msgspec.field(default_factory=lambda: copy.deepcopy(value))
    return value
