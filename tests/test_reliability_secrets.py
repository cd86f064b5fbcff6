"""The API key never leaves the Authorization header: a whole order call with
debug logs on, against a local Realtime server that requires the key, then a
grep of every log line and every file the call wrote (frames, WAV, SQLite)."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeflow.realtime.server import LocalRealtimeServer
from pipeflow.realtime.server_session import ServerOptions
from pipeflow.session import AgentSession

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-proj-test-9f8e7d6c5b4a3210-SECRET"


async def test_the_api_key_appears_in_no_log_and_no_file(tmp_path: Path, caplog,
                                                         monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ORDERLINE_DB", str(tmp_path / "orders.sqlite3"))
    script = ROOT / "pipelines" / "orderline" / "script.yaml"
    async with LocalRealtimeServer(script, speed=0, first_audio_delay_ms=0, api_key=KEY,
                                   options=ServerOptions(speech="tones")) as server:
        session = AgentSession.from_file(
            ROOT / "pipelines" / "call.yaml", session_id="secret-call",
            output_dir=str(tmp_path / "out"), overrides=[f"model.url={server.url}"])
        async with session:
            for line in ("How much is a pizza?", "Two pizzas and one salad, please.",
                         "No, that is all.", "Five five five, one two three, four five six "
                         "seven.", "Twelve Main Street, Springfield.",
                         "Yes, please place the order."):
                await session.ask(line, timeout=30)
        assert session.conversation.transcript()
        assert server.refused == 0  # the key was sent, and right
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files, "the call wrote nothing"
    hits = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert hits == []
    assert KEY not in caplog.text
    assert "sk-proj" not in caplog.text
