"""Script patterns: regular expressions with typed captures, and how well they fit.

A pattern is a case-insensitive regular expression in which ``{name:type}``
stands for a typed capture (``pipeflow.realtime.captures``); other braces
keep their regex meaning (``\\d{3}``). ``find`` returns every reading of the
words that the pattern allows (one, or all of them for ``each``), with the
captured values converted; a reading whose capture cannot be converted does
not count. ``explained`` says how much of the words the readings cover: the
script picks the turn that explains the most. ``unexplained`` is what no
reading covers, less the filler words ("um", "please", "the"): a turn that
leaves any other word unexplained does not answer, so the agent never acts
on part of a sentence and silently drops the rest ("minus two salads").
"""

from __future__ import annotations

import re
from typing import Any

from pipeflow.realtime.captures import CaptureError, CaptureType

__all__ = [
    "FILLERS",
    "LEADING",
    "Found",
    "Pattern",
    "PatternError",
    "compile_pattern",
    "explained",
    "unexplained",
    "words_of",
]

_CAPTURE = re.compile(r"\{([A-Za-z_]\w*):([A-Za-z_]\w*)\}")
_GROUP = "c_"
_WORD_CHARS = re.compile(r"[^\W_]")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

FILLERS = frozenset((
    "um", "uh", "uhm", "er", "erm", "ah", "hmm", "mm", "oh", "well", "so", "ok", "okay", "yes",
    "yeah", "yep", "sure", "please", "thanks", "thank", "you", "hi", "hello", "hey", "and",
    "also", "then", "just", "the", "a", "an", "some", "any", "all", "i", "i'd", "i'll", "i'm",
    "me", "my", "we", "we'd", "we'll", "us", "our", "you", "your", "it", "it's", "its", "that",
    "that's", "this", "these", "those", "they", "them", "there", "here", "is", "are", "was",
    "be", "will", "would", "could", "can", "may", "like", "want", "wanna", "need", "get",
    "have", "take", "order", "to", "of", "for", "in", "on", "at", "with", "from", "now",
    "today", "do", "does", "what", "what's", "how", "going", "gonna"
))
"""Words that change nothing when no pattern explains them ("Yes, I'd like ... please")."""

LEADING = frozenset((
    "no", "nope", "nah", "sorry", "actually", "wait", "hold", "hang", "on", "oops"
))
"""Words that may open an utterance before what it means ("No, just one pizza"), and
only there: inside it they correct what came before ("three salads, no, two")."""


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


def unexplained(words: str, found: list[Found], fillers: frozenset[str] = FILLERS) -> str:
    """The words no reading covers and that are not ``fillers`` ("" when all are).

    A word counts as covered when any of its letters is inside a reading.
    Words of ``LEADING`` (and fillers) before the first word that counts are
    allowed too. Each stretch of uncovered words that holds another word is
    returned from its first such word to its last, the stretches joined with
    ", " ("minus", "plus ten", "two pastas").
    """
    covered = [False] * len(words)
    for item in found:
        covered[item.start:item.end] = [True] * (item.end - item.start)
    gaps: list[list[tuple[str, bool]]] = [[]]
    leading = True
    for match in _WORD.finditer(words):
        word = match.group(0)
        key = word.casefold().replace("\u2019", "'")
        if any(covered[match.start():match.end()]):
            leading = False
            gaps.append([])
            continue
        allowed = key in fillers or (leading and key in LEADING)
        leading = leading and allowed
        gaps[-1].append((word, not allowed))
    parts = []
    for gap in gaps:
        flags = [content for _, content in gap]
        if any(flags):
            first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
            parts.append(" ".join(word for word, _ in gap[first:last + 1]))
    return ", ".join(parts)
