"""Delivery addresses: is what the caller said complete enough to deliver to?

An address is deliverable when it has a house number, a street and a city
or a postcode. ``parse_address`` reads the one line a model or a transcript
gives ("12 Main Street, Springfield", "Hauptstrasse 5, 10115 Berlin",
"221B Baker Street London NW1 6XE") into those parts with a few plain
rules: commas separate parts; the house number is the number next to the
street words; a postcode is a US ZIP, a UK or Canadian postcode, a Dutch
"1234 AB" or a 4-5 digit number; street-type words ("street", "road"...)
end the street when there are no commas. ``missing()`` names what is absent
so the agent can ask for exactly that.

An address heard by a recogniser comes in lower-case words ("forty two oak
avenue riverside"); ``from_speech`` writes it the way it is typed ("42 Oak
Avenue Riverside", which parses to "42 Oak Avenue, Riverside"): a house
number said in words becomes digits ("twelve", "forty two", "one two three"
digit by digit, "twelve thirty four" in pairs, "one thousand two hundred and
five"), and all-lower-case words get capitals.
"""

from __future__ import annotations

import re
import unicodedata

import msgspec

from pipeflow.realtime.captures import CaptureError, number_from_words

__all__ = [
    "MAX_ADDRESS_CHARS",
    "Address",
    "AddressError",
    "clean_address_text",
    "from_speech",
    "parse_address",
    "require_deliverable",
]

MAX_ADDRESS_CHARS = 200
"""The longest address taken; a real one is well under 100 characters."""

_HOUSE = re.compile(r"^\d{1,5}[a-z]?(?:[-/]\d{1,5}[a-z]?)?$", re.I)
_POSTCODES = (
    re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b", re.I),  # UK
    re.compile(r"\b[A-Z]\d[A-Z]\s*\d[A-Z]\d\b", re.I),  # Canada
    re.compile(r"\b\d{4}\s*[A-Z]{2}\b", re.I),  # Netherlands
    re.compile(r"\b\d{5}(?:-\d{4})?\b"),  # US ZIP, DE, FR, ES, IT
    re.compile(r"\b\d{4}\b"),  # AT, BE, CH, DK, AU...
)
_STREET_TYPES = frozenset((
    "street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "drive", "dr", "way",
    "boulevard", "blvd", "court", "ct", "place", "pl", "square", "sq", "terrace", "close",
    "crescent", "highway", "hwy", "parkway", "pkwy", "alley", "row", "walk", "hill",
    "strasse", "straße", "str", "gasse", "weg", "platz", "allee",
))
_UNIT = re.compile(r"^(?:apt|apartment|flat|unit|suite|ste|floor|fl|#)\b\.?\s*", re.I)


class AddressError(ValueError):
    """The address cannot be delivered to; the message says what is missing."""


class Address(msgspec.Struct, kw_only=True, frozen=True):
    """A delivery address split into the parts delivery needs."""

    house_number: str = ""
    """Number of the house or building ("12", "221B", "5-7")."""
    street: str = ""
    """Street name ("Main Street")."""
    city: str = ""
    """Town or city, with a state or region when given ("Springfield IL")."""
    postcode: str = ""
    """Postal code ("62704", "NW1 6XE")."""
    unit: str = ""
    """Apartment, flat, suite or floor, when given."""
    raw: str = ""
    """The text as the caller gave it."""

    def missing(self) -> list[str]:
        """What delivery still needs: "house number", "street", "city or postcode"."""
        needed = []
        if not self.house_number:
            needed.append("house number")
        if not self.street:
            needed.append("street")
        if not (self.city or self.postcode):
            needed.append("city or postcode")
        return needed

    @property
    def deliverable(self) -> bool:
        """Whether nothing delivery needs is missing."""
        return not self.missing()

    def one_line(self) -> str:
        """``"12 Main Street, Apt 4, Springfield 62704"``."""
        parts = [" ".join(p for p in (self.house_number, self.street) if p)]
        if self.unit:
            parts.append(self.unit)
        place = " ".join(p for p in (self.city, self.postcode) if p)
        if place:
            parts.append(place)
        return ", ".join(p for p in parts if p)


def parse_address(text: str) -> Address:
    """Split a one-line address into its parts (parts not found stay empty).

    Args:
        text: the address as said or typed, parts separated by commas or not.

    Returns:
        The ``Address``; check ``missing()`` or use ``require_deliverable``.
    """
    raw = " ".join(text.split())
    parts = [p.strip() for p in re.split(r"[,;\n]+", raw) if p.strip()]
    unit = ""
    kept = []
    for part in parts:
        if _UNIT.match(part) and not unit:
            unit = part
        else:
            kept.append(part)
    house, street, rest = "", "", kept
    for index, part in enumerate(kept):
        if _HOUSE.match(part) and index + 1 < len(kept) and _has_letters(kept[index + 1]):
            # "12, Main Street, ...": the number said on its own.
            house, street, rest = part, kept[index + 1], kept[:index] + kept[index + 2 :]
            break
        found = _split_street(part, alone=len(kept) == 1)
        if found is not None:
            house, street, tail = found
            rest = kept[:index] + ([tail] if tail else []) + kept[index + 1 :]
            break
    if not street and kept and not _looks_like_place(kept[0]):
        street, rest = kept[0], kept[1:]
    city, postcode = _place(rest)
    return Address(house_number=house, street=street, city=city, postcode=postcode, unit=unit,
                   raw=text.strip())


def clean_address_text(text: str) -> str:
    """``text`` in Unicode NFC with control characters (NUL, escapes, tabs) as spaces.

    Line breaks stay: they separate parts like commas.

    A NUL is refused by PostgreSQL and control characters corrupt whatever
    prints the order later, so they never reach the order.

    Raises:
        AddressError: the text is longer than ``MAX_ADDRESS_CHARS``.
    """
    text = unicodedata.normalize("NFC", text)
    cleaned = "".join(
        " " if ch != "\n" and unicodedata.category(ch)[0] == "C" else ch for ch in text
    )
    length = len(" ".join(cleaned.split()))
    if length > MAX_ADDRESS_CHARS:
        raise AddressError(
            f"That address is {length} characters long; an address is at most"
            f" {MAX_ADDRESS_CHARS}. Ask the caller for just the house number, street and city."
        )
    return cleaned


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "oh")
_NUMBER_WORD = re.compile(
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
    r"seventy|eighty|ninety|hundred|thousand|and)$", re.I)


def from_speech(text: str) -> str:
    """An address as a recogniser writes it, as it would be typed.

    ``"forty two oak avenue riverside"`` -> ``"42 Oak Avenue Riverside"``;
    text that already has digits or capitals keeps them.
    """
    words = text.split()
    count = 0
    while count < len(words) and _NUMBER_WORD.match(words[count].strip(",")):
        count += 1
    while count and words[count - 1].casefold().strip(",") == "and":
        count -= 1
    if count and count < len(words):
        number = _house_number([w.strip(",").casefold() for w in words[:count]])
        if number:
            words = [number, *words[count:]]
    if text == text.casefold():
        words = [w if any(c.isdigit() for c in w) else w.capitalize() for w in words]
    return " ".join(words)


def _house_number(words: list[str]) -> str:
    """A house number said in words, as digits ("" when the words are no house number).

    ``forty two`` -> 42; digit by digit: ``one two oh four`` -> 1204; in
    pairs: ``twelve thirty four`` -> 1234, ``twelve oh five`` -> 1205, ``four
    fifty`` -> 450; with ``hundred`` and ``thousand``: ``one thousand two
    hundred and thirty four`` -> 1234, ``twelve hundred`` -> 1200.
    """
    words = [w for w in words if w != "and"]
    if len(words) > 1 and all(w in _DIGIT_NAMES for w in words):
        return "".join(_digit(w) for w in words)
    value = _thousands(words)
    return str(value) if value else ""


def _thousands(words: list[str]) -> int | None:
    if "thousand" not in words:
        return _hundreds(words)
    at = words.index("thousand")
    head = _small(words[:at]) if at else 1
    tail = _hundreds(words[at + 1:]) if words[at + 1:] else 0
    if head is None or tail is None or not 0 < head < 10 or tail >= 1000:
        return None
    return head * 1000 + tail


def _hundreds(words: list[str]) -> int | None:
    if "hundred" in words:
        at = words.index("hundred")
        head = _small(words[:at]) if at else 1
        tail = _small(words[at + 1:]) if words[at + 1:] else 0
        return None if head is None or tail is None or not head else head * 100 + tail
    whole = _small(words)
    if whole is not None:
        return whole
    for split in range(1, len(words)):  # in pairs: "twelve thirty four", "twelve oh five"
        head, tail = _small(words[:split]), words[split:]
        if len(tail) == 2 and tail[0] == "oh" and tail[1] in _DIGIT_NAMES:
            rest: int | None = int(_digit(tail[1]))
        else:
            rest = _small(tail)
            rest = rest if rest is not None and rest >= 10 else None
        if head and rest is not None:
            return head * 100 + rest
    return None


def _small(words: list[str]) -> int | None:
    """A number 0 to 99 said in words, or None."""
    try:
        value = number_from_words(" ".join(words))
    except CaptureError:
        return None
    return value if 0 <= value < 100 and words[0] not in ("a", "an") else None


def _digit(word: str) -> str:
    return "0" if word == "oh" else str(_DIGIT_NAMES.index(word))


def require_deliverable(text: str) -> Address:
    """Parse an address and insist that it can be delivered to.

    The text is cleaned first (``clean_address_text``).

    Raises:
        AddressError: too long, or a message naming every missing part, for the caller.
    """
    text = clean_address_text(text)
    if not text.strip():
        raise AddressError(
            "No address was given. Ask the caller for the house number, street and city."
        )
    address = parse_address(text)
    needed = address.missing()
    if needed:
        what = needed[0] if len(needed) == 1 else f"{', '.join(needed[:-1])} and {needed[-1]}"
        raise AddressError(
            f"The address {address.raw!r} is missing the {what}. Ask the caller for"
            f" {'it' if len(needed) == 1 else 'them'} so the order can be delivered."
        )
    return address


def _split_street(part: str, alone: bool) -> tuple[str, str, str] | None:
    """(house number, street, what follows) when ``part`` holds a numbered street."""
    words = part.split()
    if len(words) >= 2 and _HOUSE.match(words[0]) and _has_letters(words[1]):
        rest = words[1:]
        if alone:
            # No commas: the street ends at its street-type word; the rest is the place.
            # A name comes before the type, and a type word can be a name ("Hill
            # Road", "Court Street"): the street ends at the last of a run of them.
            kinds = [w.casefold().rstrip(".") in _STREET_TYPES for w in rest]
            ends = [i for i in range(1, len(rest)) if kinds[i]]
            if not ends and kinds[0]:
                ends = [0]
            if ends:
                end = ends[0]
                while end + 1 < len(rest) and kinds[end + 1]:
                    end += 1
                return words[0], " ".join(rest[: end + 1]), " ".join(rest[end + 1 :])
            street, tail = _strip_postcode(rest)
            return words[0], street, tail
        return words[0], " ".join(rest), ""
    for i in range(1, len(words)):
        if _HOUSE.match(words[i]) and all(_has_letters(w) for w in words[:i]):
            # European order: "Hauptstrasse 5", then maybe "10115 Berlin".
            return words[i], " ".join(words[:i]), " ".join(words[i + 1 :])
    return None


def _strip_postcode(words: list[str]) -> tuple[str, str]:
    text = " ".join(words)
    for pattern in _POSTCODES:
        match = pattern.search(text)
        if match and match.start() > 0 and not text[match.end() :].strip():
            return text[: match.start()].strip(), match.group(0)
    return text, ""


def _place(parts: list[str]) -> tuple[str, str]:
    city_words: list[str] = []
    postcode = ""
    for part in parts:
        text = part
        if not postcode:
            for pattern in _POSTCODES:
                match = pattern.search(text)
                if match:
                    postcode = match.group(0).strip().upper()
                    text = (text[: match.start()] + text[match.end() :]).strip()
                    break
        if text and _has_letters(text):
            city_words.append(text)
    city = " ".join(city_words)
    return city, postcode


def _looks_like_place(part: str) -> bool:
    return any(p.search(part) for p in _POSTCODES)


def _has_letters(word: str) -> bool:
    return any(c.isalpha() for c in word)

