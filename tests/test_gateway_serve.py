"""``pipeflow serve``: the command line, and a real gateway process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pipeflow.cli import main
from tests.gateway_util import ROOT, free_port

LIGHT = Path(__file__).parent / "data" / "gateway" / "light.yaml"


def test_bad_options_are_one_clear_error(capsys) -> None:
    assert main(["serve", str(LIGHT), "--max-calls", "0"]) == 2
    assert "max_calls" in capsys.readouterr().err
    assert main(["serve", str(LIGHT), "--public-url", "example.com"]) == 2
    assert "public_url" in capsys.readouterr().err
    assert main(["serve", "missing.yaml", "--no-auth"]) == 2
    assert "pipeline file not found" in capsys.readouterr().err


def test_serve_runs_a_gateway_and_records_calls_on_shutdown(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PIPEFLOW_GATEWAY_TOKEN": "tok"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "serve", str(LIGHT), "--port", str(port),
         "--output", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the process to listen (bounded)
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the gateway did not start in 30 s"
            time.sleep(0.1)
        auth = {"Authorization": "Bearer tok"}
        assert httpx.post(f"{base}/api/calls/cli-1/start").status_code == 401
        assert httpx.post(f"{base}/api/calls/cli-1/start", headers=auth).status_code == 201
        assert httpx.post(f"{base}/api/calls/cli-1/text", headers=auth,
                          json={"q": "hello"}).status_code == 202
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    record = json.loads((tmp_path / "cli-1" / "call.json").read_text())
    assert record["end_reason"] == "shutdown" and record["transcript"] == "user: hello"
