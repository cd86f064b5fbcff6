"""The gateway against many connections, no descriptors left and many calls.

2,000 half-sent requests stayed open past 90 s; 20,000 exhausted the
descriptors and asyncio logged a traceback per backlog slot per second
(284 MB); memory grew over 500 sequential calls. Each test reproduces one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pipeflow.commands.serve import build_server
from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.guard import ThrottleResourceErrors
from pipeflow.worker.process import rss_bytes
from tests.gateway_util import CALL_YAML, FAST, free_port

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ROOT / "tests" / "data" / "gateway" / "light.yaml"
HALF_SENT = 2000


async def serve_in_loop(app, options: GatewayOptions):
    server = build_server(app, options, log_level="warning")
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway stopped before it started"
        await asyncio.sleep(0.01)
    return server, task


async def test_half_sent_requests_are_dropped_at_the_deadline(tmp_path: Path) -> None:
    port = free_port()
    options = GatewayOptions(no_auth=True, port=port, output_dir=str(tmp_path),
                             request_timeout_s=1.0, max_connections=HALF_SENT + 100)
    server, task = await serve_in_loop(create_app(LIGHT, options), options)
    try:
        streams = []
        for i in range(HALF_SENT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /api/calls/x/text HTTP/1.1\r\nHost: 127.0" if i % 2 else
                         b"POST /api/calls/x/text HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"q")
            streams.append((reader, writer))
        opened = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200  # served meanwhile

        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                async with asyncio.timeout(10):
                    while await reader.read(65536):
                        pass
            except (TimeoutError, ConnectionError):
                return False
            return True

        results = await asyncio.gather(*(closed(r) for r, _ in streams))
        took = time.monotonic() - opened
        for _, writer in streams:
            writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert all(results), f"{results.count(False)} of {HALF_SENT} half-sent requests still open"
    assert took < 8.0, f"closing {HALF_SENT} half-sent requests took {took:.1f} s"


def test_connections_past_the_limit_get_503_at_once(tmp_path: Path) -> None:
    async def run() -> tuple[list[bytes], int]:
        port = free_port()
        options = GatewayOptions(no_auth=True, port=port, output_dir=str(tmp_path),
                                 max_connections=20)
        server, task = await serve_in_loop(create_app(LIGHT, options), options)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
            await asyncio.sleep(0.2)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(5):
                answer = await reader.read()
            writer.close()
            for _, w in held:
                w.close()
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                status = (await client.get("/healthz")).status_code
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
        return [answer], status

    [answer], status = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
    assert status == 200  # served again once the others closed


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))


def test_out_of_descriptors_logs_one_line_not_a_flood(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeflow.cli", "serve", str(LIGHT), "--no-auth", "--port",
             str(port), "-o", str(tmp_path / "out")], stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_low_fd_limit, cwd=ROOT)
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(600):  # twice the process's descriptors
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.send(b"GET /healthz HTTP/1.1\r\nHo")
            socks.append(sock)
        time.sleep(3)
        for sock in socks:
            sock.close()
        time.sleep(1.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.send(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            answer = sock.recv(100)
    finally:
        proc.terminate()
        proc.wait(20)
    text = log_path.read_text()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert len(text) < 20_000, f"{len(text)} bytes of log"
    assert "Traceback" not in text
    assert text.count("too many open files") <= 2


def test_the_throttle_passes_one_record_per_interval() -> None:
    throttle = ThrottleResourceErrors(interval_s=60)
    exc = OSError(24, "Too many open files")
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                 "socket.accept() out of system resource", None,
                                 (OSError, exc, None)) for _ in range(1000)]
    passed = [r for r in records if throttle.filter(r)]
    assert len(passed) == 1 and passed[0].exc_info is None
    assert "too many open files" in passed[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert throttle.filter(other)


CALLS = int(os.environ.get("PIPEFLOW_MEMORY_CALLS", "150"))
WARM_UP = 50


async def test_gateway_memory_levels_off_over_sequential_calls(tmp_path: Path, capsys) -> None:
    from tests.gateway_util import serving

    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                                                overrides=FAST))
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        before: tuple[int, int, int] = (0, 0, 0)
        for i in range(CALLS):
            call = f"seq-{i}"
            assert (await client.post(f"/api/calls/{call}/start")).status_code == 201
            answer = await client.post(f"/api/calls/{call}/text",
                                       json={"q": "How much is a pizza?", "wait": True})
            assert answer.status_code == 200 and "$10.00" in answer.json()["reply"]
            assert (await client.post(f"/api/calls/{call}/end")).status_code == 200
            if i == WARM_UP - 1:
                gc.collect()
                before = (rss_bytes(), len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd")))
        gc.collect()
        after = (rss_bytes(), len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd")))
        full = (await client.get(f"/api/calls/seq-{CALLS - 1}")).json()
    growth = (after[0] - before[0]) / 1e6
    with capsys.disabled():
        print(f"\n{CALLS} sequential gateway calls: RSS {before[0] / 1e6:.1f} -> "
              f"{after[0] / 1e6:.1f} MB after {WARM_UP} warm-up ({growth:+.2f} MB), tasks "
              f"{before[1]} -> {after[1]}, fds {before[2]} -> {after[2]}")
    assert full["transcript"] and full["tool_calls"]  # the record is read back whole
    assert after[1] <= before[1] and after[2] <= before[2]
    assert growth < 5.0


async def test_the_gateways_model_server_takes_only_the_gateways_calls(tmp_path: Path) -> None:
    """Its loopback port needs the key the gateway made: no other local process gets in."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tests.gateway_util import serving

    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                                                overrides=FAST))
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        [server] = app.state.calls.models.servers
        try:
            async with connect(server.url):
                raise AssertionError("a keyless connection was let in")
        except InvalidStatus as exc:
            assert exc.response.status_code == 401
        assert (await client.post("/api/calls/k1/start")).status_code == 201
        answer = await client.post("/api/calls/k1/text",
                                   json={"q": "How much is a pizza?", "wait": True})
        assert "$10.00" in answer.json()["reply"]
        record = (await client.post("/api/calls/k1/end")).json()
    assert server.api_key not in str(record)
