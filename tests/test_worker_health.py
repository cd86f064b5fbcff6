"""The health server over a real socket, and ``pipeflow health`` against it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from pipeflow.cli import main
from pipeflow.errors import ConfigError
from pipeflow.job import JobContext
from pipeflow.worker import Job, Worker, WorkerOptions
from pipeflow.worker.health import HealthServer
from pipeflow.worker.logs import JsonFormatter
from pipeflow.worker.queues.memory import MemoryQueue


async def test_healthz_readyz_and_metrics_follow_the_worker() -> None:
    queue = MemoryQueue()
    release = asyncio.Event()
    started = asyncio.Event()

    async def entry(ctx: JobContext) -> str:
        ctx.observe_latency("frame_lateness", 0.004)
        started.set()
        await release.wait()
        return "ok"

    worker = Worker(WorkerOptions(max_jobs=1), queue, entry=entry, poll_interval=0.05)
    async with HealthServer(worker, port=0) as server, httpx.AsyncClient(
        base_url=server.url
    ) as client:
        assert server.port > 0
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "worker has not started"
        # Not until_idle: on a loaded machine the worker could find the queue
        # empty before the job below is submitted, stop, and leave it untaken.
        runner = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0)
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["load"] == 0
        await queue.submit(Job())
        await started.wait()
        busy = await client.get("/readyz")
        assert busy.status_code == 503
        body = busy.json()
        assert (body["running"], body["max_jobs"], body["load"]) == (1, 1, 1.0)
        assert (await client.get("/healthz")).status_code == 200
        release.set()
        while worker.counts.get("completed", 0) < 1:
            await asyncio.sleep(0.01)
        worker.stop("test over")
        await asyncio.wait_for(runner, 10)
        metrics = (await client.get("/metrics")).text
        assert 'pipeflow_jobs_completed_total{agent="agent"} 1.0' in metrics
        assert 'pipeflow_jobs_running{agent="agent"} 0.0' in metrics
        assert 'pipeflow_job_duration_seconds_count{agent="agent"} 1.0' in metrics
        assert (
            'pipeflow_frame_latency_seconds_bucket{agent="agent",le="0.005",name="frame_lateness"}'
            ' 1.0' in metrics
        )
        assert "pipeflow_queue_lag_jobs" in metrics
        stopped = await client.get("/healthz")
        assert stopped.status_code == 503 and stopped.json()["status"] == "stopped"


async def test_a_busy_port_is_a_config_error() -> None:
    worker = Worker(WorkerOptions(), MemoryQueue())
    async with HealthServer(worker, port=0) as first:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            await HealthServer(worker, port=first.port).start()


async def _health_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, ["health", *argv])


async def test_health_command_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    worker = Worker(WorkerOptions(max_jobs=2), MemoryQueue(), poll_interval=0.05)
    async with HealthServer(worker, port=0) as server:
        assert await _health_cli("--url", server.url) == 1
        assert "unhealthy: worker has not started" in capsys.readouterr().out
        assert await _health_cli("--url", server.url, "--live") == 0
        runner = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0)
        assert await _health_cli("--url", server.url) == 0
        assert "healthy: accepting jobs (load 0.0, 0/2 jobs)" in capsys.readouterr().out
        worker.stop()
        await runner
        port = server.port
    assert await _health_cli("--url", f"http://127.0.0.1:{port}", "--timeout", "1") == 1
    assert f"unhealthy: no answer from http://127.0.0.1:{port}/readyz" in capsys.readouterr().out


def test_json_log_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("pipeflow.job", logging.INFO, __file__, 1, "job %s", ("a",), None)
    record.job_id = "a"
    try:
        raise ValueError("inside")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "job a" and entry["job_id"] == "a" and entry["level"] == "info"
    assert "ValueError: inside" in entry["exc_info"]


def test_health_command_reads_the_port_from_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("health_port: null\n")
    assert main(["health", "--config", str(config)]) == 2
    assert "turn the health server off" in capsys.readouterr().err
