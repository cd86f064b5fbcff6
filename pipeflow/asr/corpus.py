"""Sentences a caller might say, for training a small domain language model.

A speech recogniser with a general English model mishears a phone caller
badly; one whose language model only knows the sentences of the domain
(the products, quantities, digits, addresses, yes and no) gets most words
right and runs fast. This module writes such sentences from templates:

    >>> expand("{qty} {thing} please", {"qty": ["one", "two"], "thing": ["tea"]})
    ['one tea please', 'two tea please']

``order_sentences`` gives a whole ordering domain from catalog-like
products (a name and a plural each). Everything is lower case words as a
recogniser emits them: digits spelled out (``normalize``), apostrophes kept
(``i'd``, ``that's``), no punctuation.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "CITIES",
    "STREETS",
    "address_sentences",
    "digit_sentences",
    "expand",
    "normalize",
    "number_words",
    "order_sentences",
    "phone_numbers",
    "spoken_digits",
]

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SLOT = re.compile(r"\{(\w+)\}")
_TOKEN = re.compile(r"\d+|[a-z]+(?:'[a-z]+)*")

STREETS = ("main", "oak", "maple", "elm", "pine", "cedar", "park", "high", "church", "mill",
           "lake", "hill", "first", "second", "third", "washington", "lincoln", "market")
"""Common street names (spoken before a street type: "main street")."""
CITIES = ("springfield", "riverside", "franklin", "greenville", "fairview", "madison",
          "georgetown", "salem", "clinton", "bristol", "chester", "oxford")
"""Common town names."""
_STREET_TYPES = ("street", "road", "avenue", "lane", "drive", "way")


def number_words(n: int) -> str:
    """``12`` -> ``"twelve"``, ``123`` -> ``"one hundred and twenty three"`` (0 to 999,999).

    Raises:
        ValueError: a negative number or one of a million or more.
    """
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words takes 0 to 999999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        head = f"{_ONES[n // 100]} hundred"
        return head if rest == 0 else f"{head} and {number_words(rest)}"
    rest = n % 1000
    head = f"{number_words(n // 1000)} thousand"
    if rest == 0:
        return head
    return f"{head} {'and ' if rest < 100 else ''}{number_words(rest)}"


def normalize(text: str) -> str:
    """Text as a recogniser writes it: lower case words, digits spelled out.

    ``"I'd like 2 pizzas, please!"`` -> ``"i'd like two pizzas please"``.
    Curly apostrophes count as apostrophes; hyphens and other marks separate
    words. Numbers of a million or more are read digit by digit.
    """
    words: list[str] = []
    for token in _TOKEN.findall(text.casefold().replace("’", "'")):
        if token.isdigit():
            value = int(token)
            if value < 1_000_000 and not (len(token) > 1 and token[0] == "0"):
                words.append(number_words(value))
            else:
                words.extend(_ONES[int(d)] for d in token)
        else:
            words.append(token)
    return " ".join(words)


def expand(
    template: str,
    slots: Mapping[str, Sequence[str]],
    limit: int = 400,
    seed: int = 0,
) -> list[str]:
    """Every filling of a template's ``{slot}`` names, or ``limit`` of them sampled.

    Args:
        template: text with ``{name}`` slots; a slot may appear twice.
        slots: the values of each slot.
        limit: most sentences returned; above it, fillings are sampled
            (reproducibly, from ``seed``).
        seed: seed of the sampling.

    Returns:
        The sentences, normalised (``normalize``), in a stable order.

    Raises:
        KeyError: a slot of the template has no values in ``slots``.
    """
    names = list(dict.fromkeys(_SLOT.findall(template)))
    for name in names:
        if name not in slots:
            raise KeyError(f"the template {template!r} uses the slot {{{name}}}, which has "
                           f"no values (known slots: {', '.join(sorted(slots)) or 'none'})")
    choices = [list(slots[name]) for name in names]
    total = 1
    for values in choices:
        total *= len(values)
    if total <= limit:
        fillings: Iterable[tuple[str, ...]] = itertools.product(*choices)
    else:
        rng = random.Random(f"{seed}:{template}")
        fillings = [tuple(rng.choice(values) for values in choices) for _ in range(limit)]
    parts = _SLOT.split(template)  # text, slot, text, slot, ..., text
    out = []
    for filling in fillings:
        values = dict(zip(names, filling, strict=True))
        text = "".join(values[p] if i % 2 else p for i, p in enumerate(parts))
        out.append(normalize(text))
    return out


def phone_numbers(count: int, seed: int = 0) -> list[str]:
    """``count`` phone numbers spoken digit by digit, in 3-3-4 groups.

    Some say "oh" for zero and some run the groups together, as callers do.
    """
    rng = random.Random(seed)
    out = []
    for i in range(count):
        digits = [rng.randrange(10) for _ in range(10)]
        if i % 4 == 0:
            digits[:3] = [5, 5, 5]
        words = [_ONES[d] if d or i % 3 else "oh" for d in digits]
        out.append(" ".join(words))
    return out


def _quantities(name: str, plural: str, most: int) -> list[str]:
    article = "an" if name[:1] in ("a", "e", "i", "o", "u") else "a"
    items = [f"{article} {name}", f"one {name}"]
    return items + [f"{number_words(n)} {plural}" for n in range(2, most + 1)]


def order_sentences(
    products: Iterable[tuple[str, str]],
    *,
    most: int = 10,
    streets: Sequence[str] = STREETS,
    cities: Sequence[str] = CITIES,
    limit: int = 300,
) -> list[str]:
    """What callers say when ordering from a shop: prices, orders, phone, address, yes/no.

    Args:
        products: (name, plural) of each product or synonym, e.g.
            ``[("pizza", "pizzas"), ("ice cream", "ice creams")]``.
        most: the largest quantity said.
        streets: street names for delivery addresses.
        cities: town names for delivery addresses.
        limit: most sentences per template (see ``expand``).

    Returns:
        A few thousand sentences, normalised.
    """
    pairs = [(normalize(name), normalize(plural)) for name, plural in products]
    names = [name for name, _ in pairs]
    items = [item for name, plural in pairs for item in _quantities(name, plural, most)]
    houses = [number_words(n) for n in (*range(1, 31), 42, 99, 100, 101, 120, 123, 150, 221,
                                        250, 300, 456, 500, 742, 1200)]
    slots: dict[str, Sequence[str]] = {
        "name": names,
        "plural": [plural for _, plural in pairs],
        "item": items,
        "phone": phone_numbers(60),
        "house": houses,
        "street": [f"{s} {t}" for s in streets for t in _STREET_TYPES],
        "city": list(cities),
        "greet": ["hi", "hello", "hey", "good evening", "hi there", "yes hi"],
        "want": ["i'd like", "i would like", "i want", "can i have", "can i get",
                 "could i have", "i'll have", "i'll take", "give me", "let me get",
                 "i'd like to order"],
        "yes": ["yes", "yeah", "yep", "sure", "okay", "correct", "that's right",
                "yes please", "yes that's right", "that's correct"],
        "no": ["no", "nope", "no thanks", "no thank you", "that's all", "that's it",
               "nothing else", "no that's all", "no that's everything"],
        "end": ["please", "thanks", "thank you", "that's all", "and that's all", ""],
    }
    templates = (
        "{greet} what does a {name} cost", "{greet} how much is a {name}",
        "how much is the {name}", "what's the price of a {name}", "how much are the {plural}",
        "how much do {plural} cost", "what do you have", "what's on the menu",
        "do you have {plural}", "{greet} do you have {name}",
        "{want} {item} {end}", "{greet} {want} {item} {end}", "{item} {end}",
        "{want} {item} and {item} {end}", "{yes} {want} {item} and {item} {end}",
        "{item} and {item} {end}", "and {item} {end}", "also {item} {end}",
        "add {item} {end}", "make that {item}",
        "actually make it {item}", "remove the {name}", "no {plural}",
        "my phone number is {phone}", "my number is {phone}", "it's {phone}", "{phone}",
        "you can reach me at {phone}", "the number is {phone}",
        "the address is {house} {street} {city}", "{house} {street} {city}",
        "it's {house} {street} in {city}", "deliver it to {house} {street} {city}",
        "my address is {house} {street} {city}", "{house} {street}",
        "{yes}", "{no}", "{yes} {end}", "{no} {end}", "{yes} that's all thank you",
        "{yes} please place the order", "please place the order", "can you read it back",
        "{no} can you read it back to me", "what's my total", "how long will it take",
        "{greet}", "thank you bye", "goodbye",
    )
    sentences: list[str] = []
    for i, template in enumerate(templates):
        sentences += expand(template, slots, limit=limit, seed=i)
    return [s for s in dict.fromkeys(sentences) if s]


def spoken_digits(digits: str, style: int = 0) -> str:
    """A digit string as a caller says it: ``"5551234"`` -> "five five five one two three four".

    ``style`` picks a way of saying it: 0 plain, 1 "oh" for zero, 2 "double"
    and "triple" for runs (and "oh"), 3 "zero" for zero and "double" for runs.

    Raises:
        ValueError: ``digits`` holds something other than the digits 0-9.
    """
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"spoken_digits takes the digits 0-9, got {digits!r}")
    zero = "oh" if style in (1, 2) else "zero"
    words: list[str] = []
    i = 0
    while i < len(digits):
        run = 1
        while style >= 2 and i + run < len(digits) and digits[i + run] == digits[i] and run < 3:
            run += 1
        word = zero if digits[i] == "0" else _ONES[int(digits[i])]
        if run == 3 and style == 2:
            words.append(f"triple {word}")
        elif run >= 2:
            words.append(f"double {word}")
            run = 2
        else:
            words.append(word)
        i += run
    return " ".join(words)


def digit_sentences(count: int = 3000, seed: int = 0) -> list[str]:
    """What callers say when asked for a phone number, and nothing else.

    Ten-digit numbers (some seven or eleven) in 3-3-4 groups, said plain,
    with "oh", with "double"/"triple" runs, after "my number is", "it's"...
    and a few answers that are not numbers ("sorry", "can you repeat that"),
    so such an answer is not forced into digits. No other domain words: a
    number is heard against digit sequences only.
    """
    rng = random.Random(seed)
    leads = ("", "", "", "my number is", "my phone number is", "it's", "it is",
             "the number is", "you can reach me at", "sure it's", "yes it's", "no it's",
             "no my number is", "sure", "yes", "okay")
    ends = ("", "", "", "", "please", "thanks", "thank you")
    out = []
    for i in range(count):
        length = (10, 10, 10, 10, 7, 11)[i % 6]
        digits = "".join(str(rng.randrange(10)) for _ in range(length))
        if i % 5 == 0:
            digits = "555" + digits[3:]
        if length == 11:
            digits = "1" + digits[1:]
        style = i % 4
        bounds = {7: (3,), 10: (3, 6), 11: (1, 4, 7)}[length]
        cuts = [0, *bounds, length] if i % 3 else [0, length]
        groups = [spoken_digits(digits[a:b], style) for a, b in itertools.pairwise(cuts)]
        out.append(" ".join([leads[i % len(leads)], *groups, ends[i % len(ends)]]).strip())
    out += ["sorry", "sorry what", "what", "can you repeat that", "i don't know",
            "hold on", "one moment", "just a second"]
    return [s for s in dict.fromkeys(normalize(s) for s in out) if s]


def address_sentences(
    houses: Sequence[str],
    streets: Sequence[str],
    types: Sequence[str],
    towns: Sequence[str],
    seed: int = 0,
) -> list[str]:
    """What callers say when asked for a delivery address, and nothing else.

    Each house number form is said once, with a street, a street type and
    (mostly) a town in turn, so every number, every street after a number's
    last word, every type after every street and every town after every
    type occurs: the model knows each of them in its place.

    Args:
        houses: house numbers as said ("twelve", "one twenty three"); one
            given more than once is said more often (with other words).
        streets: street names ("main").
        types: street types ("street", "avenue").
        towns: town names ("springfield").
        seed: seed of the pairing.
    """
    rng = random.Random(seed)
    leads = ("", "", "", "", "the address is", "deliver it to", "it's", "my address is",
             "no it's", "no the address is", "sure it's", "it's at")
    endings = [w.split()[-1] for w in houses]
    plan = [(house, streets[i % len(streets)], types[i % len(types)], towns[i % len(towns)])
            for i, house in enumerate(houses)]
    for last in dict.fromkeys(endings):  # every street after every last number word
        for street in streets:
            plan.append((last, street, rng.choice(types), rng.choice(towns)))
    for street in streets:  # every type after every street, every town after every type
        for kind in types:
            plan.append((rng.choice(houses), street, kind, rng.choice(towns)))
    for kind in types:
        for town in towns:
            plan.append((rng.choice(houses), rng.choice(streets), kind, town))
    out = []
    for i, (house, street, kind, town) in enumerate(plan):
        place = "" if i % 7 == 3 else (f"in {town}" if i % 7 == 5 else town)
        out.append(" ".join([leads[i % len(leads)], house, street, kind, place]).strip())
    out += ["sorry", "sorry what", "what", "can you repeat that", "i don't know", "hold on"]
    return [s for s in dict.fromkeys(normalize(s) for s in out) if s]
