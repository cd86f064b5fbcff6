"""Worker throughput and capacity.

1. Jobs per second through the ``memory`` and ``redis`` queues for trivial
   jobs (submit rate, and run rate of one worker process from a full queue).
2. How many concurrent real-time calls one worker process runs with p99
   frame lateness under 20 ms, and the memory each call costs.

The calls figure takes a *probe*: ``async def probe(n, seconds) ->
LatenessStats`` runs ``n`` calls at once in this process and measures how
late their frames are. The default probe runs each call as a worker job: a
real-time paced 16 kHz tone through a lateness meter and a resampler to
24 kHz (all hops of one call share its task, so the resampler's CPU time
shows up as lateness when the process is overloaded). A fuller call (the
order line) plugs in as another probe with ``--probe module:function``.

    python -m benchmarks.bench_worker [--quick] [--no-redis] [--probe module:function]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.report import markdown_table, write_section
from pipeflow import Pipeline
from pipeflow.frames import AudioFrame
from pipeflow.job import JobContext
from pipeflow.stage import Frames, Stage
from pipeflow.worker import Job, Worker, WorkerOptions
from pipeflow.worker.queues.memory import MemoryQueue

REDIS_URL = os.environ.get("PIPEFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")


# --- 1. throughput ------------------------------------------------------------


async def trivial(ctx: JobContext) -> None:
    """The cheapest job: returns at once."""
    return None


@dataclass
class Throughput:
    """Jobs per second one way through a queue."""

    backend: str
    jobs: int
    submit_per_s: float
    run_per_s: float


async def throughput(backend: str, jobs: int, max_jobs: int = 50) -> Throughput:
    """Submit ``jobs`` trivial jobs, then drain them with one worker."""
    if backend == "memory":
        queue = MemoryQueue()
    else:
        from pipeflow.worker.queues.redis import RedisQueue

        queue = RedisQueue(REDIS_URL, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        started = time.perf_counter()
        for _ in range(jobs):
            await queue.submit(Job())
        submitted = time.perf_counter() - started
        worker = Worker(WorkerOptions(max_jobs=max_jobs), queue, entry=trivial,
                        poll_interval=0.02)
        started = time.perf_counter()
        await worker.run(until_idle=True)
        ran = time.perf_counter() - started - worker.poll_interval  # the final empty poll
        if worker.counts["completed"] != jobs:
            raise RuntimeError(f"{backend}: {worker.counts} for {jobs} jobs")
        return Throughput(backend, jobs, jobs / submitted, jobs / max(ran, 1e-9))
    finally:
        if backend != "memory":
            await queue.delete_all()  # type: ignore[attr-defined]
        await queue.close()


# --- 2. concurrent real-time calls ---------------------------------------------


@dataclass
class LatenessStats:
    """Frame lateness of ``calls`` concurrent calls, and their memory."""

    calls: int
    frames: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_per_call_kib: float


Probe = Callable[[int, float], Awaitable[LatenessStats]]


class LatenessMeter(Stage):
    """Records how late each audio frame arrives against the call's own timeline.

    The timeline starts when the call starts (``origin``): the frame at
    ``pts`` is due ``pts`` seconds later, so a call that starts late, or a
    source that falls behind and bursts to catch up, both count as late.
    """

    name = "bench_lateness"

    def __init__(self, samples: list[float]) -> None:
        super().__init__()
        self.samples = samples
        self.origin = time.perf_counter()

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, AudioFrame):
                late = time.perf_counter() - self.origin - frame.pts
                self.samples.append(max(0.0, late))
            yield frame


def _rss_kib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


async def tone_call_probe(calls: int, seconds: float) -> LatenessStats:
    """``calls`` concurrent worker jobs, each a paced tone -> meter -> resample."""
    from pipeflow.stages.resample import Resample, ResampleOptions
    from pipeflow.stages.sources import ToneOptions, ToneSource

    samples: list[float] = []
    peak = [0.0]

    async def call(ctx: JobContext) -> None:
        # Calls arrive spread over the first second (a ramp), not all in one instant.
        await asyncio.sleep(ctx.params["ramp"])
        meter = LatenessMeter(samples)
        pipeline = Pipeline([
            ToneSource(ToneOptions(duration_ms=seconds * 1000, speed=1.0)),
            meter,  # before the resampler: its algorithmic delay is not lateness
            Resample(ResampleOptions(rate=24000)),
        ])
        meter.origin = time.perf_counter()
        result = await pipeline.run()
        peak[0] = max(peak[0], _rss_kib())
        if not result.ok:
            raise RuntimeError(result.errors)

    gc.collect()
    before = _rss_kib()
    queue = MemoryQueue()
    for i in range(calls):
        await queue.submit(Job(params={"ramp": i / calls}))
    worker = Worker(WorkerOptions(max_jobs=calls), queue, entry=call, poll_interval=0.02)
    await worker.run(until_idle=True)
    return _stats(calls, samples, (peak[0] - before) / calls)


def _stats(calls: int, samples: list[float], per_call_kib: float) -> LatenessStats:
    ordered = sorted(samples) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return LatenessStats(calls, len(samples), statistics.median(ordered) * 1000, p99 * 1000,
                         ordered[-1] * 1000, per_call_kib)


async def max_calls(
    probe: Probe, seconds: float, budget_ms: float = 20.0, start: int = 25, limit: int = 6400
) -> tuple[LatenessStats | None, list[LatenessStats]]:
    """The most calls with p99 lateness under ``budget_ms``: doubling, then bisection."""
    trials: list[LatenessStats] = []
    best: LatenessStats | None = None
    low, high, n = 0, None, start
    while n <= limit:
        stats = await probe(n, seconds)
        trials.append(stats)
        if stats.p99_ms >= budget_ms:
            high = n
            break
        best, low, n = stats, n, n * 2
    while high is not None and high - low > max(low // 8, 1):
        mid = (low + high) // 2
        stats = await probe(mid, seconds)
        trials.append(stats)
        if stats.p99_ms < budget_ms:
            best, low = stats, mid
        else:
            high = mid
    return best, trials


# --- report --------------------------------------------------------------------


DEFAULT_PROBE = "benchmarks.bench_worker:tone_call_probe"


def _load_probe(ref: str) -> Probe:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def isolated(ref: str) -> Probe:
    """A probe that runs each trial of ``ref`` in a fresh process.

    A process never gives freed memory back to the system, so memory per
    call is only meaningful from a process that ran nothing before.
    """

    async def probe(calls: int, seconds: float) -> LatenessStats:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_worker", "--trial", str(calls),
            "--seconds", str(seconds), "--probe", ref, stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"trial of {calls} calls failed (exit {proc.returncode})")
        return LatenessStats(**json.loads(out.decode().strip().splitlines()[-1]))

    return probe


async def _run(args: argparse.Namespace) -> None:
    jobs = 500 if args.quick else 5000
    rows, data = [], {}
    backends = ["memory"] if args.no_redis else ["memory", "redis"]
    for backend in backends:
        result = await throughput(backend, jobs if backend == "memory" else jobs // 2)
        rows.append([backend, result.jobs, result.submit_per_s, result.run_per_s])
        data[backend] = vars(result)
        print(f"{backend}: submit {result.submit_per_s:,.0f}/s, run {result.run_per_s:,.0f}/s")
    body = markdown_table(["queue", "jobs", "submitted per s", "run per s (1 worker)"], rows)
    body += (
        "\n\nTrivial jobs (an entry point that returns at once), one worker process with "
        "50 slots, the queue full before it starts. Redis: a local server, one round trip "
        "per submit and several per job (take, admit script, complete script).\n"
    )
    if not args.no_calls:
        probe = isolated(args.probe or DEFAULT_PROBE)
        seconds = 3.0 if args.quick else 10.0
        best, trials = await max_calls(probe, seconds)
        for t in trials:
            print(f"{t.calls} calls: p99 {t.p99_ms:.1f} ms, {t.rss_per_call_kib:.0f} KiB/call")
        trial_rows = [[t.calls, t.frames, t.p50_ms, t.p99_ms, t.max_ms, t.rss_per_call_kib]
                      for t in trials]
        body += "\n### Concurrent real-time calls per worker process\n\n"
        body += markdown_table(
            ["calls", "frames", "p50 lateness ms", "p99 lateness ms", "max ms", "KiB per call"],
            trial_rows,
        )
        name = args.probe or "tone -> lateness meter -> resample 16k->24k, paced in real time"
        verdict = (f"**{best.calls} calls** with p99 frame lateness under 20 ms"
                   if best else "no trial met the 20 ms budget")
        body += (f"\n\nProbe: {name}; {seconds:g} s of audio per call, each call a worker job, "
                 "the calls starting spread over the first second. "
                 f"Result: {verdict}. Each trial runs in a fresh process; memory per call is "
                 "that process's RSS growth at the peak divided by the calls.\n")
        data["calls"] = {"best": vars(best) if best else None,
                         "trials": [vars(t) for t in trials], "probe": name}
    command = "python -m benchmarks.bench_worker" + (" --quick" if args.quick else "")
    write_section("worker", "Workers: queue throughput and calls per process", body, command,
                  data)


def main() -> None:
    """Run the worker benchmarks and write their section of results.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs, shorter calls")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis queue")
    parser.add_argument("--no-calls", action="store_true", help="skip the calls-per-process search")
    parser.add_argument("--probe", help="'module:function' probe(n, seconds) -> LatenessStats")
    parser.add_argument("--trial", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        probe = _load_probe(args.probe or DEFAULT_PROBE)
        stats = asyncio.run(probe(args.trial, args.seconds))  # type: ignore[arg-type]
        print(json.dumps(vars(stats)))
        return
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
