"""The watchdog's rules (no clock, no loop), its thread against a real blocked
loop, and where synchronous entry points and tools run."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeflow.frames import ToolCall
from pipeflow.job import JobContext, call_function
from pipeflow.tools import FunctionCall, RunContext, ToolSet, build_tool, invoke
from pipeflow.worker import Job, Worker, WorkerOptions
from pipeflow.worker.queues.memory import MemoryQueue
from pipeflow.worker.watchdog import LoopWatch, Verdict, Watchdog

RULES = {"lag_threshold": 0.25, "grace": 1.0, "hard_limit": 5.0, "interval": 0.05}


def look(watch: LoopWatch, stall: float, job: str = "", deadline: float | None = None) -> str:
    now = 100.0
    deadlines = {job: deadline} if job and deadline is not None else {}
    return watch.look(now, now - stall - watch.interval, job, deadlines, lambda: "stack").state


@pytest.mark.parametrize(("stall", "state"), [
    (0.0, "ok"), (0.25, "ok"),   # on time, or late within the threshold
    (1.0, "ok"),                 # blocked, but still within the grace period
    (1.3, "unhealthy"),          # blocked for longer than threshold + grace
    (5.01, "kill"),              # past the hard limit
])
def test_a_stall_is_judged_by_threshold_grace_and_hard_limit(stall: float, state: str) -> None:
    assert look(LoopWatch(**RULES), stall) == state


def test_a_job_past_its_deadline_while_blocking_is_a_timeout() -> None:
    watch = LoopWatch(**RULES)
    assert look(watch, 0.5, job="j1", deadline=99.0) == "timeout"
    assert watch.last.job_id == "j1" and watch.last.stack == "stack"
    assert "j1 passed its timeout" in watch.last.reason
    # Before its deadline the same stall is only a stall.
    assert look(LoopWatch(**RULES), 0.5, job="j1", deadline=101.0) == "ok"


def test_trips_count_each_episode_and_recovery_is_immediate() -> None:
    watch = LoopWatch(**RULES)
    assert [look(watch, s) for s in (1.5, 2.0, 0.8, 0.0, 1.5)] == [
        "unhealthy", "unhealthy", "unhealthy", "ok", "unhealthy"]
    assert watch.trips == 2
    assert LoopWatch(**{**RULES, "hard_limit": 0}).look(100, 0, "", {}).state == "unhealthy"


async def test_the_thread_sees_a_blocked_loop_and_names_the_job() -> None:
    seen: list[Verdict] = []
    lags: list[float] = []
    watch = LoopWatch(lag_threshold=0.05, grace=0.1, hard_limit=0, interval=0.02)
    dog = Watchdog(watch, asyncio.get_running_loop(), seen.append, on_lag=lags.append,
                   period=0.02)
    dog.start()

    async def blocker() -> None:
        time.sleep(0.5)

    await asyncio.sleep(0.05)
    await asyncio.get_running_loop().create_task(blocker(), name="job-j42")
    await asyncio.sleep(0.1)
    await dog.stop()
    bad = [v for v in seen if v.state == "unhealthy"]
    assert bad and bad[-1].job_id == "j42"
    assert "time.sleep(0.5)" in bad[-1].stack and "in blocker" in bad[-1].stack
    assert max(lags) > 0.3 and seen[-1].state == "ok" and watch.trips == 1


def test_async_and_sync_functions_are_both_callable_without_blocking() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()

        async def coro(x: int) -> int:
            return x + 1

        def plain(x: int) -> tuple[int, bool]:
            return x * 2, threading.get_ident() == loop_thread

        assert await call_function(coro, 1) == 2
        assert await call_function(plain, 2) == (4, False)  # ran in a thread
        assert await call_function(plain, 2, on_loop=True) == (4, True)

    asyncio.run(main())


async def test_a_blocking_sync_entry_point_times_out_while_other_jobs_run() -> None:
    def stuck(ctx: JobContext) -> str:
        time.sleep(1.0)
        return "late"

    async def quick(ctx: JobContext) -> str:
        return "quick"

    queue = MemoryQueue()
    slow = await queue.submit(Job(entry="slow"))
    fast = [await queue.submit(Job()) for _ in range(5)]
    worker = Worker(WorkerOptions(job_timeout=0.3, max_jobs=10), queue, entry=quick,
                    poll_interval=0.02)
    worker._entries["slow"] = stuck
    started = time.monotonic()
    await worker.run(until_idle=True)
    assert time.monotonic() - started < 0.9  # the timeout fired; the thread was not waited for
    status = await queue.status(slow.id)
    assert status is not None and status.state == "failed"
    assert status.error == "timed out after 0.3 s"
    states = [(await queue.status(j.id)).state for j in fast]  # type: ignore[union-attr]
    assert states == ["completed"] * 5


async def test_a_paused_worker_takes_no_jobs_until_resumed() -> None:
    async def quick(ctx: JobContext) -> str:
        return "ok"

    queue = MemoryQueue()
    worker = Worker(WorkerOptions(), queue, entry=quick, poll_interval=0.02)
    worker.pause("watchdog: event loop blocked")
    runner = asyncio.ensure_future(worker.run())
    job = await queue.submit(Job())
    await asyncio.sleep(0.2)
    assert (await queue.status(job.id)).state == "queued"  # type: ignore[union-attr]
    assert worker.readiness() == (False, "watchdog: event loop blocked")
    worker.resume()
    for _ in range(100):
        if (await queue.status(job.id)).state == "completed":  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    worker.stop()
    await runner
    assert (await queue.status(job.id)).state == "completed"  # type: ignore[union-attr]


async def test_sync_tools_run_in_a_thread_unless_kept_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    def where() -> bool:
        """Whether it ran on the loop's thread."""
        return threading.get_ident() == loop_thread

    threaded = build_tool(where, name="threaded")
    on_loop = build_tool(where, name="on_loop", on_loop=True)
    tools = ToolSet([threaded, on_loop])
    for name, expected in (("threaded", "false"), ("on_loop", "true")):
        c = ToolCall(call_id="c1", name=name, arguments="{}")
        ctx = RunContext(call_id="c1", function_call=FunctionCall(name=name, arguments="{}"))
        assert (await invoke(tools, c, ctx)).output == expected


def test_a_process_is_due_for_recycling_by_job_count_or_memory() -> None:
    from pipeflow.worker.process import recycle_reason, rss_bytes

    worker = Worker(WorkerOptions(), MemoryQueue())
    assert recycle_reason(WorkerOptions(), worker) == ""
    worker.counts["completed"], worker.counts["failed"] = 4, 1
    assert recycle_reason(WorkerOptions(recycle_jobs=5), worker) == (
        "ran 5 jobs (recycle_jobs 5)")
    assert recycle_reason(WorkerOptions(recycle_jobs=6), worker) == ""
    assert rss_bytes() > 2**20
    assert "recycle_memory_mb 1" in recycle_reason(WorkerOptions(recycle_memory_mb=1), worker)
    assert recycle_reason(WorkerOptions(recycle_memory_mb=10**6), worker) == ""
