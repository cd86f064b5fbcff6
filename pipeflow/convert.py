"""msgspec conversion with errors a person can act on.

Pipeline files and stages built in Python both turn plain data into option
structs here, so a bad value reads the same either way: which option, what
was wrong, the allowed values or the closest name. ``pipeflow.config`` adds
the file, line and column; a stage built from Python names itself::

    ToneSource(amplitude=5.0)
    # ConfigError: stage tone, option 'amplitude': must be <= 1.0, got 5.0
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from pipeflow.errors import ConfigError

__all__ = ["Problem", "convert", "explain", "suggest", "value_at"]

_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[\"?([^\]\"]*)\"?\]")


class Problem(NamedTuple):
    """One validation failure, explained."""

    text: str
    """What is wrong (``must be <= 1.0, got 5.0``)."""
    path: tuple[str | int, ...]
    """Where in the data: keys and indexes down to the failing value."""
    field: str
    """The dotted option name ('' when the whole value is wrong)."""

    def message(self, what: str, noun: str = "option") -> str:
        """``what, option 'x': text``: the sentence a ``ConfigError`` carries."""
        subject = f"{what}, {noun} {self.field!r}" if self.field else what
        return f"{subject}: {self.text}"


def convert(data: Any, target: type, what: str, noun: str = "option") -> Any:
    """``msgspec.convert(data, target)`` with constraints checked and errors explained.

    Args:
        data: builtins (a mapping of options).
        target: the struct to make.
        what: who the data belongs to, for the message (``stage tone``).
        noun: what the mapping's keys are called (``option``, ``field``).

    Raises:
        ConfigError: the data does not fit ``target``.
    """
    try:
        return msgspec.convert(data, target)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc, target, data, noun).message(what, noun)) from None


def explain(
    error: msgspec.ValidationError, target: type, data: Any, noun: str = "option"
) -> Problem:
    """Turn msgspec's message about converting ``data`` to ``target`` into ours."""
    message, path = _parse(error)
    sub_target = target
    for part in path:  # walk to the struct that owns the failing field
        if isinstance(part, str):
            hint = _struct_type(sub_target, part)
            if hint is None:
                break
            sub_target = hint
    names = [p for p in path if isinstance(p, str)]
    choices = _choices(sub_target, names[-1]) if names else ()
    text, field = _reword(message, _struct_fields(sub_target), noun, choices,
                          value_at(data, path))
    full = (*path, field) if field is not None else path
    return Problem(text, full, ".".join(names))


def suggest(word: str, choices: Iterable[str], cutoff: float = 0.5) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, ignoring case; '' when none is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _parse(error: msgspec.ValidationError) -> tuple[str, tuple[str | int, ...]]:
    match = _MSGSPEC_PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    path: list[str | int] = []
    for token in _PATH_TOKEN.finditer(match.group("path") or ""):
        name, index, key = token.groups()
        path.append(int(index) if index is not None else (name if name is not None else key))
    return match.group("msg"), tuple(path)


def _reword(
    message: str,
    fields: Iterable[str],
    noun: str = "option",
    choices: tuple[Any, ...] = (),
    value: Any = None,
) -> tuple[str, str | None]:
    """Turn a msgspec message into ours; return (text, offending field or None).

    ``choices`` are the allowed values of the failing field when it is a
    Literal, ``value`` the value the data gave it.
    """
    unknown = re.match(r"Object contains unknown field `([^`]*)`", message)
    if unknown:
        field = unknown.group(1)
        hint = suggest(field, fields)
        known = ", ".join(sorted(fields)) or "none"
        return f"unknown {noun} {field!r}{hint}; valid {noun}s: {known}", field
    missing = re.match(r"Object missing required field `([^`]*)`", message)
    if missing:
        return f"missing required {noun} {missing.group(1)!r}", None
    expected = re.match(r"Expected `([^`]*)`, got `([^`]*)`", message)
    if expected:
        return f"expected {expected.group(1)}, got {expected.group(2)}", None
    bound = re.match(r"Expected `([^`]*)` ([<>]=? \S+)$", message)
    if bound:
        return f"must be {bound.group(2)}, got {value!r}", None
    if message.startswith("Invalid enum value") and choices:
        words = [str(c) for c in choices]
        hint = suggest(str(value), words)
        return f"invalid value {value!r}{hint}; valid values: {', '.join(words)}", None
    return message[0].lower() + message[1:] if message else "invalid value", None


def _choices(cls: type, field: str) -> tuple[Any, ...]:
    """The allowed values of ``field`` of struct ``cls`` when it is a Literal (else ())."""
    try:
        infos = msgspec.structs.fields(cls)  # type: ignore[arg-type]
    except TypeError:
        return ()
    for info in infos:
        if info.name == field:
            for candidate in (info.type, *typing.get_args(info.type)):
                if typing.get_origin(candidate) is typing.Literal:
                    return typing.get_args(candidate)
    return ()


def value_at(data: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path`` in the data, or None when it is not there."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _struct_fields(cls: type) -> list[str]:
    return list(getattr(cls, "__struct_fields__", ()))


def _struct_type(cls: type, field: str) -> type | None:
    """The struct type of ``field`` of struct ``cls`` (None when it is not a struct)."""
    try:
        hints = msgspec.structs.fields(cls)  # type: ignore[arg-type]
    except TypeError:
        return None
    for info in hints:
        if info.name == field:
            candidates = [info.type, *typing.get_args(info.type)]
            for candidate in candidates:
                if isinstance(candidate, type) and hasattr(candidate, "__struct_fields__"):
                    return candidate
    return None
