"""Phone numbers as callers give them, normalised to digits.

A number may arrive typed ("+1 (555) 123-4567", "555.123.4567") or as the
words a transcript holds ("five five five one two three four five six
seven", "double five", "oh" for zero). ``normalize_phone`` keeps the digits
and a leading ``+`` (``00`` counts as ``+``), and checks the length
(E.164 allows at most 15 digits), so the stored number is one canonical
string whatever the formatting.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DIGITS", "MIN_DIGITS", "PhoneError", "normalize_phone", "speak_phone"]

MIN_DIGITS = 7
"""Fewest digits of a reachable number (a local number without area code)."""
MAX_DIGITS = 15
"""Most digits E.164 allows, country code included."""

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "nil": "0",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_REPEAT_WORDS = {"double": 2, "triple": 3}
_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TOKEN = re.compile(r"\+|\d+|[^\W\d_]+")
_SEPARATORS = re.compile(r"[\s\-.()/,_]+")


class PhoneError(ValueError):
    """The text is not a usable phone number; the message says why, for the caller."""


def normalize_phone(text: str) -> str:
    """The canonical form of a phone number: its digits, with ``+`` when international.

    Args:
        text: the number as typed or transcribed; digits may be words
            ("five", "oh", "double five", "triple nine", "plus").

    Returns:
        ``"+15551234567"`` or ``"5551234567"``.

    Raises:
        PhoneError: unknown words or symbols, or too few or too many digits.
    """
    leftover = _SEPARATORS.sub("", _TOKEN.sub("", text))
    if leftover:
        raise PhoneError(
            f"The phone number contains {leftover[0]!r}, which is not part of a phone"
            " number. Ask the caller to say the digits one by one."
        )
    digits: list[str] = []
    international = False
    repeat = 0
    for token in _TOKEN.findall(text.casefold()):
        if token in ("+", "plus"):
            if digits or international or repeat:
                raise PhoneError(
                    "A plus sign can only start a phone number. Ask the caller to repeat it."
                )
            international = True
            continue
        if token in _REPEAT_WORDS:
            if repeat:
                raise PhoneError(_unclear(token))
            repeat = _REPEAT_WORDS[token]
            continue
        digit = _DIGIT_WORDS.get(token, token if token.isdigit() else None)
        if digit is None:
            raise PhoneError(_unclear(token))
        if repeat:
            if len(digit) != 1:
                raise PhoneError(_unclear(token))
            digit *= repeat
            repeat = 0
        digits.append(digit)
    if repeat:
        raise PhoneError(
            "The phone number ends with 'double' or 'triple' and no digit after it."
            " Ask the caller to repeat the end of the number."
        )
    number = "".join(digits)
    if not international and number.startswith("00"):
        international, number = True, number[2:]
    _check_length(number, international)
    return f"+{number}" if international else number


def speak_phone(number: str) -> str:
    """A normalised number as words in groups, for reading back to the caller.

    ``"5551234567"`` -> ``"five five five, one two three, four five six seven"``.
    """
    digits = number.lstrip("+")
    groups: list[str] = []
    while len(digits) > 4:
        groups.append(digits[:3])
        digits = digits[3:]
    if digits:
        groups.append(digits)
    words = ", ".join(" ".join(_NAMES[int(d)] for d in group) for group in groups)
    return f"plus {words}" if number.startswith("+") else words


def _check_length(number: str, international: bool) -> None:
    if not number:
        raise PhoneError("No phone number was given. Ask the caller for their phone number.")
    if international and number.startswith("0"):
        raise PhoneError(
            "After the plus sign a phone number starts with its country code, and no"
            " country code starts with 0. Ask the caller to repeat the number."
        )
    least = MIN_DIGITS + 1 if international else MIN_DIGITS
    if len(number) < least:
        raise PhoneError(
            f"That phone number has only {len(number)} digits; a phone number"
            f" {'with a country code ' if international else ''}has at least {least}."
            " Ask the caller to repeat it."
        )
    if len(number) > MAX_DIGITS:
        raise PhoneError(
            f"That phone number has {len(number)} digits; a phone number has at most"
            f" {MAX_DIGITS}. Ask the caller to repeat it."
        )


def _unclear(word: str) -> str:
    return (
        f"The phone number has {word!r} where a digit should be. Ask the caller to say"
        " the digits one by one."
    )
