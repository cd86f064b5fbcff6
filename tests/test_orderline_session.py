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
