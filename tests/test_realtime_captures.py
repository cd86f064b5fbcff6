"""Typed captures, patterns and the dialogue engine of the local server's scripts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.realtime.captures import (
    BUILTIN_TYPES,
    CaptureError,
    digits_from_words,
    number_from_words,
    vocabulary_type,
)
from pipeflow.realtime.dialogue import Call, Dialogue
from pipeflow.realtime.patterns import compile_pattern, explained, words_of
from pipeflow.realtime.script import parse_script

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spoken(n: int, hyphen: bool = False) -> str:
    """``21`` -> ``"twenty one"`` (0 to 99)."""
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    tens, unit = divmod(n, 10)
    return _TENS[tens - 2] + (("-" if hyphen else " ") + _UNITS[unit] if unit else "")


@given(st.integers(0, 99), st.booleans())
def test_every_number_word_reads_back(n: int, hyphen: bool) -> None:
    assert number_from_words(spoken(n, hyphen)) == n
    assert number_from_words(str(n)) == n


@given(st.integers(1, 99), st.sampled_from(["pizzas", "salads"]), st.booleans())
def test_a_number_capture_finds_the_number_in_a_sentence(n: int, what: str, digits: bool) -> None:
    pattern = compile_pattern("{n:number} " + what, dict(BUILTIN_TYPES))
    said = f"could I get {n if digits else spoken(n)} {what} please"
    [found] = pattern.find(words_of(said))
    assert found.values == {"n": n}


@pytest.mark.parametrize(("said", "value"), [
    ("a", 1), ("an", 1), ("A couple of", 2), ("a dozen", 12), ("Twenty-One", 21),
])
def test_articles_and_counts_are_numbers(said: str, value: int) -> None:
    assert number_from_words(said) == value


@pytest.mark.parametrize("said", ["", "lots", "twenty twenty", "one two", "seven teen"])
def test_words_that_are_no_number_are_refused(said: str) -> None:
    with pytest.raises(CaptureError):
        number_from_words(said)


def _say_digits(digits: str, draw: st.DrawFn) -> str:
    """Digits as a caller might say them: words, oh, double/triple, typed, in groups."""
    out: list[str] = []
    i = 0
    while i < len(digits):
        run = len(digits[i:]) - len(digits[i:].lstrip(digits[i]))
        digit = digits[i]
        word = "oh" if digit == "0" and draw(st.booleans()) else _UNITS[int(digit)]
        if run >= 3 and draw(st.booleans()):
            out.append(f"triple {word}")
            i += 3
        elif run >= 2 and draw(st.booleans()):
            out.append(f"double {word}")
            i += 2
        else:
            out.append(digit if draw(st.booleans()) else word)
            i += 1
        out.append(draw(st.sampled_from([" ", ", ", " - ", "  "])))
    return "".join(out).strip(" ,-")


@st.composite
def said_digits(draw: st.DrawFn) -> tuple[str, str]:
    digits = draw(st.text("0123456789", min_size=1, max_size=15))
    plus = draw(st.booleans())
    text = _say_digits(digits, draw)
    if plus:
        text = draw(st.sampled_from(["plus ", "+", "+ "])) + text
    return ("+" if plus else "") + digits, text


@given(said_digits())
def test_spoken_digits_read_back_whatever_the_grouping(case: tuple[str, str]) -> None:
    digits, text = case
    assert digits_from_words(text) == digits
    pattern = compile_pattern("{d:digits}", dict(BUILTIN_TYPES))
    found = pattern.find(words_of(f"it's {text}."))
    assert found and found[0].values == {"d": digits}


@pytest.mark.parametrize(("said", "message"), [
    ("five five double", "ends with 'double' or 'triple'"),
    ("double double five", "'double' where a digit should be"),
    ("double 55", "'55' where a digit should be"),
    ("five plus five", "A plus sign can only start"),
    ("five apples", "'apples' where a digit should be"),
    ("", "No digits"),
])
def test_digits_that_cannot_be_read_are_refused(said: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        digits_from_words(said)


def test_a_capture_that_cannot_be_converted_is_no_reading() -> None:
    pattern = compile_pattern("number {d:digits}", dict(BUILTIN_TYPES))
    assert pattern.find("number five five double") == []


def test_a_vocabulary_matches_names_plurals_and_hyphens() -> None:
    types = {**BUILTIN_TYPES, "food": vocabulary_type("food", {
        "ice cream": "ice cream", "ice creams": "ice cream", "pie": "pizza"})}
    pattern = compile_pattern("{n:number} {f:food}", types)
    found = pattern.find("two ice-creams and a pie", each=True)
    assert [f.values for f in found] == [{"n": 2, "f": "ice cream"}, {"n": 1, "f": "pizza"}]
    assert pattern.find("two pies please") == []  # "pies" is not in this vocabulary


def test_explained_counts_letters_and_digits_inside_the_readings() -> None:
    pattern = compile_pattern("{n:number} pizzas?", dict(BUILTIN_TYPES))
    words = "yes, two pizzas!"
    assert explained(words, pattern.find(words)) == len("twopizzas")


_SCRIPT = """
states:
  start: {}
  number: {expect: digits, fallback: [{say: "Which number?"}]}
turns:
  - match: ["{n:number} apples?"]
    each: true
    repeat: true
    steps:
      - call: add
        arguments: {n: "{n}", what: "apples", note: "{n} said as '{user}'"}
      - say: "Added {n}."
  - match: ["apples"]
    repeat: true
    steps: [{say: "How many apples?"}]
  - match: ["call me"]
    then: number
    steps: [{say: "Your number?"}]
  - match: ["{d:digits}"]
    when: number
    then: start
    repeat: true
    steps:
      - call: dial
        arguments: {d: "{d}"}
      - say: "Dialled."
    refused: [{say: "No: {result.reason}"}]
fallback: [{say: "Sorry?"}]
"""


def test_the_best_explaining_turn_is_chosen_and_ties_go_to_the_first() -> None:
    script = parse_script(_SCRIPT)
    two = script.match("two apples", set(), "start")
    assert two is not None and two.turn == 0  # explains more than "apples" alone
    bare = script.match("apples", set(), "start")
    assert bare is not None and bare.turn == 1
    assert script.match("five five five", set(), "start") is None  # not in this state
    assert script.match("five five five", set(), "number").turn == 3  # type: ignore[union-attr]


def test_each_reading_makes_a_call_with_typed_arguments() -> None:
    dialogue = Dialogue(parse_script(_SCRIPT))
    dialogue.hear("two apples and 3 apples")
    plan = dialogue.respond()
    assert plan.text == "" and plan.calls == [
        Call("add", {"n": 2, "what": "apples", "note": "2 said as 'two apples and 3 apples'"}),
        Call("add", {"n": 3, "what": "apples", "note": "3 said as 'two apples and 3 apples'"}),
    ]
    dialogue.tool_output("ok")
    dialogue.tool_output("ok")
    assert dialogue.respond().text == "Added 3."


def test_nothing_understood_calls_nothing_and_keeps_the_state() -> None:
    dialogue = Dialogue(parse_script(_SCRIPT))
    dialogue.hear("call me")
    assert dialogue.respond().text == "Your number?" and dialogue.state == "number"
    assert dialogue.expect == "digits"
    dialogue.hear("I forgot it")
    plan = dialogue.respond()
    assert plan.calls == [] and plan.text == "Which number?"  # the state's fallback
    assert dialogue.state == "number"


def test_a_refused_call_keeps_the_state_and_a_good_one_moves_on() -> None:
    dialogue = Dialogue(parse_script(_SCRIPT))
    dialogue.hear("call me")
    dialogue.respond()
    dialogue.hear("five five")
    assert dialogue.respond().calls == [Call("dial", {"d": "55"})]
    dialogue.tool_output('{"ok": false, "reason": "too short"}')
    assert dialogue.respond().text == "No: too short"
    assert dialogue.state == "number"
    dialogue.hear("five five five one")
    dialogue.respond()
    dialogue.tool_output('{"ok": true}')
    assert dialogue.respond().text == "Dialled." and dialogue.state == "start"


def test_new_words_before_the_outputs_drop_the_waiting_steps() -> None:
    dialogue = Dialogue(parse_script(_SCRIPT))
    dialogue.hear("one apple")
    assert dialogue.respond().calls
    dialogue.hear("what?")
    assert dialogue.respond(outputs_in=False).text == "Sorry?"
    assert dialogue.respond().text == "Sorry?"  # "Added 1." was dropped, no turn in order


def test_unknown_words_take_turns_in_order_with_captures_from_their_user_text() -> None:
    script = parse_script("""
turns:
  - match: ["{n:number} apples"]
    user: "Three apples."
    steps:
      - call: add
        arguments: {n: "{n}"}
  - match: ["{n:number} pears"]
    steps:
      - call: add
        arguments: {n: "{n}"}
  - user: "Bye."
    steps: [{say: "Bye!"}]
""")
    dialogue = Dialogue(script)
    assert dialogue.hear(None) == "Three apples."
    assert dialogue.respond().calls == [Call("add", {"n": 3})]
    assert dialogue.hear(None) == "Bye."  # the pears turn has no words to act on
