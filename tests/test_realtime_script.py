"""The local Realtime server's script: loading, errors with file:line, turn choice, templates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.errors import ConfigError
from pipeflow.realtime.script import DEFAULT_SCRIPT, load_script, parse_script, render
from tests.realtime_fixtures import TEST_SCRIPT

ROOT = Path(__file__).resolve().parent.parent


def test_demo_script_loads_and_uses_every_step_kind() -> None:
    script = load_script(ROOT / "pipelines" / "scripts" / "demo.yaml")
    steps = [step for turn in script.turns for step in turn.steps]
    assert script.greeting and script.source.endswith("demo.yaml")
    assert {"say", "call", "end"} <= {
        "say" if s.say else "call" if s.call else "end" for s in steps
    }
    weather = script.match("is it raining? what's the weather in Oslo", set(), "start")
    assert weather is not None and weather.found[0].values == {"city": "Oslo"}
    sums = script.match("please add 4 and 5", set(), "start")
    assert sums is not None and sums.found[0].values == {"a": 4, "b": 5}
    assert script.choose("please add these", set(), "start") is None  # no numbers: fallback


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("turns:\n  - steps:\n      - say: hi\n        call: f\n", ":3:9",
         "exactly one of 'say', 'call' or 'end: true', found 'say' and 'call'"),
        ("turns:\n  - steps:\n      - {}\n", ":3:9", "found none of them"),
        ("turns:\n  - steps:\n      - say: hi\n        arguments: {a: 1}\n", ":4:9",
         "'arguments' belongs to a 'call' step"),
        ("turns:\n  - steps:\n      - sya: hi\n", ":3:9", "did you mean 'say'?"),
        ("greting: hi\n", ":1:1", "did you mean 'greeting'?"),
        ("turns:\n  - match: ['(']\n    steps: [{say: hi}]\n", ":2:13",
         "not a valid regular expression"),
        ("turns:\n  - match: ['{n:nuber}']\n    steps: [{say: hi}]\n", ":2:13",
         "unknown capture type 'nuber' in {n:nuber}; the types are digits, name, number, text"),
        ("turns:\n  - match: '{n:number} {n:text}'\n    steps: [{say: hi}]\n", ":2:5",
         "the capture {n} is named twice"),
        ("turns:\n  - match: ['{n:number}', 'hi']\n    steps: [{say: '{n}'}]\n", ":3:14",
         "unknown placeholder {n}"),
        ("turns:\n  - match: '{n:number}'\n    steps:\n      - call: f\n"
         "        arguments: {x: '{m}'}\n", ":5:21", "unknown placeholder {m}"),
        ("states: {a: {}}\nturns:\n  - then: b\n    steps: [{say: hi}]\n", ":3:5",
         "'then' names the state 'b', which is not in 'states'; the states are 'a'"),
        ("turns:\n  - when: [a]\n    steps: [{say: hi}]\n", ":2:12",
         "'when' names the state 'a', which is not in 'states'; the states are none"),
        ("vocabularies: {food: no_such_module_x:NAMES}\n", ":1:16", "no_such_module_x"),
        ("vocabularies: {number: pipelines.orderline.catalog:spoken_names}\n", ":1:16",
         "a vocabulary needs a name of its own"),
        ("vocabularies: {food: pipelines.orderline.catalog:DEFAULT_CATALOG}\n", ":1:16",
         "must name a mapping of spoken names to values or a list of names"),
        ("states: {a: {fallback: [{say: '{x}'}]}}\n", ":1:26", "unknown placeholder {x}"),
        ("turns:\n  - steps:\n      - say: 'total {total}'\n", ":3:9",
         "unknown placeholder {total}"),
        ("turns:\n  - steps:\n      - say: 'a } b'\n", ":3:9", "unbalanced brace"),
        ("turns:\n  - steps: []\n", ":2:5", "has no steps"),
        ("speed: -1\n", ":1:1", "must be >= 0.0, got -1"),
        ("words_per_minute: 20\n", ":1:1", "must be >= 80, got 20"),
        ("turns:\n  - steps:\n      - call: 'bad name'\n", ":3:9", "must be a function name"),
        ("- just a list\n", "", "must be a mapping"),
        ("turns: [\n", ":2:1", "invalid YAML"),
    ],
)
def test_mistakes_name_the_line_and_the_field(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_script(text, "calls.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith(f"calls.yaml{where}")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_script(tmp_path / "missing.yaml")


def test_turns_are_chosen_by_match_then_in_order() -> None:
    script = TEST_SCRIPT  # weather (match), order (match), goodbye (no match)
    assert script.choose("How is the WEATHER today?", set()) == 0
    assert script.choose("I want to place an order", set()) == 1
    assert script.choose("something else", set()) == 2  # the first turn with no match
    assert script.choose("weather again", {0}) == 2  # used turns are not taken again
    assert script.choose("nothing", {2}) is None  # fallback
    assert script.choose(None, set()) == 0  # words unknown: the next turn in order
    assert script.choose(None, {0}) == 1


def test_repeat_keeps_a_turn_available() -> None:
    script = parse_script("turns:\n  - match: hi\n    repeat: true\n    steps: [{say: hey}]\n")
    assert script.choose("hi", {0}) == 0
    assert script.choose("bye", {0}) is None


def test_render_fills_result_fields_user_and_braces() -> None:
    result = '{"total": 12.5, "items": [{"name": "pizza"}], "note": "ok"}'
    text = render("{user}: {result.items.0.name} costs {result.total} {{EUR}} ({result.note})",
                  result, "Ann")
    assert text == "Ann: pizza costs 12.5 {EUR} (ok)"
    assert render("Result: {result}", "plain text", "") == "Result: plain text"
    # a field that is not there is never spoken as the placeholder: a plain-text
    # result stands for it, a JSON result without it gives nothing
    assert render("Total {result.total}", "not json", "") == "Total not json"
    assert render("{result.missing} Anything else?", result, "") == "Anything else?"
    assert render("It is {result.missing} today.", result, "") == "It is today."
    assert render("{result.a.b}", '"a string"', "") == '"a string"'


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=60)))
def test_render_never_raises_for_any_result(template_words: str, result: str | None) -> None:
    safe = template_words.replace("{", "").replace("}", "")
    out = render(safe + " {result.a.0} {result} {user}", result, "u")
    assert out.startswith(safe)


def test_default_script_answers_anything() -> None:
    assert DEFAULT_SCRIPT.greeting
    assert DEFAULT_SCRIPT.choose("anything at all", set()) is None
    assert DEFAULT_SCRIPT.fallback and DEFAULT_SCRIPT.fallback[0].say


def test_docs_describe_every_script_and_fault_field() -> None:
    import msgspec

    from pipeflow.realtime.script import Script, Step, Turn
    from pipeflow.realtime.server_faults import Faults

    doc = (ROOT / "docs" / "realtime.md").read_text()
    missing = [
        f"{cls.__name__}.{field.name}"
        for cls in (Script, Turn, Step, Faults)
        for field in msgspec.structs.fields(cls)
        if field.name != "source" and f"| `{field.name}` |" not in doc
    ]
    assert not missing, f"docs/realtime.md does not describe: {missing}"


def test_the_documented_example_script_plays_as_described() -> None:
    import re

    from pipeflow.realtime.dialogue import Call, Dialogue

    doc = (ROOT / "docs" / "realtime.md").read_text()
    section = doc[doc.index("## The script format"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    text = example.group(1).replace("orderline.catalog:", "pipelines.orderline.catalog:")
    dialogue = Dialogue(parse_script(text, "realtime.md"))
    dialogue.respond()  # the greeting
    dialogue.hear("three salads and four pizzas")
    assert dialogue.respond().calls == [Call("add_to_order", {"product": "salad", "quantity": 3}),
                                        Call("add_to_order", {"product": "pizza", "quantity": 4})]
    dialogue.tool_output('{"ok": true, "message": "Added."}')
    dialogue.respond()
    dialogue.hear("that's all")
    dialogue.respond()
    dialogue.tool_output('{"ok": true, "message": "Two items."}')
    assert dialogue.respond().text == "Two items. What phone number can we reach you on?"
    assert dialogue.expect == "digits"
    dialogue.hear("five five five")
    assert dialogue.respond().calls == [Call("set_phone", {"phone": "555"})]
    dialogue.tool_output('{"ok": false, "reason": "Too short."}')
    assert dialogue.respond().text == "Sorry. Too short. Could you say the whole number again?"
    assert dialogue.state == "phone"


def test_the_demo_acts_only_on_a_whole_utterance() -> None:
    from pipeflow.realtime.dialogue import Dialogue
    from pipeflow.realtime.script import Unexplained

    script = load_script(ROOT / "pipelines" / "scripts" / "demo.yaml")
    assert script.understand("seven plus nine plus ten", set(), "start") == Unexplained(
        "plus ten")
    zero = Dialogue(script)
    zero.hear("5 divided by 0")
    plan = zero.respond()
    assert plan.calls == [] and plan.text == ("5 divided by zero has no answer: no number "
                                              "times zero gives 5.")
    city = Dialogue(script)
    city.hear("what's the weather like")
    city.respond()
    assert city.state == "city"
    city.hear("I want to know if I need an umbrella tomorrow")
    plan = city.respond()
    assert plan.calls == [] and plan.text.startswith('Sorry, I didn\'t understand "know if')
    city.hear("New York, please")
    assert city.respond().calls[0].arguments == {"location": "New York"}
