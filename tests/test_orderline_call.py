"""The phone order line end to end, offline: `pipeflow run pipelines/call.yaml`.

The simulated caller, the local Realtime server and the sinks run three times
faster than real time here (the demo runs in real time); everything else is
the README's main command.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio.wav import read_wav

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--set", "caller.speed=3", "--set", "model.speed=3", "--set", "wav_sink.realtime=false"]


@pytest.fixture(scope="module")
def call_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("call")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB")
    }
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "run", "pipelines/call.yaml", "-o", str(out), *FAST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    return out, proc


def test_the_call_succeeds_and_prints_a_summary(call_run) -> None:  # type: ignore[no-untyped-def]
    _out, proc = call_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout
    for label in (
        "turns",
        "tool calls",
        "interruptions",
        "turn end -> first audio",
        "order id",
        "total",
        "$28.00",
        "transcript",
        "agent audio",
    ):
        assert label in summary, label
    assert "interruptions           │ 1" in summary or "interruptions │ 1" in summary.replace(
        "  ", " "
    )


def test_the_order_is_stored_in_sqlite(call_run) -> None:  # type: ignore[no-untyped-def]
    out, _ = call_run
    db = sqlite3.connect(out / "orders.sqlite3")
    rows = db.execute("select order_id, total, phone, address, lines from orders").fetchall()
    assert len(rows) == 1
    order_id, total, phone, address, lines = rows[0]
    assert order_id.startswith("ORD-")
    assert Decimal(total) == Decimal("28.00")
    assert phone == "5551234567"
    assert address == "12 Main Street, Springfield"
    items = {
        line["name"]: (line["quantity"], Decimal(line["unit_price"])) for line in json.loads(lines)
    }
    assert items == {
        "pizza": (2, Decimal("10.00")),
        "salad": (1, Decimal("5.00")),
        "ice cream": (1, Decimal("3.00")),
    }


def test_the_transcript_reads_like_the_call(call_run) -> None:  # type: ignore[no-untyped-def]
    out, _ = call_run
    text = (out / "transcript.txt").read_text()
    assert "agent: Hello, and thank you for calling the corner shop!" in text
    # the caller's words as the local server's offline recogniser heard them
    assert "caller: yes i'd like two pizzas and one salad please" in text
    assert "(agent interrupted)" in text
    assert "Total $28.00" in text
    assert "tool call place_order" in text
    assert text.index("caller: hi how much is a pizza") < text.index("Goodbye!")


def test_the_agent_audio_contains_speech(call_run) -> None:  # type: ignore[no-untyped-def]
    out, _ = call_run
    audio = read_wav(out / "agent.wav")
    assert audio.sample_rate == 24000
    samples = audio.samples.astype(np.float64)
    assert samples.size / audio.sample_rate > 20  # seconds of agent speech
    frames = samples[: samples.size // 480 * 480].reshape(-1, 480)
    rms = np.sqrt((frames**2).mean(axis=1))
    voiced = rms > 300
    assert voiced.mean() > 0.5  # mostly speech, not silence or noise
    # speech has syllable-rate energy changes, not a steady tone
    assert np.std(20 * np.log10(rms[voiced] + 1)) > 2


def test_the_frame_log_replays(call_run) -> None:  # type: ignore[no-untyped-def]
    from pipeflow.frames import decode_json

    out, _ = call_run
    kinds = set()
    with (out / "frames.jsonl").open() as fh:
        for line in fh:
            record = json.loads(line)
            frame = decode_json(json.dumps(record["frame"]))
            kinds.add(type(frame).__name__)
    assert {"AudioFrame", "ToolCall", "ToolResult", "Transcript", "Interrupt"} <= kinds
