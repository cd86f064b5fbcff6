"""Delivery addresses: parsed into parts, deliverable only when complete."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.orderline.address import AddressError, parse_address, require_deliverable


@pytest.mark.parametrize(
    ("said", "house", "street", "city", "postcode"),
    [
        ("12 Main Street, Springfield", "12", "Main Street", "Springfield", ""),
        ("12 Main Street Springfield 62704", "12", "Main Street", "Springfield", "62704"),
        ("12, Main Street, Springfield", "12", "Main Street", "Springfield", ""),
        ("Springfield, 12 Main Street", "12", "Main Street", "Springfield", ""),
        ("350 Fifth Avenue, New York, NY 10118", "350", "Fifth Avenue", "New York NY", "10118"),
        ("1 Infinite Loop, Cupertino, CA 95014", "1", "Infinite Loop", "Cupertino CA", "95014"),
        ("221B Baker Street London NW1 6XE", "221B", "Baker Street", "London", "NW1 6XE"),
        ("10 Downing St, London SW1A 2AA", "10", "Downing St", "London", "SW1A 2AA"),
        ("Hauptstrasse 5, 10115 Berlin", "5", "Hauptstrasse", "Berlin", "10115"),
        ("Hauptstrasse 5 10115 Berlin", "5", "Hauptstrasse", "Berlin", "10115"),
        ("Damrak 1, 1012 LG Amsterdam", "1", "Damrak", "Amsterdam", "1012 LG"),
        ("12 Main 62704", "12", "Main", "", "62704"),
        ("  12   Elm Road,\n  Shelbyville ", "12", "Elm Road", "Shelbyville", ""),
        # A street-type word can be the street's name: the street ends at the last one.
        ("100 Hill Road Madison", "100", "Hill Road", "Madison", ""),
        ("5 Court Street Salem", "5", "Court Street", "Salem", ""),
        ("7 Hill Madison", "7", "Hill", "Madison", ""),
    ],
)
def test_deliverable_addresses_split_into_parts(
    said: str, house: str, street: str, city: str, postcode: str
) -> None:
    address = require_deliverable(said)
    assert (address.house_number, address.street, address.city, address.postcode) == (
        house, street, city, postcode
    )
    assert address.deliverable
    assert address.raw == said.strip()


def test_unit_is_kept_apart_and_read_back() -> None:
    address = require_deliverable("12 Main Street, Apt 4B, Springfield IL 62704")
    assert address.unit == "Apt 4B"
    assert address.city == "Springfield IL"
    assert address.one_line() == "12 Main Street, Apt 4B, Springfield IL 62704"


@pytest.mark.parametrize(
    ("said", "missing"),
    [
        ("Main Street, Springfield", ["house number"]),
        ("12 Main Street", ["city or postcode"]),
        ("12 Springfield", ["city or postcode"]),
        ("62704", ["house number", "street"]),
        ("Springfield", ["house number", "city or postcode"]),
        ("the usual place", ["house number", "city or postcode"]),
    ],
)
def test_incomplete_addresses_name_what_is_missing(said: str, missing: list[str]) -> None:
    assert parse_address(said).missing() == missing
    with pytest.raises(AddressError) as caught:
        require_deliverable(said)
    message = str(caught.value)
    assert f"The address {said!r} is missing the" in message
    for part in missing:
        assert part in message
    assert "Ask the caller for" in message


def test_two_missing_parts_read_as_one_sentence() -> None:
    with pytest.raises(AddressError, match=r"missing the house number and street\. Ask the caller"
                       r" for them"):
        require_deliverable("62704")


@pytest.mark.parametrize("said", ["", "   ", "\n"])
def test_empty_address_asks_for_everything(said: str) -> None:
    with pytest.raises(AddressError, match="No address was given"):
        require_deliverable(said)


_STREETS = st.sampled_from(["Main Street", "Elm Road", "Oak Avenue", "Baker Street"])
_CITIES = st.sampled_from(["Springfield", "Shelbyville", "New York", "London"])


@given(
    house=st.integers(1, 99999).map(str),
    street=_STREETS,
    city=_CITIES,
    comma=st.booleans(),
    postcode=st.one_of(st.just(""), st.integers(10000, 99999).map(str)),
)
def test_number_street_and_city_are_always_found(
    house: str, street: str, city: str, comma: bool, postcode: str
) -> None:
    text = f"{house} {street}{',' if comma else ''} {city} {postcode}".strip()
    address = require_deliverable(text)
    assert (address.house_number, address.street, address.city, address.postcode) == (
        house, street, city, postcode
    )


def _said(n: int, form: int) -> str:
    """House number ``n`` as people say it: in full, without "and", in pairs, digit by digit."""
    from pipeflow.asr.corpus import number_words

    full = number_words(n)
    if form == 1:
        return full.replace(" and ", " ")
    if form == 2 and n >= 100:
        head, tail = divmod(n, 100)
        if tail == 0:
            return f"{number_words(head)} hundred"
        spoken_tail = f"oh {number_words(tail)}" if tail < 10 else number_words(tail)
        return f"{number_words(head)} {spoken_tail}"
    if form == 3 and n >= 10:
        return " ".join("oh" if d == "0" else number_words(int(d)) for d in str(n))
    return full


@given(st.integers(1, 9999), st.integers(0, 3),
       st.sampled_from(["oak avenue riverside", "main street springfield", "elm road salem"]))
def test_a_house_number_said_any_way_is_written_in_digits(n: int, form: int, rest: str) -> None:
    from pipelines.orderline.address import from_speech, require_deliverable

    address = require_deliverable(from_speech(f"{_said(n, form)} {rest}"))
    assert address.house_number == str(n)
    assert address.one_line().startswith(f"{n} ") and ", " in address.one_line()


@pytest.mark.parametrize(("said", "written"), [
    ("forty two oak avenue riverside", "42 Oak Avenue, Riverside"),
    ("Twelve Main Street, Springfield", "12 Main Street, Springfield"),
    ("twelve thirty four elm road salem", "1234 Elm Road, Salem"),
    ("one hundred and five high street leeds", "105 High Street, Leeds"),
    ("12 Main Street, Springfield", "12 Main Street, Springfield"),
])
def test_a_spoken_address_reads_as_typed(said: str, written: str) -> None:
    from pipelines.orderline.address import from_speech, require_deliverable

    assert require_deliverable(from_speech(said)).one_line() == written


def test_words_that_are_no_house_number_stay_words() -> None:
    from pipelines.orderline.address import from_speech

    assert from_speech("oak avenue riverside") == "Oak Avenue Riverside"
    assert from_speech("a main street") == "A Main Street"  # "a" is no house number
