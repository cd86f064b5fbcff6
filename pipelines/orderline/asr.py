"""What callers of the order line say, for the offline speech recogniser.

``SENTENCES`` trains the recogniser's language model (``pipeflow.asr``):
price questions, orders with quantities 1 to 20 for every product name, plural
and synonym of the catalog, phone numbers, delivery addresses, yes and no.
The local Realtime server's order-line script names it::

    transcriber:
      type: pocketsphinx
      sentences_from: pipelines.orderline.asr:SENTENCES

When the agent has just asked for a phone number or an address, the script
says what it expects next, and the recogniser listens with a model of only
those answers: ``PHONE_SENTENCES`` (digits, "oh", "double", groups, "my
number is"), ``ADDRESS_SENTENCES`` (house numbers 1 to 9999, the streets
and towns of ``places``) and ``CONFIRM_SENTENCES`` (yes or no)::

    transcriber:
      expectations:
        phone: orderline.asr:PHONE_SENTENCES
        address: orderline.asr:ADDRESS_SENTENCES
        confirm: orderline.asr:CONFIRM_SENTENCES

``UTTERANCES`` are the recordings the tests and the benchmark speak (with
espeak-ng) and score: each with the slot words that must be heard for the
script to branch right.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeflow.asr.corpus import address_sentences, digit_sentences, order_sentences

from .catalog import DEFAULT_CATALOG, Catalog
from .places import HOUSE_NUMBERS, STREET_NAMES, STREET_TYPES, TOWNS, house_number_words

__all__ = [
    "ADDRESS_SENTENCES",
    "CONFIRM_SENTENCES",
    "PHONE_SENTENCES",
    "SENTENCES",
    "UTTERANCES",
    "Utterance",
    "product_names",
    "sentences",
]


def product_names(catalog: Catalog) -> list[tuple[str, str]]:
    """(singular, plural) of every product name and synonym in ``catalog``."""
    names: list[tuple[str, str]] = []
    for product in catalog:
        names.append((product.name, product.plural_name()))
        names += [(synonym, f"{synonym}s") for synonym in product.synonyms]
    return names


def sentences(catalog: Catalog = DEFAULT_CATALOG, extra: Iterable[str] = ()) -> list[str]:
    """The order line's caller sentences for ``catalog``, plus ``extra`` ones."""
    return order_sentences(product_names(catalog), most=20) + list(extra)


SENTENCES = sentences()
"""Caller sentences for the default catalog (pizza, salad, ice cream)."""

PHONE_SENTENCES = digit_sentences()
"""What a caller says when asked for a phone number: digits only, no other domain words."""



def _house_weight(n: int) -> int:
    """How often a house number is said, relative to one of four digits.

    Streets have more low numbers than high ones; with every number equally
    likely, a short number at the start ("twelve main street") lost to
    frequent words ("way oakland street", measured).
    """
    return 12 if n < 100 else 3 if n < 1000 else 1


ADDRESS_SENTENCES = address_sentences(
    [form for n in HOUSE_NUMBERS for form in house_number_words(n)
     for _ in range(_house_weight(n))],
    STREET_NAMES, STREET_TYPES, TOWNS)
"""What a caller says when asked for an address: the house numbers, streets and towns
of ``places``."""

_YES = ("yes", "yeah", "yep", "sure", "okay", "correct", "that's right", "yes please",
        "yes that's right", "that's correct", "yes it is", "yes go ahead",
        "yes please place the order", "please place the order", "go ahead")
_NO = ("no", "nope", "no that's wrong", "no that's not right", "that's wrong", "no it isn't",
       "not quite", "no wait", "no sorry")
CONFIRM_SENTENCES = [*_YES, *_NO, *(f"{y} thank you" for y in _YES[:6]),
                     "sorry", "what", "can you repeat that"]
"""What a caller says when asked to confirm: yes or no."""


class Utterance:
    """One test recording: what the caller says and the words that must be heard.

    Args:
        text: the sentence as the caller says it (espeak-ng speaks it).
        slots: words the transcript must contain (product, quantity, yes/no).
    """

    __slots__ = ("slots", "text")

    def __init__(self, text: str, *slots: str) -> None:
        self.text = text
        self.slots = slots

    def __repr__(self) -> str:
        return f"Utterance({self.text!r})"


UTTERANCES = (
    Utterance("Hi, what does a pizza cost?", "pizza"),
    Utterance("How much is the ice cream?", "ice", "cream"),
    Utterance("I'd like two pizzas and one salad, please.", "two", "pizzas", "one", "salad"),
    Utterance("Can I get four pizzas and two ice creams?", "four", "pizzas", "two", "ice"),
    Utterance("And one ice cream.", "one", "ice", "cream"),
    Utterance("Three salads, please.", "three", "salads"),
    Utterance("Actually, make that five pizzas.", "five", "pizzas"),
    Utterance("No, that's all. Can you read it back to me?", "no"),
    Utterance("My phone number is five five five, one two three, four five six seven.",
              "phone"),
    Utterance("It's five five five, nine eight seven, six five four three.", "nine", "eight"),
    Utterance("The address is 12 Main Street, Springfield.", "street"),
    Utterance("Deliver it to 42 Oak Avenue, Riverside.", "avenue"),
    Utterance("Yes, please place the order.", "yes"),
    Utterance("Yes, that's all, thank you.", "yes"),
    Utterance("No thanks.", "no"),
)
"""The recordings scored by tests/test_asr.py and benchmarks/bench_asr.py."""
