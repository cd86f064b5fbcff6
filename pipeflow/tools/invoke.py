"""Run one tool call and turn whatever happens into a ``ToolResult``.

The model's arguments are decoded and validated (msgspec, against the
Struct ``@tool`` built from the signature) before the function runs. An
unknown tool, arguments that are not JSON or do not fit, a ``ToolError``,
any other exception and a timeout all become ``ToolResult(is_error=True)``
whose output tells the model which tool failed and why, so it can retry or
apologise; the session goes on. Only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import msgspec

from pipeflow.callables import call_function
from pipeflow.frames import ToolCall, ToolResult
from pipeflow.tools.context import RunContext, ToolError
from pipeflow.tools.function import FunctionTool
from pipeflow.tools.toolset import ToolSet

__all__ = ["ArgumentsError", "decode_arguments", "encode_output", "invoke"]

log = logging.getLogger("pipeflow.tools")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


class ArgumentsError(ValueError):
    """The model's arguments do not fit the tool; the message is for the model."""


async def invoke(
    tools: ToolSet,
    call: ToolCall,
    run_context: RunContext[Any],
    timeout_s: float | None = None,
) -> ToolResult:
    """Run the tool ``call`` names and return its result for the model.

    Args:
        tools: where to look the tool up.
        call: the model's request (name, call id, raw JSON arguments).
        run_context: given to the tool if it asks for one.
        timeout_s: limit for tools that set no ``timeout_s`` of their own
            (None: no limit).

    Returns:
        The ``ToolResult``: JSON text of the return value (a ``str`` is
        passed as is), or an error the model can act on.
    """
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(tools.names()) or "none"
        return _error(call, f"Unknown tool {call.name!r}. Available tools: {known}.")
    try:
        args, kwargs = decode_arguments(tool, call.arguments)
    except ArgumentsError as exc:
        return _error(call, str(exc))
    if tool.context_param is not None:
        if tool.context_param in tool.positional:
            args.insert(tool.positional.index(tool.context_param), run_context)
        else:
            kwargs[tool.context_param] = run_context
    limit = tool.timeout_s if tool.timeout_s is not None else timeout_s
    try:
        async with asyncio.timeout(limit) as deadline:
            value = await call_function(tool.function, *args, on_loop=tool.on_loop, **kwargs)
    except ToolError as exc:
        return _error(call, str(exc) or f"Tool {tool.name!r} failed.")
    except TimeoutError as exc:
        if not deadline.expired():
            return _failed(tool, call, exc)
        log.warning("tool %r (call %s) timed out after %s s", tool.name, call.call_id, limit)
        return _error(
            call,
            f"Tool {tool.name!r} did not finish within {limit:g} s and was stopped."
            " Tell the user it is taking too long, or try again.",
        )
    except Exception as exc:
        return _failed(tool, call, exc)
    try:
        output = encode_output(value)
    except (TypeError, ValueError) as exc:
        log.error("tool %r returned a value that is not JSON: %s", tool.name, exc)
        return _error(
            call,
            f"Tool {tool.name!r} returned a value of type {type(value).__name__}"
            " that cannot be sent as JSON.",
        )
    return ToolResult(call_id=call.call_id, name=call.name, output=output)


def decode_arguments(tool: FunctionTool, raw: str) -> tuple[list[Any], dict[str, Any]]:
    """Decode and validate raw JSON arguments into call arguments.

    Returns:
        Positional and keyword arguments for ``tool.function`` (without the
        RunContext). Strings holding numbers or booleans are accepted for
        numeric and boolean parameters, as models sometimes send them.

    Raises:
        ArgumentsError: the text is not a JSON object or does not fit the
            parameters; the message names the tool and the problem.
    """
    try:
        data = _decoder.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as exc:
        raise ArgumentsError(
            f"The arguments for tool {tool.name!r} are not valid JSON ({exc}). "
            f"Send one JSON object{_expected(tool)}."
        ) from None
    if not isinstance(data, dict):
        raise ArgumentsError(
            f"The arguments for tool {tool.name!r} must be a JSON object, not"
            f" {_JSON_NAMES.get(type(data), type(data).__name__)}.{_expected(tool, ' Expected')}."
        )
    if tool.args_type is None:  # a hand-made FunctionTool: no validation
        return [], dict(data)
    try:
        parsed = msgspec.convert(data, tool.args_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ArgumentsError(
            f"Invalid arguments for tool {tool.name!r}: {_explain(str(exc))}."
            f"{_expected(tool, ' Expected')}."
        ) from None
    values = {name: getattr(parsed, name) for name in tool.args_type.__struct_fields__}
    args = [values.pop(name) for name in tool.positional if name in values]
    return args, values


def encode_output(value: Any) -> str:
    """The text the model gets for a return value: a str as is, else JSON.

    Raises:
        TypeError: the value has no JSON form.
    """
    if isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def _explain(message: str) -> str:
    """msgspec's message with the ``$.field`` path spelled as a parameter name."""
    match = _AT_PATH.search(message)
    if match:
        message = f"parameter {match.group(1)!r}: {message[: match.start()]}"
    return message.replace("Object missing required field", "missing required parameter").replace(
        "Object contains unknown field", "unknown parameter"
    )


def _expected(tool: FunctionTool, lead: str = " with") -> str:
    props = tool.parameters.get("properties", {})
    if not props:
        return f"{lead} no parameters ({{}})"
    required = set(tool.parameters.get("required", ()))
    parts = []
    for name, schema in props.items():
        kind = schema.get("type", "any")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        if "enum" in schema:
            kind = "one of " + ", ".join(_encoder.encode(v).decode() for v in schema["enum"])
        parts.append(f"{name} ({kind}{', required' if name in required else ''})")
    return f"{lead} parameters: {', '.join(parts)}"


def _failed(tool: FunctionTool, call: ToolCall, exc: BaseException) -> ToolResult:
    log.error("tool %r (call %s) raised %s: %s", tool.name, call.call_id,
              type(exc).__name__, exc, exc_info=exc)
    return _error(call, f"Tool {tool.name!r} failed: {type(exc).__name__}: {exc}")


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call_id=call.call_id, name=call.name, output=message, is_error=True)
