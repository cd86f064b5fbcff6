"""The worker against a wrong queue URL and against being killed mid-job.

A worker pointed at a port that speaks HTTP died with an uncaught
``redis.exceptions`` error; a job reclaimed after its worker was SIGKILLed
ran again into the same folder and overwrote the first run's recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeflow.cli import main
from pipeflow.job import JobContext
from pipeflow.worker import Job, WorkerOptions
from pipeflow.worker.pool import Pool
from pipeflow.worker.queues import redis as redis_queue
from pipeflow.worker.queues.memory import MemoryQueue


@contextlib.contextmanager
def fake_server(answer: bytes) -> Iterator[int]:
    """A TCP port that reads a request, writes ``answer`` and keeps the connection open."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                held.append(conn)
                conn.recv(4096)
                if answer:
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_worker_pointed_at_an_http_port_says_so(capsys) -> None:
    http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with fake_server(http) as port:
        code = main(["worker", "--entry", "tests.worker_jobs:echo", "--no-pool",
                     "--health-port", "0", "--queue", f"redis://127.0.0.1:{port}/0"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 1
    assert "does not speak the Redis protocol" in err and "check the queue URL" in err
    assert "Traceback" not in err


def test_a_worker_pointed_at_a_silent_port_gives_up_clearly(capsys, monkeypatch) -> None:
    monkeypatch.setattr(redis_queue, "CONNECT_TIMEOUT_S", 0.5)
    with fake_server(b"") as port:
        began = time.monotonic()
        code = main(["worker", "--entry", "tests.worker_jobs:echo", "--no-pool",
                     "--health-port", "0", "--queue", f"redis://127.0.0.1:{port}/0"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 1 and time.monotonic() - began < 10
    assert "no answer from Redis" in err and "Traceback" not in err


def test_each_attempt_gets_its_own_output_folder(tmp_path: Path) -> None:
    assert JobContext("j1").output_folder(tmp_path) == tmp_path / "j1"
    assert JobContext("j1", info={"attempt": 2}).output_folder(tmp_path) == (
        tmp_path / "j1.attempt-2")
    (tmp_path / "j1.attempt-2").mkdir()
    (tmp_path / "j1.attempt-2" / "frames.jsonl").write_text("{}\n")
    (tmp_path / "j1").mkdir()  # an empty folder is free
    assert JobContext("j1").output_folder(tmp_path) == tmp_path / "j1"
    assert JobContext("j1", info={"attempt": 2}).output_folder(tmp_path) == (
        tmp_path / "j1.attempt-3")


TONE = """\
name: tone-recording
output_dir: {out}
stages:
  - type: tone
    duration_ms: 4000
  - type: jsonl
    path: frames.jsonl
"""


async def test_a_reclaimed_job_never_overwrites_the_first_runs_folder(tmp_path: Path) -> None:
    pipeline = tmp_path / "tone.yaml"
    out = tmp_path / "out"
    pipeline.write_text(TONE.format(out=out))
    options = WorkerOptions(processes=1, max_jobs=2, entry="tests.worker_jobs:tone_recording",
                            lag_threshold=0.5, lag_grace=0.5, lag_kill=10.0, health_port=None,
                            drain_timeout=2.0)
    pool = Pool(options, report_interval=0.1)
    queue = pool.queue
    assert isinstance(queue, MemoryQueue)
    runner = asyncio.ensure_future(pool.run())
    try:
        async with asyncio.timeout(90):
            while not (pool.children and all(c.ready for c in pool.children.values())):
                await asyncio.sleep(0.05)
            job = await queue.submit(Job(key="tone-1", params={"pipeline": str(pipeline)}))
            first = out / job.id / "frames.jsonl"
            while not (first.exists() and first.stat().st_size > 0):
                await asyncio.sleep(0.05)
            (child,) = pool.children.values()
            os.kill(child.pid, signal.SIGKILL)
            kept = first.read_bytes()
            while (status := await queue.status(job.id)) is None or not status.final:
                await asyncio.sleep(0.1)
    finally:
        pool.stop("test over")
        await asyncio.wait_for(runner, 30)
        await queue.close()
    attempt = status.result["attempt"]  # 2, or 3 when the hand-back counted one
    assert status.state == "completed" and status.attempts == attempt >= 2
    assert status.result["ok"]
    assert first.read_bytes() == kept  # the first run's recording, as it was when it died
    rerun = out / f"{job.id}.attempt-{attempt}" / "frames.jsonl"
    lines = rerun.read_text().splitlines()
    assert json.loads(lines[-1])["frame"]["type"] == "end_of_stream"
    assert sorted(p.name for p in out.iterdir()) == sorted([job.id, rerun.parent.name])


@pytest.fixture(autouse=True)
def _no_redis_env(monkeypatch) -> None:
    monkeypatch.delenv("PIPEFLOW_QUEUE_URL", raising=False)
