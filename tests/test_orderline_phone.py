"""Phone numbers as callers say or type them, normalised to one form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.orderline.phone import PhoneError, normalize_phone, speak_phone


@pytest.mark.parametrize(
    ("said", "number"),
    [
        ("5551234567", "5551234567"),
        ("555-123-4567", "5551234567"),
        ("(555) 123 4567", "5551234567"),
        ("555.123.4567", "5551234567"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("1 555 123 4567", "+15551234567"),  # 1 and 10 digits: the country code
        ("one five five five one two three four five six seven", "+15551234567"),
        ("five five five one two three four five six seven", "5551234567"),
        ("Five, five, five - one two three - four five six seven.", "5551234567"),
        ("double five five one two three four five six seven", "5551234567"),
        ("triple five, one two three, four five six seven", "5551234567"),
        ("five five five one oh oh seven one two three", "5551007123"),
        ("plus four four two oh seven nine four six oh nine five eight", "+442079460958"),
        ("plus one five five five 123 4567", "+15551234567"),
        ("555 one two three 45 six 7", "5551234567"),
        ("five-five-five-one-two-three-four-five-six-seven", "5551234567"),
        ("double 5 5 1 2 3 4 5 6 7", "5551234567"),
    ],
)
def test_formats_and_spoken_digits_normalise(said: str, number: str) -> None:
    assert normalize_phone(said) == number


@pytest.mark.parametrize(
    ("said", "message"),
    [
        ("", "No phone number was given"),
        ("  - ", "No phone number was given"),
        ("555 123", "only 6 digits; 4 are missing"),
        ("five five five one two three four five six", "only 9 digits; 1 is missing"),
        ("555 1234", "only 7 digits; 3 are missing. A phone number has 10 digits"),
        ("+1 555 12", "only 6 digits after the country code's plus; at least 2 more"),
        ("020 7946 0958", "11 digits, 1 too many"),
        ("1234567890123456", "16 digits, 6 too many"),
        ("+1234567890123456", "16 digits; a phone number has at most 15"),
        ("555-CALL-NOW", "'call' where a digit should be"),
        ("five five five twelve", "'twelve' where a digit should be"),
        ("555 123 4567 #", "contains '#'"),
        ("555 + 123 4567", "A plus sign can only start"),
        ("555 123 4567 double", "ends with 'double' or 'triple'"),
        ("double double 5", "'double' where a digit should be"),
        ("double 55 1234567", "'55' where a digit should be"),
        ("+0 555 123 4567", "no country code starts with 0"),
    ],
)
def test_unusable_numbers_are_refused_with_a_reason(said: str, message: str) -> None:
    with pytest.raises(PhoneError, match=message.replace("+", r"\+")):
        normalize_phone(said)


_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NOISE = st.sampled_from([" ", "-", ".", " - ", "  ", "(", ")", ", ", "/", "\t"])
_VALID = st.text("0123456789", min_size=10, max_size=10).filter(lambda d: not d.startswith("00"))


@given(digits=_VALID, international=st.booleans(), data=st.data())
def test_formatting_noise_around_a_valid_number_keeps_its_digits(
    digits: str, international: bool, data: st.DataObject
) -> None:
    if international:
        digits = ("1" + digits.lstrip("0"))[:15].ljust(8, "2")
    pieces: list[str] = []
    for digit in digits:
        spoken = data.draw(st.booleans())
        pieces.append(_WORDS[int(digit)].capitalize() if spoken and digit == "1" else
                      (("oh" if digit == "0" and data.draw(st.booleans()) else _WORDS[int(digit)])
                       if spoken else digit))
        # Spoken digits need a separator; typed ones may run together.
        pieces.append(data.draw(_NOISE) if spoken else data.draw(st.sampled_from(["", *"- ."])))
    text = "".join(pieces)
    if international:
        text = data.draw(st.sampled_from(["+", "+ ", "plus "])) + text
    text = data.draw(st.sampled_from(["", " ", "\n"])) + text + data.draw(_NOISE)
    assert normalize_phone(text) == ("+" if international else "") + digits


@given(_VALID)
def test_read_back_words_normalise_to_the_same_number(digits: str) -> None:
    assert normalize_phone(speak_phone(digits)) == digits
    international = "+4" + digits[:13]
    assert normalize_phone(speak_phone(international)) == international


def test_speak_phone_groups_digits_for_reading_back() -> None:
    assert speak_phone("5551234567") == "five five five, one two three, four five six seven"
    assert speak_phone("5551234") == "five five five, one two three four"
    assert speak_phone("+15551234567").startswith("plus one five five, five one two,")
    assert speak_phone("+442079460958").startswith("plus four four two, zero seven nine,")
