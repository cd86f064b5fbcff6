"""Phone numbers as callers give them, normalised to digits.

A number may arrive typed ("+1 (555) 123-4567", "555.123.4567") or as the
words a transcript holds ("five five five one two three four five six
seven", "double five", "oh" for zero); the digits are read by the same
parser the offline script's ``digits`` captures use
(``pipeflow.realtime.captures.digits_from_words``). ``normalize_phone``
keeps the digits and a leading ``+`` (``00`` counts as ``+``) and insists on
a whole number: 10 digits (area code and number), 1 and 10 digits (stored
as ``+1...``), or ``+`` with a country code and 8 to 15 digits (E.164). A
number with digits missing is refused with how many are missing, so the
agent asks again instead of storing part of a number.
"""

from __future__ import annotations

import re

from pipeflow.realtime.captures import CaptureError, digits_from_words

__all__ = [
    "MAX_DIGITS",
    "MIN_INTERNATIONAL_DIGITS",
    "NATIONAL_DIGITS",
    "PhoneError",
    "normalize_phone",
    "speak_phone",
]

NATIONAL_DIGITS = 10
"""Digits of a number without country code: area code and number."""
MIN_INTERNATIONAL_DIGITS = 8
"""Fewest digits after ``+`` (country code included)."""
MAX_DIGITS = 15
"""Most digits E.164 allows, country code included."""

_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TOKEN = re.compile(r"\+|\d+|[^\W\d_]+")
_SEPARATORS = re.compile(r"[\s\-.()/,_]+")
_AGAIN = " Ask the caller to say the digits one by one."


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
        PhoneError: unknown words or symbols, or not a whole number (the
            message says how many digits are missing or too many).
    """
    leftover = _SEPARATORS.sub("", _TOKEN.sub("", text))
    if leftover:
        raise PhoneError(
            f"The phone number contains {leftover[0]!r}, which is not part of a phone"
            " number." + _AGAIN
        )
    if not _TOKEN.search(text):
        raise PhoneError("No phone number was given. Ask the caller for their phone number.")
    try:
        number = digits_from_words(text)
    except CaptureError as exc:
        said = str(exc).replace("The number", "The phone number").replace(
            "start the number", "start a phone number")
        raise PhoneError(f"{said}{_AGAIN}") from None
    international = number.startswith("+")
    number = number.lstrip("+")
    if not international and number.startswith("00"):
        international, number = True, number[2:]
    if not international and len(number) == NATIONAL_DIGITS + 1 and number.startswith("1"):
        international = True  # 1 and the area code: the North American country code
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
    if international:
        if len(number) < MIN_INTERNATIONAL_DIGITS:
            missing = MIN_INTERNATIONAL_DIGITS - len(number)
            raise PhoneError(
                f"That phone number has only {len(number)} digits after the country code's"
                f" plus; at least {missing} more are missing. A number with a country code"
                f" has {MIN_INTERNATIONAL_DIGITS} to {MAX_DIGITS} digits."
                " Ask the caller to repeat the whole number."
            )
        if len(number) > MAX_DIGITS:
            raise PhoneError(
                f"That phone number has {len(number)} digits; a phone number has at most"
                f" {MAX_DIGITS}. Ask the caller to repeat it."
            )
        return
    if len(number) < NATIONAL_DIGITS:
        missing = NATIONAL_DIGITS - len(number)
        raise PhoneError(
            f"That phone number has only {len(number)} digits; {missing} "
            f"{'is' if missing == 1 else 'are'} missing. A phone number has {NATIONAL_DIGITS}"
            " digits with the area code. Ask the caller to repeat the whole number."
        )
    if len(number) > NATIONAL_DIGITS:
        raise PhoneError(
            f"That phone number has {len(number)} digits, {len(number) - NATIONAL_DIGITS} too"
            f" many: a phone number has {NATIONAL_DIGITS} digits with the area code, or starts"
            " with plus and the country code. Ask the caller to repeat it."
        )
