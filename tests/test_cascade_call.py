"""The order-line call through the cascade, offline: `pipeflow run pipelines/call-cascade.yaml`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--set", "caller.speed=3", "--set", "wav_sink.realtime=false",
        # The caller's waits count its own (3x) stream time: 120 s is 40 s of wall
        # clock for the greeting, 30 s for an answer, so a loaded machine's slow
        # start is heard out rather than talked over.
        "--set", "caller.wait_for_greeting_s=120", "--set", "caller.max_wait_s=90"]


@pytest.fixture(scope="module")
def cascade_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("cascade-call")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB")}
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "run", "pipelines/call-cascade.yaml", "-o",
         str(out), *FAST],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    return out, proc


def test_the_cascade_call_stores_the_same_order(cascade_run) -> None:  # type: ignore[no-untyped-def]
    out, proc = cascade_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = sqlite3.connect(out / "orders.sqlite3").execute(
        "select total, phone, address, lines from orders").fetchall()
    assert len(rows) == 1
    total, phone, address, lines = rows[0]
    assert Decimal(total) == Decimal("28.00")
    assert phone == "5551234567" and address == "12 Main Street, Springfield"
    items = {line["name"]: line["quantity"] for line in json.loads(lines)}
    assert items == {"pizza": 2, "salad": 1, "ice cream": 1}


def test_the_cascade_transcript_reads_like_the_call(cascade_run) -> None:  # type: ignore[no-untyped-def]
    out, _ = cascade_run
    text = (out / "transcript.txt").read_text()
    assert "agent: Hello, and thank you for calling the corner shop!" in text
    assert "caller: hi how much is a pizza" in text  # heard by the cascade's pocketsphinx
    assert "tool call get_product_info" in text
    assert "tool call place_order" in text
    assert text.index("caller: hi how much is a pizza") < text.index("Goodbye!")
