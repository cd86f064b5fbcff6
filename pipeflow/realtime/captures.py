"""Typed captures of script patterns: what a caller's words mean as values.

A script pattern names what it takes from the words with ``{name:type}``
(``"{quantity:number} {product:product}"``). Each type is a regular
expression that finds the words and a converter that turns them into the
value a tool gets:

- ``number``: a count in words or digits ("three", "twenty one", "12",
  "a"/"an"/"another" for 1, "a dozen") -> ``int``;
- ``digits``: a digit string as said or typed ("five five five, oh one",
  "double five", "triple nine", "plus four four", "555-0123") -> ``str``
  (a leading ``+`` kept);
- ``text``: free text, as written -> ``str``;
- ``name``: a place or other name of one to four words with no digits and
  none of the small words of a sentence ("Paris", "New York", "Rio de
  Janeiro"; not "I want to know") -> ``str``;
- a vocabulary the script names (``vocabularies: {product: ...}``): one of
  its spoken names (plurals and synonyms included) -> its canonical name.

A converter raises ``CaptureError`` when the words cannot be read (a
``double`` with no digit after it): the match does not count, so the agent
asks again instead of calling a tool with a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "BUILTIN_TYPES",
    "CaptureError",
    "CaptureType",
    "digits_from_words",
    "number_from_words",
    "vocabulary_type",
]

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
NUMBER_VALUES: dict[str, int] = {
    **{w: i for i, w in enumerate(_UNITS)}, **{w: 10 + i for i, w in enumerate(_TEENS)},
    **{w: 20 + 10 * i for i, w in enumerate(_TENS)}, "a": 1, "an": 1, "fourty": 40,
    "a couple of": 2, "a dozen": 12, "dozen": 12, "another": 1,
}
"""Number words and their values ("a", "an" and "another" count one)."""

_DIGIT_WORDS = {**{w: str(i) for i, w in enumerate(_UNITS)}, "oh": "0", "o": "0",
                "nought": "0", "nil": "0"}
_REPEATS = {"double": 2, "triple": 3}
_B, _E = r"(?<![\w'])", r"(?![\w'])"


class CaptureError(ValueError):
    """Words a capture found cannot be read as its type; the message says why."""


class CaptureType:
    """A capture type: the regular expression that finds it and its converter.

    Args:
        name: the type's name in patterns (``{quantity:number}``).
        regex: finds the words (no capturing groups; case-insensitive).
        convert: the words found -> the value (raises ``CaptureError``).
    """

    __slots__ = ("convert", "name", "regex")

    def __init__(self, name: str, regex: str, convert: Callable[[str], Any]) -> None:
        self.name = name
        self.regex = regex
        self.convert = convert

    def __repr__(self) -> str:
        return f"CaptureType({self.name!r})"


def _alternation(words: Iterable[str]) -> str:
    """Words (longest first, so "ice creams" wins over "ice cream") as one group."""
    parts = [r"[\s-]+".join(re.escape(w) for w in word.split()) for word in words]
    return "(?:" + "|".join(sorted(set(parts), key=len, reverse=True)) + ")"


_TENS_WORDS = (*_TENS, "fourty")
_NUMBER_RE = (_B + "(?:" + r"\d{1,6}|" + _alternation(_TENS_WORDS) + r"(?:[\s-]+"
              + _alternation(_UNITS[1:]) + ")?|" + _alternation(
                  w for w in NUMBER_VALUES if w not in _TENS_WORDS) + ")" + _E)


def number_from_words(text: str) -> int:
    """``"twenty one"`` -> 21, ``"a"`` -> 1, ``"12"`` -> 12.

    Raises:
        CaptureError: the text is not a number said in words or digits.
    """
    words = re.findall(r"[a-z]+|\d+", text.casefold())
    phrase = " ".join(words)
    if phrase in NUMBER_VALUES:
        return NUMBER_VALUES[phrase]
    if len(words) == 1 and words[0].isdigit():
        return int(words[0])
    if (len(words) == 2 and words[0] in NUMBER_VALUES and NUMBER_VALUES[words[0]] >= 20
            and words[1] in _UNITS[1:]):
        return NUMBER_VALUES[words[0]] + _UNITS.index(words[1])
    raise CaptureError(f"{text!r} is not a number")


_DIGIT_TOKEN = _alternation([*_DIGIT_WORDS, *_REPEATS, "plus"]) + _E + r"|\+|\d+"
_DIGITS_RE = (r"(?<![\w'+])(?:" + _DIGIT_TOKEN + r")(?:[\s,.\-()/]*(?:" + _DIGIT_TOKEN
              + r"))*(?![\w'])")
_TOKEN = re.compile(r"\+|\d+|[^\W\d_]+")


def digits_from_words(text: str) -> str:
    """The digits said or typed in ``text``, a leading ``+`` kept.

    ``"five five five, oh one"`` -> ``"55501"``; ``"double five"`` ->
    ``"55"``; ``"plus four four 20"`` -> ``"+4420"``. Separators (spaces,
    commas, dashes, dots, brackets) are ignored.

    Raises:
        CaptureError: a word that is no digit, a ``+`` that does not start
            the number, a ``double``/``triple`` with no single digit after it,
            or no digit at all. The message names the word.
    """
    digits: list[str] = []
    plus = False
    repeat = 0
    for token in _TOKEN.findall(text.casefold()):
        if token in ("+", "plus"):
            if digits or plus or repeat:
                raise CaptureError("A plus sign can only start the number.")
            plus = True
            continue
        if token in _REPEATS:
            if repeat:
                raise CaptureError(f"The number has {token!r} where a digit should be.")
            repeat = _REPEATS[token]
            continue
        digit = _DIGIT_WORDS.get(token, token if token.isdigit() else None)
        if digit is None or (repeat and len(digit) != 1):
            raise CaptureError(f"The number has {token!r} where a digit should be.")
        digits.append(digit * (repeat or 1))
        repeat = 0
    if repeat:
        raise CaptureError("The number ends with 'double' or 'triple' and no digit after it.")
    if not digits:
        raise CaptureError("No digits were given.")
    return ("+" if plus else "") + "".join(digits)


def _text(words: str) -> str:
    value = words.strip(" \t,.;:!?")
    if not value:
        raise CaptureError("no words")
    return value


_NOT_NAME = ("and", "or", "but", "is", "are", "was", "it", "it's", "its", "i", "i'm", "you",
             "me", "my", "we", "the", "a", "an", "what", "what's", "how", "will", "be", "do",
             "does", "please", "thanks", "today", "tomorrow", "now", "tonight", "this", "that",
             "there", "here", "in", "at", "for", "to", "with", "weather", "want", "know", "like",
             "need", "tell", "if", "not", "no", "yes")
_NAME_WORD = r"(?!" + _alternation(_NOT_NAME) + _E + r")[^\W\d_]+(?:'[^\W\d_]+)?"
_NAME_RE = _B + _NAME_WORD + r"(?:[\s-]+" + _NAME_WORD + r"){0,3}" + _E

BUILTIN_TYPES: dict[str, CaptureType] = {
    "number": CaptureType("number", _NUMBER_RE, number_from_words),
    "digits": CaptureType("digits", _DIGITS_RE, digits_from_words),
    "text": CaptureType("text", r".*\w.*", _text),
    "name": CaptureType("name", _NAME_RE, _text),
}
"""The capture types every script has."""


def vocabulary_type(name: str, names: Mapping[str, str] | Iterable[str]) -> CaptureType:
    """A capture type for one of a vocabulary's spoken names.

    Args:
        name: the type's name in patterns.
        names: spoken name -> the value a capture gives (a plain list maps
            each name to itself). Matching ignores case, and a space in a
            name matches spaces or a hyphen.

    Raises:
        ValueError: the vocabulary has no names.
    """
    table = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    table = {" ".join(k.casefold().split()): str(v) for k, v in table.items() if k.strip()}
    if not table:
        raise ValueError(f"the vocabulary {name!r} has no names")

    def convert(words: str) -> str:
        key = " ".join(re.findall(r"[^\W_]+", words.casefold()))
        if key not in table:
            raise CaptureError(f"{words!r} is not a {name}")
        return table[key]

    return CaptureType(name, _B + _alternation(table) + _E, convert)
