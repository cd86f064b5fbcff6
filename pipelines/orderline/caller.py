"""What a test or benchmark caller says to the order line, one line per script turn.

Shared by the tests (``tests/gateway_util.py``) and the soak
(``benchmarks/soak.py``), so both callers say the same thing and place the
same order: 2 pizzas, 1 salad, 1 ice cream, to the number and address given.
"""

from __future__ import annotations

__all__ = ["CALLER_LINES", "PHONE_BAND_ADDRESS", "PHONE_BAND_LINES", "PHONE_BAND_NUMBER"]

CALLER_LINES = (
    "How much is a pizza?",
    "Two pizzas and one salad, please.",
    "And one ice cream.",
    "No, that is all.",
    "Five five five, one two three, four five six seven.",
    "Twelve Main Street, Springfield.",
    "Yes, please place the order.",
)
"""What the caller says, one line per script turn of pipelines/orderline/script.yaml."""

PHONE_BAND_NUMBER = "5552124389"
PHONE_BAND_ADDRESS = "42 Oak Avenue, Riverside"
PHONE_BAND_LINES = tuple(
    {"Five five five, one two three, four five six seven.":
         "Five five five, two one two, four three eight nine.",
     "Twelve Main Street, Springfield.": "Forty two Oak Avenue, Riverside."}.get(line, line)
    for line in CALLER_LINES)
"""``CALLER_LINES`` for calls at 8 kHz (Twilio): the offline recogniser, a 16 kHz model,
hears "six" and "seven" through the phone band as other digits (the band cuts their
"s"; docs/asr.md measures it: 3 of 40 spoken numbers right at 8 kHz) and mishears
"Twelve Main Street" there, so these calls give a number and an address it hears and
assert that exactly these are stored. They test the phone line, not the recogniser."""
