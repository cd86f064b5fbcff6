"""Script patterns: regular expressions with typed captures, and how well they fit.

A pattern is a case-insensitive regular expression in which ``{name:type}``
stands for a typed capture (``pipeflow.realtime.captures``); other braces
keep their regex meaning (``\\d{3}``). ``find`` returns every reading of the
words that the pattern allows (one, or all of them for ``each``), with the
captured values converted; a reading whose capture cannot be converted does
not count. ``explained`` says how much of the words the readings cover: the
script picks the turn that explains the most.
"""

from __future__ import annotations

import re
from typing import Any

from pipeflow.realtime.captures import CaptureError, CaptureType

__all__ = ["Found", "Pattern", "PatternError", "compile_pattern", "explained", "words_of"]

_CAPTURE = re.compile(r"\{([A-Za-z_]\w*):([A-Za-z_]\w*)\}")
_GROUP = "c_"
_WORD_CHARS = re.compile(r"[^\W_]")


class PatternError(ValueError):
    """A pattern cannot be compiled; the message says why."""


class Found:
    """One reading of the words: where it is and the values captured."""

    __slots__ = ("end", "start", "values")

    def __init__(self, start: int, end: int, values: dict[str, Any]) -> None:
        self.start = start
        self.end = end
        self.values = values

    def __repr__(self) -> str:
        return f"Found({self.start}, {self.end}, {self.values!r})"


class Pattern:
    """A compiled pattern; ``captures`` maps each capture name to its type."""

    __slots__ = ("captures", "regex", "source")

    def __init__(self, source: str, regex: re.Pattern[str],
                 captures: dict[str, CaptureType]) -> None:
        self.source = source
        self.regex = regex
        self.captures = captures

    def find(self, words: str, each: bool = False) -> list[Found]:
        """The readings of ``words`` (normalised with ``words_of``): the first, or all."""
        out: list[Found] = []
        for match in self.regex.finditer(words):
            try:
                values = {name: kind.convert(match.group(_GROUP + name))
                          for name, kind in self.captures.items()}
            except CaptureError:
                continue
            out.append(Found(match.start(), match.end(), values))
            if not each:
                break
        return out


def compile_pattern(source: str, types: dict[str, CaptureType]) -> Pattern:
    """Compile a pattern whose captures name types in ``types``.

    Raises:
        PatternError: an unknown capture type, a capture named twice, or an
            invalid regular expression.
    """
    captures: dict[str, CaptureType] = {}

    def group(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2)
        if kind not in types:
            raise PatternError(f"unknown capture type {kind!r} in {{{name}:{kind}}}; "
                               f"the types are {', '.join(sorted(types))}")
        if name in captures:
            raise PatternError(f"the capture {{{name}}} is named twice")
        captures[name] = types[kind]
        return f"(?P<{_GROUP}{name}>{types[kind].regex})"

    regex = _CAPTURE.sub(group, source)
    try:
        compiled = re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise PatternError(f"{source!r} is not a valid regular expression ({exc})") from None
    return Pattern(source, compiled, captures)


def words_of(text: str) -> str:
    """Words as patterns see them: single spaces, straight apostrophes."""
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())


def explained(words: str, found: list[Found]) -> int:
    """How many letters and digits of ``words`` the readings cover."""
    covered = [False] * len(words)
    for item in found:
        covered[item.start:item.end] = [True] * (item.end - item.start)
    return sum(1 for i, ch in enumerate(words) if covered[i] and _WORD_CHARS.match(ch))
