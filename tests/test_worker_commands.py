"""``pipeflow start`` and ``pipeflow dev`` as processes; development reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeflow.worker import Worker, WorkerOptions
from pipeflow.worker.queues.memory import MemoryQueue
from pipeflow.worker.reload import reload_changed

ROOT = Path(__file__).resolve().parents[1]


def run_until_started(*argv: str) -> tuple[int, list[str]]:
    """Start a worker command, wait for its 'started' log line, SIGTERM it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEFLOW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", *argv, "--health-port", "0",
         "--entry", "tests.worker_jobs:echo"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # blocks on the pipe, no sleeping
            lines.append(line.rstrip("\n"))
            if "started (" in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stderr.read().splitlines()
        return proc.wait(timeout=20), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_start_logs_json_lines_and_drains_on_sigterm() -> None:
    code, lines = run_until_started("start", "--log-level", "info")
    assert code == 0, lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert any("health server at http://127.0.0.1:" in m for m in messages)
    assert any("draining: received SIGTERM" in m for m in messages)
    assert all({"time", "level", "logger"} <= e.keys() for e in entries)


def test_dev_logs_debug_text() -> None:
    code, lines = run_until_started("dev", "--watch", str(ROOT / "tests"))
    assert code == 0, lines
    assert any(" INFO pipeflow.worker: worker " in line for line in lines)
    assert any(" DEBUG " in line for line in lines)


def test_reload_picks_up_an_edited_entry_point(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    module = tmp_path / "reload_me_job.py"
    module.write_text("async def entry(ctx):\n    return 'old'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = Worker(WorkerOptions(entry="reload_me_job:entry"), MemoryQueue())
    first = worker.entry_for("")
    module.write_text(textwrap.dedent("""\
        async def entry(ctx):
            return 'new'
    """))
    assert reload_changed([module], worker) == ["reload_me_job"]
    second = worker.entry_for("")
    assert first is not second and second.__code__.co_consts[-1] == "new"
    module.write_text("def entry(:\n")  # a save mid-edit: logged, the old code stays
    assert reload_changed([module], worker) == []
    assert worker.entry_for("").__code__.co_consts[-1] == "new"
