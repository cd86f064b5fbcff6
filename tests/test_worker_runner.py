"""The Worker on the memory queue: bounded concurrency, isolation, timeouts, cancel, drain."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.errors import ConfigError
from pipeflow.job import JobContext
from pipeflow.worker import Job, Worker, WorkerOptions
from pipeflow.worker.queues.memory import MemoryQueue


def make_worker(queue: MemoryQueue, entry_point: Any = None, **options: Any) -> Worker:
    return Worker(WorkerOptions(**options), queue, entry=entry_point, poll_interval=0.05)


class Gauge:
    """Counts jobs inside the entry point and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def entry(self, ctx: JobContext) -> str:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            for _ in range(ctx.params["steps"]):
                await asyncio.sleep(0)  # yield to the loop: other jobs interleave
            if ctx.params["fail"]:
                raise RuntimeError(f"job {ctx.params['n']} failed on purpose")
            return f"done {ctx.params['n']}"
        finally:
            self.now -= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_jobs=st.integers(1, 6),
    jobs=st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=40),
)
def test_running_jobs_never_exceed_max_and_failures_stay_isolated(
    max_jobs: int, jobs: list[tuple[int, bool]]
) -> None:
    async def scenario() -> None:
        queue = MemoryQueue()
        gauge = Gauge()
        submitted = [
            await queue.submit(Job(params={"n": n, "steps": steps, "fail": fail}))
            for n, (steps, fail) in enumerate(jobs)
        ]
        worker = make_worker(queue, gauge.entry, max_jobs=max_jobs)
        await worker.run(until_idle=True)
        assert gauge.most <= max_jobs
        for job, (_steps, fail) in zip(submitted, jobs, strict=True):
            status = await queue.status(job.id)
            assert status is not None
            if fail:
                assert status.state == "failed"
                assert status.error == f"RuntimeError: job {job.params['n']} failed on purpose"
            else:
                assert status.state == "completed" and status.result == f"done {job.params['n']}"
        failed = sum(fail for _, fail in jobs)
        assert worker.counts["failed"] == failed
        assert worker.counts["completed"] == len(jobs) - failed

    asyncio.run(scenario())


async def test_the_bound_is_reached_when_jobs_pile_up() -> None:
    queue = MemoryQueue()
    release = asyncio.Event()
    inside: list[str] = []
    all_in = asyncio.Event()

    async def entry(ctx: JobContext) -> None:
        inside.append(ctx.job_id)
        if len(inside) == 3:
            all_in.set()
        await release.wait()

    for _ in range(5):
        await queue.submit(Job())
    worker = make_worker(queue, entry, max_jobs=3)
    runner = asyncio.ensure_future(worker.run(until_idle=True))
    await all_in.wait()
    assert worker.running == 3 and (await queue.stats()).waiting == 2
    assert worker.readiness() == (False, "all 3 job slots are busy")
    release.set()
    await runner
    assert worker.counts["completed"] == 5


async def test_timeout_fails_the_job_and_the_worker_goes_on() -> None:
    queue = MemoryQueue()
    slow = await queue.submit(Job(entry="tests.worker_jobs:wait_forever"))
    quick = await queue.submit(Job(entry="tests.worker_jobs:echo", params={"a": 1}))
    worker = make_worker(queue, max_jobs=2, job_timeout=0.05)
    await worker.run(until_idle=True)
    assert (await queue.status(slow.id)).error == "timed out after 0.05 s"  # type: ignore[union-attr]
    assert (await queue.status(quick.id)).result == {"a": 1}  # type: ignore[union-attr]


async def test_cancel_a_running_job() -> None:
    queue = MemoryQueue()
    started = asyncio.Event()
    cleaned = []

    async def entry(ctx: JobContext) -> None:
        ctx.add_shutdown_hook(cleaned.append)
        started.set()
        await asyncio.Event().wait()

    job = await queue.submit(Job())
    worker = make_worker(queue, entry)
    runner = asyncio.ensure_future(worker.run(until_idle=True))
    await started.wait()
    assert worker.cancel(job.id) is True
    assert worker.cancel("not-here") is False
    await runner
    assert (await queue.status(job.id)).state == "cancelled"  # type: ignore[union-attr]
    assert cleaned == ["cancelled"]  # the job's shutdown hooks ran with the reason


async def test_cancel_requested_through_the_queue_reaches_the_running_job() -> None:
    queue = MemoryQueue()
    started = asyncio.Event()

    async def entry(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.submit(Job())
    worker = make_worker(queue, entry, visibility_timeout=0.15)  # heartbeat every 50 ms
    runner = asyncio.ensure_future(worker.run(until_idle=True))
    await started.wait()
    await queue.cancel(job.id)
    await runner
    assert (await queue.status(job.id)).state == "cancelled"  # type: ignore[union-attr]


async def test_sigterm_drains_lets_jobs_finish_then_hands_back_the_rest() -> None:
    queue = MemoryQueue()
    quick_may_finish = asyncio.Event()
    both_started = asyncio.Event()
    started: list[str] = []

    async def entry(ctx: JobContext) -> str:
        started.append(ctx.job_id)
        if len(started) == 2:
            both_started.set()
        if ctx.params["kind"] == "quick":
            await quick_may_finish.wait()
            return "finished during the drain"
        await asyncio.Event().wait()
        return "never"

    quick = await queue.submit(Job(params={"kind": "quick"}))
    stuck = await queue.submit(Job(params={"kind": "stuck"}))
    waiting = await queue.submit(Job(params={"kind": "quick"}))
    worker = make_worker(queue, entry, max_jobs=2, drain_timeout=0.2)
    remove = worker.install_signal_handlers()
    try:
        runner = asyncio.ensure_future(worker.run())
        await both_started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        while worker.state != "draining":
            await asyncio.sleep(0.01)
        assert worker.readiness() == (False, "worker is draining")
        quick_may_finish.set()
        await asyncio.wait_for(runner, 5)
    finally:
        remove()
    assert (await queue.status(quick.id)).state == "completed"  # type: ignore[union-attr]
    stuck_status = await queue.status(stuck.id)
    assert stuck_status is not None and stuck_status.state == "queued"  # handed back
    assert (await queue.status(waiting.id)).state == "queued"  # type: ignore[union-attr]
    assert worker.counts["handed_back"] == 1
    again = await queue.take("next-worker", timeout=0.1)
    assert again is not None and again.job.id == stuck.id and again.attempt == 2


async def test_sync_entry_and_bad_results_and_missing_entries() -> None:
    queue = MemoryQueue()
    sync_job = await queue.submit(Job(entry="tests.worker_jobs:not_async"))
    bad_result = await queue.submit(Job())
    missing = await queue.submit(Job(entry="tests.worker_jobs:nope"))
    not_callable = await queue.submit(Job(entry="tests.worker_jobs:NOT_CALLABLE"))

    async def returns_a_lock(ctx: JobContext) -> Any:
        return asyncio.Lock()

    worker = make_worker(queue, returns_a_lock)
    await worker.run(until_idle=True)
    assert (await queue.status(sync_job.id)).result == f"sync {sync_job.id}"  # type: ignore[union-attr]
    assert "cannot be stored as its result" in (await queue.status(bad_result.id)).error  # type: ignore[union-attr]
    assert "has no job entry point 'nope'" in (await queue.status(missing.id)).error  # type: ignore[union-attr]
    assert "not a function" in (await queue.status(not_callable.id)).error  # type: ignore[union-attr]


async def test_pipeline_entry_runs_one_pipeline_per_job(tmp_path: Path) -> None:
    path = tmp_path / "tone.yaml"
    path.write_text(
        f"name: tone\noutput_dir: {tmp_path}\nstages:\n"
        "  - type: tone\n    duration_ms: 40\n    speed: 0\n  - type: passthrough\n"
    )
    queue = MemoryQueue()
    ok = await queue.submit(Job(params={"tone.duration_ms": 100}))
    bad = await queue.submit(Job(params={"tone.frequency": 20000}))
    worker = make_worker(queue, entry=str(path))
    await worker.run(until_idle=True)
    status = await queue.status(ok.id)
    assert status is not None and status.state == "completed"
    assert status.result["frames_out"] == 6  # 5 audio frames and the end of stream
    failed = await queue.status(bad.id)
    assert failed is not None and failed.state == "failed"
    assert "tone: tone source: frequency must be between 0 and 8000 Hz" in failed.error


def test_a_bad_worker_entry_is_reported_before_any_job(tmp_path: Path) -> None:
    worker = Worker(WorkerOptions(entry=str(tmp_path / "missing.yaml")), MemoryQueue())
    with pytest.raises(ConfigError, match="pipeline file not found"):
        worker.entry_for("")
    with pytest.raises(ConfigError, match="no entry point"):
        Worker(WorkerOptions(), MemoryQueue()).entry_for("")


async def test_readiness_follows_the_load_threshold() -> None:
    queue = MemoryQueue()
    release = asyncio.Event()
    started = asyncio.Event()

    async def entry(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    worker = make_worker(queue, entry, max_jobs=4, load_threshold=0.2)
    assert worker.readiness() == (False, "worker has not started")
    runner = asyncio.ensure_future(worker.run(until_idle=True))
    await asyncio.sleep(0)
    assert worker.readiness() == (True, "accepting jobs")
    await queue.submit(Job())
    await started.wait()
    assert worker.readiness() == (False, "load 0.25 is above the threshold 0.20")
    release.set()
    await runner
    assert worker.state == "stopped"
