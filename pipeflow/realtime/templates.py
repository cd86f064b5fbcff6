"""Placeholders in a script's texts and call arguments: captures, the tool result, the words.

``render`` fills a ``say`` text: ``{name}`` is a capture of the turn,
``{result}`` the last tool output, ``{result.a.0.b}`` a field of it parsed
as JSON, ``{user}`` the caller's words, ``{{`` and ``}}`` literal braces.
``fill_arguments`` does the same inside a call's arguments, where a string
that is one capture alone keeps the captured value's type. ``check_template``
is the load-time check that every placeholder names something there is.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from pipeflow.errors import ConfigError

__all__ = ["check_template", "fill_arguments", "render"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"^(user|result|[A-Za-z_]\w*)((?:\.[A-Za-z0-9_-]+)*)$")
_ALONE = re.compile(r"^\{([A-Za-z_]\w*)\}$")
_SPACES = re.compile(r"\s{2,}")


def render(template: str, result: str | None, user: str,
           values: dict[str, Any] | None = None) -> str:
    """Fill captures, ``{result}``, ``{result.a.0.b}`` and ``{user}`` in a text.

    A field the result does not have is never spoken as the placeholder: a
    result that is not JSON (a tool that answers in plain text) stands for any
    field of it, and a JSON result without the field gives nothing (the
    spaces around it are closed up).
    """
    parsed: Any = _MISSING
    values = values or {}

    def fill(match: re.Match[str]) -> str:
        nonlocal parsed, missing
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = _NAME.match(match.group(1) or "")
        if name is None:
            return token
        if name.group(1) in values and not name.group(2):
            return str(values[name.group(1)])
        if name.group(1) == "user":
            return user
        if name.group(1) != "result":
            return token
        if not name.group(2):
            return result or ""
        if parsed is _MISSING:
            try:
                parsed = msgspec.json.decode(result or "")
            except msgspec.DecodeError:
                parsed = None
        if not isinstance(parsed, dict | list):
            return result or ""  # plain text: it is the message, the whole answer
        value = _lookup(parsed, name.group(2)[1:].split("."))
        if value is _MISSING:
            missing = True
            return ""
        return value if isinstance(value, str) else msgspec.json.encode(value).decode()

    missing = False
    text = _PLACEHOLDER.sub(fill, template)
    return _SPACES.sub(" ", text).strip() if missing else text


def fill_arguments(value: Any, result: str | None, user: str, values: dict[str, Any]) -> Any:
    """A call's arguments with placeholders filled (``render``), recursively.

    A string that is one capture alone (``"{quantity}"``) becomes the
    captured value itself, with its type (an ``int`` for a number).
    """
    if isinstance(value, str):
        alone = _ALONE.match(value)
        if alone and alone.group(1) in values:
            return values[alone.group(1)]
        return render(value, result, user, values)
    if isinstance(value, dict):
        return {k: fill_arguments(v, result, user, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_arguments(v, result, user, values) for v in value]
    return value


_MISSING: Any = object()


def _lookup(value: Any, path: list[str]) -> Any:
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def check_template(text: str, where: str, label: str,
                   names: frozenset[str] = frozenset()) -> None:
    """Refuse a placeholder that names no capture of ``names``, ``result`` or ``user``,
    and an unbalanced brace.

    Raises:
        ConfigError: at ``where``, naming the placeholders there are.
    """
    for match in _PLACEHOLDER.finditer(text):
        inner = match.group(1)
        if inner is None:
            continue
        name = _NAME.match(inner)
        known = name is not None and (name.group(1) in ("user", "result") or (
            name.group(1) in names and not name.group(2)))
        if not known:
            captures = "".join(f"{{{n}}}, " for n in sorted(names))
            raise ConfigError(
                f"script {label}: unknown placeholder {{{inner}}} in {text!r}; use "
                f"{captures}{{result}}, {{result.field}}, {{user}}, or {{{{ and }}}} for "
                "braces (a capture must be in every pattern of its turn)", where
            )
    stray = _PLACEHOLDER.sub("", text)
    if "{" in stray or "}" in stray:
        raise ConfigError(f"script {label}: unbalanced brace in {text!r} (write {{{{ or }}}})",
                          where)
