"""Several worker processes against the real Redis: death, reclaim, drain, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipeflow.cli import main
from pipeflow.worker import Job, Worker, WorkerOptions
from pipeflow.worker.queues.redis import GROUP, RedisQueue
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def queue() -> AsyncIterator[RedisQueue]:
    require_service("Redis", "127.0.0.1", 6379)
    q = RedisQueue(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:10]}", visibility_timeout=1.0)
    await q._ensure_group()
    try:
        yield q
    finally:
        await q.delete_all()
        await q.redis.delete(f"{q.base}:runs")
        await q.close()


def start_worker(queue: RedisQueue, *flags: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEFLOW_")}
    prefix = queue.base.rsplit(":", 1)[0]
    return subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "worker", "--queue", REDIS_URL,
         "--queue-prefix", prefix, "--visibility-timeout", "2", "--health-port", "off",
         "--log-level", "error", *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (other processes give no event to wait on) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def consumers(queue: RedisQueue) -> list[dict[str, Any]]:
    return await queue.redis.xinfo_consumers(queue.stream, GROUP)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def test_a_killed_worker_loses_nothing_and_no_job_completes_twice(
    queue: RedisQueue,
) -> None:
    # One process per worker (no pool), so the test can kill the very process holding jobs.
    record_flags = ("--entry", "tests.worker_jobs:record", "--max-jobs", "10", "--no-pool")
    procs = [start_worker(queue, *record_flags) for _ in range(3)]
    try:
        await until(lambda: _count_consumers(queue, 3), 30, "three workers to connect")
        ns = queue.base
        key_of: dict[str, str] = {}
        for i in range(500):
            job = await queue.submit(
                Job(key=f"k{i}", params={"redis": REDIS_URL, "ns": ns, "sleep": 0.1})
            )
            key_of[job.id] = job.key
        victim = procs[0]

        async def victim_mid_job() -> bool:
            running = int(await queue.redis.get(f"{ns}:running:{victim.pid}") or 0)
            return running > 0 and await queue.redis.hlen(f"{ns}:runs") >= 100

        await until(victim_mid_job, 30, "the victim to be mid-job")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        name = next(c["name"].decode() for c in await consumers(queue)
                    if f"-{victim.pid}-" in c["name"].decode())
        orphans = await queue.redis.xpending_range(
            queue.stream, GROUP, min="-", max="+", count=100, consumername=name
        )
        assert orphans, "the victim held no job when it was killed"

        async def all_done() -> bool:
            stats = await queue.stats()
            return await queue.redis.hlen(f"{ns}:runs") == 500 and stats.waiting == 0 and (
                stats.running == 0
            )

        await until(all_done, 45, "every job to complete")
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        stop(procs)

    runs = {k.decode(): int(v) for k, v in (await queue.redis.hgetall(f"{ns}:runs")).items()}
    assert len(runs) == 500 and set(runs.values()) <= {1, 2}  # every key's body ran to its end
    done_keys = [k async for k in queue.redis.scan_iter(match=f"{ns}:done:*", count=1000)]
    done = {k.decode(): (await queue.redis.get(k)).decode() for k in done_keys}
    assert len(done) == 500  # and its completion was recorded once, by one job
    assert sorted(key_of[job_id] for job_id in done.values()) == sorted(key_of.values())
    assert (await queue.stats()).dead == 0 and await queue.redis.xlen(queue.stream) == 0
    statuses = [await queue.status(k.decode().rsplit(":", 1)[1])
                async for k in queue.redis.scan_iter(match=f"{ns}:status:*", count=1000)]
    assert len(statuses) == 500
    assert all(s is not None and s.state == "completed" for s in statuses)
    second_tries = [s for s in statuses if s is not None and s.attempts == 2]
    assert len(second_tries) == len(orphans)  # exactly the victim's jobs were taken over
    assert all(f"-{victim.pid}-" not in s.worker for s in second_tries)
    # At least once: a body runs twice only when the victim died after the body ended
    # but before it recorded the completion, and then only for a job it held.
    ran_twice = {key for key, n in runs.items() if n == 2}
    assert ran_twice <= {key_of[s.id] for s in second_tries}


async def _count_consumers(queue: RedisQueue, n: int) -> bool:
    return len(await consumers(queue)) >= n


async def test_sigterm_drains_a_worker_process_and_hands_back_stuck_jobs(
    queue: RedisQueue,
) -> None:
    # Through the pool: the supervisor passes SIGTERM on and its process drains.
    proc = start_worker(queue, "--entry", "tests.worker_jobs:echo", "--drain-timeout", "0.3",
                        "--processes", "1")
    try:
        stuck = [await queue.submit(Job(entry="tests.worker_jobs:wait_forever")) for _ in range(2)]

        async def both_running() -> bool:
            states = [await queue.status(j.id) for j in stuck]
            return all(s is not None and s.state == "running" for s in states)

        await until(both_running, 30, "the stuck jobs to start")
        quick = await queue.submit(Job(params={"x": 1}))
        await until(lambda: _final(queue, quick.id), 10, "the quick job")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop([proc])
    for job in stuck:
        status = await queue.status(job.id)
        assert status is not None and status.state == "queued" and status.attempts == 1
    stats = await queue.stats()
    assert (stats.waiting, stats.running) == (2, 0)
    assert (await queue.status(quick.id)).result == {"x": 1}  # type: ignore[union-attr]


async def _final(queue: RedisQueue, job_id: str) -> bool:
    status = await queue.status(job_id)
    return status is not None and status.final


async def test_submit_status_and_cancel_commands(
    queue: RedisQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = queue.base.rsplit(":", 1)[0]
    common = ["--queue", REDIS_URL, "--queue-prefix", prefix]
    worker = Worker(
        WorkerOptions(queue_url=REDIS_URL, queue_prefix=prefix, entry="tests.worker_jobs:echo"),
        poll_interval=0.1,
    )
    runner = asyncio.ensure_future(worker.run())
    try:
        code = await asyncio.to_thread(
            main, ["submit", "--param", "n=3", "--param", "who=ana", "--wait", "20", *common]
        )
        out = capsys.readouterr().out.splitlines()
        assert code == 0, out
        status = json.loads(out[1])
        assert status["id"] == out[0] and status["state"] == "completed"
        assert status["result"] == {"n": 3, "who": "ana"}
        assert await asyncio.to_thread(main, ["status", out[0], *common]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "completed"
        assert await asyncio.to_thread(main, ["cancel", out[0], *common]) == 1
        assert "already ended: completed" in capsys.readouterr().err
    finally:
        worker.stop()
        await runner
        await worker.queue.close()
    # With no worker running, a submitted job waits and can be cancelled.
    assert await asyncio.to_thread(main, ["submit", "tests.worker_jobs:echo", *common]) == 0
    job_id = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(main, ["cancel", job_id, *common]) == 0
    assert (await queue.status(job_id)).state == "cancelled"  # type: ignore[union-attr]
    assert await asyncio.to_thread(main, ["status", "nope", *common]) == 1


def test_submit_needs_a_shared_queue(capsys: pytest.CaptureFixture[str]) -> None:
    env_queue = os.environ.pop("PIPEFLOW_QUEUE_URL", None)
    try:
        assert main(["submit", "tests.worker_jobs:echo"]) == 2
    finally:
        if env_queue is not None:
            os.environ["PIPEFLOW_QUEUE_URL"] = env_queue
    assert "needs the workers' shared queue" in capsys.readouterr().err


def test_submit_checks_a_pipeline_before_queueing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - type: tone\n")
    code = main(["submit", str(path), "--param", "tones.speed=0", "--queue", REDIS_URL])
    assert code == 2
    assert "no stage 'tones'" in capsys.readouterr().err


async def test_submit_with_a_completed_key_returns_the_first_job_and_its_result(
    queue: RedisQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = queue.base.rsplit(":", 1)[0]
    common = ["--queue", REDIS_URL, "--queue-prefix", prefix]
    worker = Worker(
        WorkerOptions(queue_url=REDIS_URL, queue_prefix=prefix, entry="tests.worker_jobs:echo"),
        poll_interval=0.1,
    )
    runner = asyncio.ensure_future(worker.run())
    try:
        submit = ["submit", "--key", "order-1", "--param", "n=1", "--wait", "20", *common]
        assert await asyncio.to_thread(main, submit) == 0
        first_id = capsys.readouterr().out.splitlines()[0]
        again = ["submit", "--key", "order-1", "--param", "n=2", "--wait", "8", *common]
        code = await asyncio.to_thread(main, again)
        captured = capsys.readouterr()
        out = captured.out.splitlines()
        assert code == 0, captured
        assert out[0] == first_id
        status = json.loads(out[1])
        assert status["state"] == "completed" and status["result"] == {"n": 1}
        assert f"key 'order-1' is already held by job {first_id} (completed)" in captured.err
    finally:
        worker.stop()
        await runner
        await worker.queue.close()
    assert worker.counts["completed"] == 1  # the second submit never became a job
    assert (await queue.stats()).waiting == 0
