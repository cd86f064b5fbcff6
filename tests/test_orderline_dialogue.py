"""What the offline order line does with what callers type: the tool calls it makes.

Each case is a typed caller line, said after a few lines that bring the call
to a point of the dialogue (taking the order, the phone number, the address,
the confirmation). The lines go through the local Realtime server's session
(``ServerSession``, the same one `pipeflow chat` and the gateway talk to)
and the calls it makes run the real order-line tools, whose outputs go back
to it, as in a call. What is checked is every call the line caused, by name
and arguments, and nothing more: a line the script cannot understand calls
nothing and asks again.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pipeflow.frames import ToolCall
from pipeflow.realtime.script import load_script
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from pipeflow.tools import FunctionCall, RunContext, ToolSet, invoke
from pipelines.orderline import tools as orderline

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = load_script(ROOT / "pipelines" / "orderline" / "script.yaml")
TOOLS = ToolSet.from_refs(["pipelines.orderline.tools"])


class TypedCall:
    """A call to the offline order line by text, with the real tools behind it."""

    def __init__(self, tmp_path: Path, transcriber: Any = None) -> None:
        self.session = ServerSession(SCRIPT, ServerOptions(speed=0, first_audio_delay_ms=0,
                                                           speech="tones"),
                                     transcriber=transcriber)
        self.userdata: dict[str, Any] = {}
        orderline.setup(self.userdata, str(tmp_path))
        self.now = 0.0
        self.session.start(self.now)
        self._send({"type": "response.create"})
        self.replies: list[str] = []
        self.greeting = self._drain()[1]

    def _send(self, event: dict[str, Any]) -> None:
        self.session.receive_data(json.dumps(event), self.now)

    def _read(self) -> list[dict[str, Any]]:
        self.now += 60.0
        return [json.loads(data) for data in self.session.data_to_send(self.now)]

    def _drain(self) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        """Run responses until one makes no call: the calls made and what was said."""
        calls: list[tuple[str, dict[str, Any]]] = []
        said: list[str] = []
        while True:
            events = self._read()
            assert [e for e in events if e["type"] == "error"] == []
            said += [e["transcript"] for e in events
                     if e["type"] == "response.output_audio_transcript.done"]
            made = [e for e in events if e["type"] == "response.function_call_arguments.done"]
            assert any(e["type"] == "response.done" for e in events)
            if not made:
                return calls, " ".join(said)
            for event in made:
                arguments = json.loads(event["arguments"])
                calls.append((event["name"], arguments))
                output = asyncio.run(self._run(event["call_id"], event["name"], arguments))
                self._send({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": event["call_id"],
                    "output": output}})
            self._send({"type": "response.create"})

    async def _run(self, call_id: str, name: str, arguments: dict[str, Any]) -> str:
        call = ToolCall(call_id=call_id, name=name, arguments=json.dumps(arguments))
        context: RunContext[dict[str, Any]] = RunContext(
            call_id=call_id, function_call=FunctionCall(name=name, arguments=call.arguments),
            userdata=self.userdata, session_id="typed")
        result = await invoke(TOOLS, call, context, timeout_s=10)
        assert not result.is_error, result.output
        return result.output

    def say(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        """Type one line; the calls it caused (the agent's answer is in ``replies``)."""
        self._send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]}})
        self._send({"type": "response.create"})
        calls, said = self._drain()
        self.replies.append(said)
        return calls

    def speak(self) -> list[tuple[str, dict[str, Any]]]:
        """Commit a turn of audio (the transcriber says what it held); the calls it caused."""
        self._send({"type": "input_audio_buffer.append",
                    "audio": base64.b64encode(b"\x01\x00" * 4800).decode()})
        self._send({"type": "input_audio_buffer.commit"})
        self._send({"type": "response.create"})
        calls, said = self._drain()
        self.replies.append(said)
        return calls

    @property
    def state(self) -> str | None:
        return self.session.dialogue.state


def add(product: str, quantity: int) -> tuple[str, dict[str, Any]]:
    return ("add_to_order", {"product": product, "quantity": quantity})


def price(product: str) -> tuple[str, dict[str, Any]]:
    return ("get_product_info", {"product": product})


def phone(number: str) -> tuple[str, dict[str, Any]]:
    return ("set_phone", {"phone": number})


def address(text: str) -> tuple[str, dict[str, Any]]:
    return ("set_address", {"address": text})


ORDER: tuple[str, ...] = ()
ITEMS = ("two pizzas and one salad",)
ITEMS_ICE = ("two pizzas and one ice cream",)
PHONE = ("one pizza", "that's all")
ADDRESS = (*PHONE, "555 123 4567")
CONFIRM = (*ADDRESS, "12 Main Street, Springfield")
SUMMARY = ("summarize_order", {})

CASES: list[tuple[tuple[str, ...], str, list[tuple[str, dict[str, Any]]]]] = [
    # Orders: any quantity of any product, several per sentence.
    (ORDER, "Can I get four pizzas and two ice creams?", [add("pizza", 4), add("ice cream", 2)]),
    (ORDER, "three salads and four pizzas", [add("salad", 3), add("pizza", 4)]),
    (ORDER, "Yes, I'd like two pizzas and one salad, please.", [add("pizza", 2), add("salad", 1)]),
    (ORDER, "5 pizzas, 3 salads and 2 ice creams",
     [add("pizza", 5), add("salad", 3), add("ice cream", 2)]),
    (ORDER, "I'd like a pizza", [add("pizza", 1)]),
    (ORDER, "an ice cream please", [add("ice cream", 1)]),
    (ORDER, "And one ice cream.", [add("ice cream", 1)]),
    (ORDER, "twenty pizzas", [add("pizza", 20)]),
    (ORDER, "twenty one salads", [add("salad", 21)]),
    (ORDER, "twenty-two salads", [add("salad", 22)]),
    (ORDER, "12 salads", [add("salad", 12)]),
    (ORDER, "seventeen ice creams", [add("ice cream", 17)]),
    (ORDER, "eleven garden salads", [add("salad", 11)]),
    (ORDER, "two pies and a gelato", [add("pizza", 2), add("ice cream", 1)]),
    (ORDER, "fifteen margheritas", [add("pizza", 15)]),
    (ORDER, "two ice-creams", [add("ice cream", 2)]),
    (ORDER, "SIX PIZZAS", [add("pizza", 6)]),
    (ITEMS, "one more pizza", [add("pizza", 1)]),
    (ITEMS, "and another salad", [add("salad", 1)]),
    (ITEMS, "what's the total", [SUMMARY]),
    (ITEMS, "how much will that be altogether?", [SUMMARY]),
    # Prices of every product, and the menu.
    (ORDER, "Hi! How much is a pizza?", [price("pizza")]),
    (ORDER, "How much is a salad?", [price("salad")]),
    (ORDER, "What does the ice cream cost?", [price("ice cream")]),
    (ORDER, "what's the price of a gelato", [price("ice cream")]),
    (ORDER, "how much are two pizzas", [price("pizza")]),
    (ORDER, "salads, how much are they?", [price("salad")]),
    (ORDER, "what do you have", [("list_products", {})]),
    # Changes and removals.
    (ITEMS, "Actually, make that five pizzas.", [("set_quantity", {"product": "pizza",
                                                                   "quantity": 5})]),
    (ITEMS, "change it to three salads", [("set_quantity", {"product": "salad",
                                                            "quantity": 3})]),
    (ITEMS, "no, just one pizza", [("set_quantity", {"product": "pizza", "quantity": 1})]),
    (ITEMS, "no salad", [("remove_from_order", {"product": "salad"})]),
    (ITEMS, "Remove the salad please", [("remove_from_order", {"product": "salad"})]),
    (ITEMS_ICE, "remove the ice cream", [("remove_from_order", {"product": "ice cream"})]),
    (ITEMS, "remove one pizza", [("remove_from_order", {"product": "pizza", "quantity": 1})]),
    (ITEMS, "take off the pizzas", [("remove_from_order", {"product": "pizza"})]),
    # The read-back.
    (ITEMS, "No, that's all. Can you read it back to me?", [SUMMARY]),
    (ITEMS, "that's it", [SUMMARY]),
    (ORDER, "that's all", [SUMMARY]),  # an empty order: refused, the order is asked for
    (ITEMS, "no", [SUMMARY]),  # "Anything else?" "No."
    (ITEMS, "no nothing all", [SUMMARY]),
    # Phone numbers: words, digits, oh, double, triple, groups, a country code.
    (PHONE, "It's five five five, one two three, four five six seven.", [phone("5551234567")]),
    (PHONE, "555 123 4567", [phone("5551234567")]),
    (PHONE, "(555) 987-6543", [phone("5559876543")]),
    (PHONE, "five five five, oh one two, double three four five", [phone("5550123345")]),
    (PHONE, "triple five, one two three, four five six seven", [phone("5551234567")]),
    (PHONE, "plus four four two oh seven nine four six oh nine five eight",
     [phone("+442079460958")]),
    (PHONE, "one five five five nine eight seven six five four three", [phone("15559876543")]),
    (ORDER, "my phone number is 555 123 4567", [phone("5551234567")]),
    # Addresses, with number words.
    (ADDRESS, "forty two oak avenue riverside", [address("forty two oak avenue riverside")]),
    (ADDRESS, "Deliver it to 12 Main Street, Springfield.",
     [address("12 Main Street, Springfield")]),
    (ADDRESS, "Twelve Main Street, Springfield.", [address("Twelve Main Street, Springfield")]),
    (ADDRESS, "my address is one hundred and five high street leeds",
     [address("one hundred and five high street leeds")]),
    (ORDER, "deliver to 42 Oak Avenue, Riverside", [address("42 Oak Avenue, Riverside")]),
    # A phone correction when the address is asked for is a phone number.
    (ADDRESS, "No, my number is five five five, one two three, four five six seven.",
     [phone("5551234567")]),
    (ADDRESS, "no the phone number is 555 987 6543", [phone("5559876543")]),
    # Confirm or decline.
    (CONFIRM, "Yes, please place the order.", [("place_order", {})]),
    (CONFIRM, "yes", [("place_order", {})]),
    (CONFIRM, "no, wait", []),
    (CONFIRM, "no, remove the pizza", [("remove_from_order", {"product": "pizza"})]),
    (CONFIRM, "goodbye", []),
    # Nothing understood: nothing called.
    (ORDER, "blah blah blah", []),
    (ORDER, "what's the weather in Paris", []),
    (ORDER, "pizza", []),  # no quantity: the agent asks how many
    (PHONE, "five five double", []),  # a number that cannot be read: asked again
    (CONFIRM, "hmm", []),
    # The whole sentence must be understood: a part is never acted on alone.
    (ORDER, "three salads, no, two salads", [add("salad", 2)]),
    (ORDER, "four pizzas, sorry, three pizzas", [add("pizza", 3)]),
    (ORDER, "minus two salads", []),
    (ITEMS, "a pizza and no salad", []),
    (ORDER, "two pastas and a pizza", []),
    (ITEMS, "no wait, make it three", []),
    (ITEMS, "two pizzas wait two salads", [add("salad", 2)]),
    (ORDER, "take two pizzas off", []),
    (ADDRESS, "12 Main Street, Springfield, but deliver to my office at 9 elm street", []),
    (PHONE, "555 123 4567 or 555 987 6543", []),
    (PHONE, "five five five one two three four five six seven, no, five five five nine eight "
     "seven six five four three", []),
    (PHONE, "555 123 4567 and my name is Bob", []),
]


@pytest.mark.parametrize(("before", "said", "calls"), CASES,
                         ids=[f"{i:02d}-{case[1][:40]}" for i, case in enumerate(CASES)])
def test_each_typed_line_makes_the_calls_it_asks_for(
    before: tuple[str, ...], said: str, calls: list[tuple[str, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    call = TypedCall(tmp_path)
    for line in before:
        assert call.say(line), f"{line!r} made no call"
    assert call.say(said) == calls
    if not calls:
        assert call.replies[-1].startswith(("Sorry", "How many", "No problem", "Goodbye"))


@pytest.mark.parametrize(("before", "said", "named"), [
    (ORDER, "two pastas and a pizza", '"two pastas"'),
    (ORDER, "minus two salads", '"minus"'),
    (ITEMS, "a pizza and no salad", '"pizza"'),
    (PHONE, "555 123 4567 and my name is Bob", '"name is Bob"'),
])
def test_what_was_not_understood_is_named_and_nothing_changes(
    before: tuple[str, ...], said: str, named: str, tmp_path: Path,
) -> None:
    call = TypedCall(tmp_path)
    for line in before:
        call.say(line)
    order = [(line.name, line.quantity) for line in call.userdata["order"].lines]
    state = call.state
    assert call.say(said) == []
    assert f"didn't understand {named}" in call.replies[-1], call.replies[-1]
    assert [(line.name, line.quantity) for line in call.userdata["order"].lines] == order
    assert call.state == state


def test_a_change_with_no_product_asks_which(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    call.say("two pizzas and one salad")
    assert call.say("no wait, make it three") == []
    assert call.replies[-1].startswith("Sorry, 3 of which?") and call.state == "order"
    assert call.say("make that three salads") == [("set_quantity", {"product": "salad",
                                                                     "quantity": 3})]


def test_a_second_address_or_number_in_one_sentence_is_asked_about(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in ADDRESS:
        call.say(line)
    assert call.say("12 Main Street, Springfield, but deliver to my office at 9 elm street") == []
    assert "which address" in call.replies[-1] and call.userdata["order"].address is None
    call = TypedCall(tmp_path)
    for line in PHONE:
        call.say(line)
    assert call.say("555 123 4567 or 555 987 6543") == []
    assert "two numbers" in call.replies[-1] and call.userdata["order"].phone == ""
    assert call.state == "phone"


def test_enough_cases() -> None:
    assert len(CASES) >= 40


def test_a_short_phone_number_is_refused_and_asked_again(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in PHONE:
        call.say(line)
    assert call.state == "phone" and call.session.dialogue.expect == "digits"
    assert call.say("five five five one two three four") == [phone("5551234")]
    assert "3 are missing" in call.replies[-1] and "again" in call.replies[-1]
    assert call.state == "phone" and call.userdata["order"].phone == ""
    assert call.say("five five five one two three four five six seven") == [phone("5551234567")]
    assert call.state == "address" and call.userdata["order"].phone == "5551234567"


def test_an_empty_order_is_not_read_back_as_one(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    assert call.say("that's all, read it back") == [SUMMARY]
    assert call.replies[-1] == ("The order is empty: nothing has been ordered yet. What would you"
                                " like to order?")
    assert call.state == "order"


def test_placing_without_a_phone_number_asks_for_it_and_takes_it(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    call.say("two salads")
    call.say("that's all")
    call.say("five five five")  # too short: refused, still no phone
    call.say("deliver to 42 Oak Avenue, Riverside")
    assert call.state == "confirm"
    assert call.say("yes") == [("place_order", {})]
    assert "it has no phone number" in call.replies[-1] and "placed" not in call.userdata
    assert call.say("555 987 6543") == [phone("5559876543")]
    assert call.say("yes") == [("place_order", {})]
    placed = call.userdata["placed"]
    assert (placed.phone, placed.address) == ("5559876543", "42 Oak Avenue, Riverside")


def test_what_the_shop_cannot_do_is_said_and_nothing_changes(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    assert call.say("sixty pizzas") == [add("pizza", 60)]
    assert call.replies[-1] == "Sorry, we only have 50 pizzas in stock. Anything else?"
    assert call.say("remove the salad") == [("remove_from_order", {"product": "salad"})]
    assert call.replies[-1].startswith("The order has no salad")
    assert call.userdata["order"].lines == [] and call.state == "order"


def test_a_line_with_no_number_is_not_taken_for_one(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in PHONE:
        call.say(line)
    assert call.say("I don't remember it") == []
    assert call.replies[-1].startswith("Sorry, I didn't catch the whole number")
    assert call.state == "phone"


def test_a_spoken_address_is_stored_in_digits_and_capitals(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in ADDRESS:
        call.say(line)
    call.say("forty two oak avenue riverside")
    assert call.userdata["order"].address.one_line() == "42 Oak Avenue, Riverside"
    assert call.state == "confirm"


def test_an_address_with_no_house_number_is_asked_again(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in ADDRESS:
        call.say(line)
    assert call.say("Main Street") == [address("Main Street")]
    assert "house number" in call.replies[-1] and call.state == "address"
    assert call.userdata["order"].address is None


def test_declining_asks_what_to_change_then_confirms_again(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    for line in CONFIRM:
        call.say(line)
    assert call.say("no") == []
    assert call.replies[-1] == "No problem. What would you like to change?"
    assert call.state == "change"
    assert call.say("make that three pizzas") == [("set_quantity", {"product": "pizza",
                                                                     "quantity": 3})]
    assert call.say("that's all") == [SUMMARY]
    assert call.state == "confirm"
    assert call.say("yes, place it") == [("place_order", {})]
    placed = call.userdata["placed"]
    assert placed.items_text() == "3 pizzas" and placed.phone == "5551234567"
    assert placed.address == "12 Main Street, Springfield"


def test_the_whole_demo_call_stores_what_the_caller_said(tmp_path: Path) -> None:
    import yaml

    pipeline = yaml.safe_load((ROOT / "pipelines" / "call.yaml").read_text())
    caller = next(stage for stage in pipeline["stages"] if stage["type"] == "caller")
    call = TypedCall(tmp_path)
    for line in caller["lines"]:
        call.say(line if isinstance(line, str) else line["text"])
    placed = call.userdata["placed"]
    assert placed.items_text() == "2 pizzas, 1 salad, 1 ice cream"
    assert (placed.phone, placed.address) == ("5551234567", "12 Main Street, Springfield")
    assert call.replies[-1].endswith("Goodbye!") and call.session.dialogue.ended


def test_several_items_then_changes_end_in_the_order_said(tmp_path: Path) -> None:
    call = TypedCall(tmp_path)
    call.say("Can I get four pizzas and two ice creams?")
    call.say("and three salads")
    call.say("Actually, make that five pizzas.")
    call.say("no ice cream")
    lines = {line.name: line.quantity for line in call.userdata["order"].lines}
    assert lines == {"pizza": 5, "salad": 3}
    assert call.say("what's the total") == [SUMMARY]
    assert call.replies[-1] == "5 pizzas at $10.00 each and 3 salads at $5.00 each. Total $65.00." \
        " Still needed: phone number and delivery address."
    assert call.state == "order"  # asking the total is not the end of the order


def test_the_cascade_model_answers_with_the_same_engine() -> None:
    from pipeflow.cascade.script_llm import ScriptChat

    chat = ScriptChat(SCRIPT)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "shop"}]
    chat.complete(messages)  # the greeting
    messages.append({"role": "user", "content": "three salads and four pizzas"})
    chunks = chat.complete(messages)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
             if c["choices"][0]["delta"].get("tool_calls")]
    names = [c["function"]["name"] for c in calls if "id" in c]
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert names == ["add_to_order", "add_to_order"]
    assert arguments == ('{"product":"salad","quantity":3}{"product":"pizza","quantity":4}')
    messages.append({"role": "user", "content": "blah"})
    chunks = chat.complete(messages)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("Sorry, I didn't catch that")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_gateway_text_route_meets_the_same_agent(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from pipeflow.server import GatewayOptions, create_app

    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB"):
        monkeypatch.delenv(name, raising=False)
    options = GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                             overrides=["model.speed=0", "model.first_audio_delay_ms=0"])
    with TestClient(create_app(ROOT / "pipelines" / "call.yaml", options),
                    base_url="http://127.0.0.1") as client:
        assert client.post("/api/calls/typed-1/start", json={}).status_code == 201

        def ask(text: str) -> dict[str, Any]:
            response = client.post("/api/calls/typed-1/text",
                                   json={"q": text, "wait": True, "timeout_s": 30})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert body["answered"], body
            return body

        reply = ask("Can I get four pizzas and two ice creams?")["reply"]
        assert "4 pizzas at $10.00 each and 2 ice creams at $3.00 each" in reply
        assert ask("Remove the ice cream please")["reply"].startswith("Removed 2 ice creams.")
        assert ask("banana telephone")["reply"].startswith("Sorry, I didn't catch that")
        body = ask("my phone number is 555 987 6543")
        assert "Phone number set to five five five, nine eight seven, six five four three" in (
            body["reply"])


def test_the_recogniser_is_told_what_the_script_expects_next(tmp_path: Path) -> None:
    expected: list[str | None] = []
    words = ["two pizzas", "that's all", "five five five one two three four five six seven",
             "forty two oak avenue riverside", "yes"]

    class Heard:
        def transcribe(self, pcm: bytes, sample_rate: int = 24000, *,
                       expect: str | None = None) -> str:
            expected.append(expect)
            return words.pop(0)

    call = TypedCall(tmp_path, transcriber=Heard())
    call.session.receive_data(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}}), call.now)
    calls = [call.speak() for _ in range(5)]
    assert expected == ["order", "order", "digits", "address", "yesno"]
    assert calls[2] == [phone("5551234567")]
    assert calls[3] == [address("forty two oak avenue riverside")]
    assert call.userdata["placed"].address == "42 Oak Avenue, Riverside"
