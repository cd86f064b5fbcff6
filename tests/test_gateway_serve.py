"""``pipeflow serve``: the command line, and a real gateway process."""

from __future__ import annotations

import json
import os
import signal
import socket
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


TOKEN = "tok-5e1f9c"


def start_gateway(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``pipeflow serve`` in a process of its own on 127.0.0.1, once it listens."""
    port = free_port()
    env = {**os.environ, "PIPEFLOW_GATEWAY_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "serve", str(LIGHT), "--port", str(port),
         "--output", str(tmp_path), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for the process to listen (bounded)
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the gateway did not start: {process.communicate()[0]}")
        time.sleep(0.1)


def test_serve_runs_a_gateway_and_records_calls_on_shutdown(tmp_path: Path) -> None:
    process, base = start_gateway(tmp_path)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{base}/api/calls/cli-1/start").status_code == 401
        assert httpx.post(f"{base}/api/calls/cli-1/start", headers=auth).status_code == 201
        assert httpx.post(f"{base}/api/calls/cli-1/text", headers=auth,
                          json={"q": "hello"}).status_code == 202
        assert httpx.get(f"{base}/api/calls/cli-1?token={TOKEN}").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "/api/calls/cli-1?token=***" in output  # the access log line, token hidden
    assert TOKEN not in output
    record = json.loads((tmp_path / "cli-1" / "call.json").read_text())
    assert record["end_reason"] == "shutdown" and record["transcript"] == "user: hello"


def test_sigterm_with_event_streams_open_ends_and_records_every_call(tmp_path: Path) -> None:
    """An event stream lasts as long as its call: shutdown must end the calls first."""
    process, base = start_gateway(tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    streams = []
    try:
        for call_id in ("sse-1", "sse-2"):
            assert httpx.post(f"{base}/api/calls/{call_id}/start",
                              headers=auth).status_code == 201
            sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            sock.sendall(f"GET /api/calls/{call_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
            sock.settimeout(10)
            seen = b""
            while b"event: call" not in seen:  # subscribed
                chunk = sock.recv(4096)
                assert chunk, seen
                seen += chunk
            streams.append(sock)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for sock in streams:
            sock.close()
    assert process.returncode in (0, -signal.SIGTERM), output
    assert took < 10 + 5, output  # within close_timeout_s and the graceful backstop
    for call_id in ("sse-1", "sse-2"):
        record = json.loads((tmp_path / call_id / "call.json").read_text())
        assert record["end_reason"] == "shutdown"


def test_sigkill_leaves_each_live_calls_record_as_of_its_last_turn(tmp_path: Path) -> None:
    """No process can write after SIGKILL: a live call's ``call.json`` is written when
    it starts and after each turn, so the kill loses at most the last moment (before,
    a killed gateway left no record of its live calls at all)."""
    process, base = start_gateway(tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    path = tmp_path / "kill-1" / "call.json"
    try:
        assert httpx.post(f"{base}/api/calls/kill-1/start", headers=auth).status_code == 201
        assert json.loads(path.read_text())["state"] == "active"  # written as it started
        for line in ("hello", "two pizzas please"):
            assert httpx.post(f"{base}/api/calls/kill-1/text", headers=auth,
                              json={"q": line}).status_code == 202
            deadline = time.monotonic() + 10  # one record_interval_s (1 s) and a margin
            while line not in (record := json.loads(path.read_text()))["transcript"]:
                assert time.monotonic() < deadline, record
                time.sleep(0.05)
    finally:
        process.kill()
        process.communicate(timeout=30)
    record = json.loads(path.read_text())
    assert record["state"] == "active" and record["ended_at"] is None
    assert record["transcript"] == "user: hello\nuser: two pizzas please"
    assert time.time() - 60 < record["updated_at"] <= time.time()
    assert not (tmp_path / "kill-1" / "call.json.partial").exists()


def _connect(base: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    sock.settimeout(15)
    return sock


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the gateway closes ``sock`` (reading what it sends first)."""
    started = time.monotonic()
    while sock.recv(4096):
        pass
    sock.close()
    return time.monotonic() - started


def test_half_sent_requests_are_closed_and_aborted_uploads_log_one_line(
    tmp_path: Path,
) -> None:
    """A client that sends half a request and stops does not keep its connection."""
    process, base = start_gateway(tmp_path, "--request-timeout", "1")
    head = b"POST /api/calls/x/text HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    full_head = (head + b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: "
                 b"application/json\r\nContent-Length: 100\r\n\r\n")
    try:
        silent = _connect(base)  # connects, sends nothing
        half_head = _connect(base)
        half_head.sendall(head + b"X-Slow: ")
        half_body = _connect(base)
        half_body.sendall(full_head + b'{"q": ')
        took = [_closed_after(sock) for sock in (silent, half_head, half_body)]
        aborted = _connect(base)
        aborted.sendall(full_head + b'{"q": ')
        time.sleep(0.2)
        aborted.close()
        time.sleep(0.5)
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert max(took) < 5, took
    assert "Traceback" not in output, output
    assert output.count("went away during POST /api/calls/x/text") == 2, output
