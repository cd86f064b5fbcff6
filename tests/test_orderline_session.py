"""The same order-line call driven from Python through the session API, by text."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from pipeflow.commands.chat import answer
from pipeflow.frames import ToolCall
from pipeflow.registry import registry
from pipeflow.session import AgentSession

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB"):
        monkeypatch.delenv(name, raising=False)


async def test_text_turns_through_the_session_store_the_order(tmp_path: Path) -> None:
    session = AgentSession.from_file(
        ROOT / "pipelines" / "call.yaml",
        overrides=["model.speed=0", "model.first_audio_delay_ms=0"],
        output_dir=str(tmp_path),
        replace_sinks=[registry.resolve("null")(realtime=False)],
    )
    async with session:
        greeting = await session.wait_for("agent_transcript", 20, after=0)
        assert "corner shop" in greeting.text  # type: ignore[attr-defined]
        said = {}
        for line in (
            "How much is a pizza?",
            "I'd like two pizzas and one salad please",
            "and one ice cream",
            "that's all, read it back",
            "my number is 555 123 4567",
            "deliver to 12 Main Street, Springfield",
            "yes, place it",
        ):
            frames = await answer(session, line, timeout=30)
            said[line] = [f.name for f in frames if isinstance(f, ToolCall)]
    assert said["How much is a pizza?"] == ["get_product_info"]
    assert said["I'd like two pizzas and one salad please"] == ["add_to_order", "add_to_order"]
    assert said["yes, place it"] == ["place_order"]
    turns = session.conversation.turns
    assert [t.role for t in turns[:3]] == ["agent", "user", "agent"]
    assert turns[1].source == "text" and turns[1].text == "How much is a pizza?"
    assert "$10.00" in turns[2].text
    assert len(session.conversation.tool_calls) == 8
    assert all(not call.is_error for call in session.conversation.tool_calls)
    placed = session.userdata["placed"]
    assert placed.total == Decimal("28.00")
    rows = sqlite3.connect(tmp_path / "orders.sqlite3").execute(
        "select order_id, total, phone, address from orders"
    ).fetchall()
    assert rows == [(placed.order_id, "28.00", "5551234567", "12 Main Street, Springfield")]


@pytest.mark.parametrize(
    ("said", "tool"),
    [
        ("555 123 4567", "set_phone"),  # typed in digits, no words to match
        ("(555) 987-6543", "set_phone"),
        ("it's five five five one two three four five six seven", "set_phone"),
        ("123 Main Street, Springfield", "set_address"),  # a house number is no phone number
    ],
)
def test_the_script_takes_a_phone_number_in_digits_or_words(said: str, tool: str) -> None:
    from pipeflow.realtime.dialogue import Dialogue
    from pipeflow.realtime.script import load_script

    dialogue = Dialogue(load_script(ROOT / "pipelines" / "orderline" / "script.yaml"))
    dialogue.respond()  # the greeting
    for line in ("how much is a pizza", "one pizza", "that's all"):
        dialogue.hear(line)
        assert dialogue.respond().calls
        dialogue.tool_output('{"ok": true, "message": "done"}')
        dialogue.respond()
    assert dialogue.state == "phone" and dialogue.expect == "digits"
    dialogue.hear(said)
    assert [call.name for call in dialogue.respond().calls] == [tool]


def test_pipeflow_chat_runs_the_call_as_text(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB")}
    env["COLUMNS"] = "200"
    lines = ["How much is a salad?", "Can I get four pizzas and two ice creams?",
             "Actually, make that five pizzas", "Remove the ice cream please", "that's all",
             "555 987 6543", "forty two oak avenue riverside", "yes, place it"]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "chat", "pipelines/call.yaml", "-o", str(tmp_path),
         "--set", "model.speed=0", "--set", "model.first_audio_delay_ms=0"],
        cwd=ROOT, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "agent Hello, and thank you for calling the corner shop!" in out
    assert 'tool get_product_info({"product":"salad"})' in out
    assert 'tool add_to_order({"product":"pizza","quantity":4})' in out
    assert 'tool add_to_order({"product":"ice cream","quantity":2})' in out
    assert 'tool set_quantity({"product":"pizza","quantity":5})' in out
    assert 'tool remove_from_order({"product":"ice cream"})' in out
    assert 'tool set_phone({"phone":"5559876543"})' in out and "tool place_order({})" in out
    assert "total: $50.00" in out
    rows = sqlite3.connect(tmp_path / "orders.sqlite3").execute(
        "select total, phone, address from orders").fetchall()
    assert rows == [("50.00", "5559876543", "42 Oak Avenue, Riverside")]
