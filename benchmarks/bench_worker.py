"""Worker throughput and capacity.

1. Jobs per second through the ``memory`` and ``redis`` queues for trivial
   jobs (submit rate, and run rate of one worker process from a full queue).
2. How many concurrent real-time calls one worker process runs with p99
   frame lateness under 20 ms, and the memory each call costs.
3. With ``--pool``: the same two through the worker pool (a supervisor and
   its processes): trivial jobs end to end through the pool's memory queue
   (served over pipes) and Redis, and tone calls spread over the processes,
   next to one in-process worker measured the same way in the same run.

The calls figure takes a *probe*: ``async def probe(n, seconds) ->
LatenessStats`` runs ``n`` calls at once in this process and measures how
late their frames are. The default probe runs each call as a worker job: a
real-time paced 16 kHz tone through a lateness meter and a resampler to
24 kHz (all hops of one call share its task, so the resampler's CPU time
shows up as lateness when the process is overloaded). The order-line probe
runs the real ``pipelines/call.yaml`` per job (simulated caller, resample,
vad, realtime stage, tools, transcript, jsonl and wav sinks) against one
local Realtime server in another process, pinned to another core. Other
probes plug in with ``--probe module:function``.

    python -m benchmarks.bench_worker [--quick] [--no-redis] [--probe module:function]
    python -m benchmarks.bench_worker --pool [--quick] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    agent_audio_s: float | None = None
    """Seconds of agent audio each call received on average (probes with a model)."""
    warnings: int = 0
    """Non-fatal errors the calls' pipelines reported (the call went on)."""


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



# --- the order line: pipelines/call.yaml per job, the model in another process ---------


ROOT = Path(__file__).resolve().parent.parent
CALL_FILE = ROOT / "pipelines" / "call.yaml"
ORDERLINE_SCRIPT = ROOT / "pipelines" / "orderline" / "script.yaml"


class CallerTap(Stage):
    """Right after the caller: when its line started, and the newest frame it sent.

    The call's schedule starts when the caller's first frame leaves it (its
    line is up; what came before, such as connecting to the model, is call
    setup, not frame lateness): the frame at ``pts`` is due ``pts`` later.
    """

    name = "bench_caller_tap"

    def __init__(self) -> None:
        super().__init__()
        self.origin: float | None = None
        self.pts = 0.0

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, AudioFrame) and not frame.item_id:
                if self.origin is None:
                    self.origin = time.perf_counter() - frame.pts
                self.pts = frame.pts
            yield frame


class CallerLateness(LatenessMeter):
    """Lateness of the caller's audio where it leaves a later stage (after ``vad``).

    Each caller audio frame (no ``item_id``) arriving here is timed against
    the call's schedule (from ``tap.origin``) for the newest caller frame the
    ``tap`` saw leave the caller: the hops in between run in turn, so that is
    the frame it was made from.
    Timing it against its own ``pts`` would count the resampler's block
    buffering (a 16 -> 24 kHz chunk comes out only once enough input is in,
    20 to 40 ms) as lateness, which is algorithmic delay, not a slow process.
    """

    name = "bench_caller_lateness"

    def __init__(self, samples: list[float], tap: CallerTap) -> None:
        super().__init__(samples)
        self.tap = tap

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, AudioFrame) and not frame.item_id:
                origin = self.origin if self.tap.origin is None else self.tap.origin
                late = time.perf_counter() - origin - self.tap.pts
                self.samples.append(max(0.0, late))
            yield frame


class AgentAudio(Stage):
    """Adds up the seconds of agent audio (frames with an ``item_id``) passing by."""

    name = "bench_agent_audio"

    def __init__(self, total: list[float]) -> None:
        super().__init__()
        self.total = total

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, AudioFrame) and frame.item_id:
                self.total[0] += len(frame.pcm) / (2 * frame.channels * frame.sample_rate)
            yield frame


def _split_cores() -> tuple[set[int], set[int]] | None:
    """(worker cores, server cores): the first core for the worker, the others for the
    model; None with fewer than two cores (or no affinity API)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    if len(cores) < 2:
        return None
    return {cores[0]}, set(cores[1:])


@contextlib.asynccontextmanager
async def orderline_server(cores: set[int] | None = None) -> AsyncIterator[str]:
    """Yield the URL of a local Realtime server playing the order-line script, running
    in its own process (pinned to ``cores``); it is stopped on exit."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL")}

    def pin() -> None:  # in the child, before Python starts: every thread inherits it
        if cores:
            os.sched_setaffinity(0, cores)

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeflow.cli", "realtime-server", "--port", "0", "--no-auth",
        "--script", str(ORDERLINE_SCRIPT), cwd=ROOT, env=env, preexec_fn=pin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        found = re.search(r"ws://[^\s(]+", line.decode())
        if found is None:
            raise RuntimeError(f"the local Realtime server did not start: {line!r}")

        async def read_rest(stream: asyncio.StreamReader) -> None:
            while await stream.read(65536):  # never let its stdout pipe fill up
                pass

        drain = asyncio.create_task(read_rest(process.stdout))
        yield found.group(0)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


def _share_caller_speech(config: Any) -> Callable[[], None]:
    """Synthesise the caller's lines once for the whole process; returns the undo.

    The simulated caller stands in for a phone line: in production its audio
    arrives from the network, so its speech synthesis (espeak-ng, under one
    lock) is not work a worker does per call. Every call speaks the same lines.
    """
    import pipeflow.stages.caller as caller_module

    spec = next(s for s in config.stages if s.type == "caller")
    opts = spec.options
    texts = [line if isinstance(line, str) else line.text for line in opts.lines]
    key = (texts, opts.sample_rate, opts.voice, opts.words_per_minute)
    original = caller_module.synthesize_apart
    speech = original(*key)

    def shared(texts: list[str], rate: int, voice: str, wpm: int) -> Any:
        if (texts, rate, voice, wpm) == key:
            return speech
        return original(texts, rate, voice, wpm)

    caller_module.synthesize_apart = shared  # type: ignore[assignment]

    def undo() -> None:
        caller_module.synthesize_apart = original  # type: ignore[assignment]

    return undo


async def orderline_call_probe(calls: int, seconds: float) -> LatenessStats:
    """``calls`` concurrent worker jobs, each the first ``seconds`` of pipelines/call.yaml.

    One local Realtime server (another process, on another core when there
    are two or more) plays pipelines/orderline/script.yaml for every call, so
    its speech synthesis and offline ASR are not this process's work. Each job
    builds the real call pipeline with ``model.url`` pointed at that server,
    its own output folder and its own SQLite order database, and a
    ``CallerLateness`` meter right after the ``vad`` stage (caller audio,
    16 kHz resampled to 24 kHz, timed against the schedule of the caller
    frame it was made from, from the call's start; see ``CallerTap``). After
    ``seconds`` the job ends its pipeline (the stages shut down) and returns.
    """
    from pipeflow.build import Changes, build
    from pipeflow.config import load_config

    samples: list[float] = []
    peak = [0.0]
    agent_audio = [0.0]
    warnings = [0]
    errors: list[str] = []
    split = _split_cores()
    previous = os.sched_getaffinity(0) if split else None
    folder = Path(tempfile.mkdtemp(prefix="pipeflow-bench-orderline-"))
    undo: Callable[[], None] | None = None
    try:
        if split:
            os.sched_setaffinity(0, split[0])
        async with orderline_server(split[1] if split else None) as url:

            def configure(where: Path, session_id: str = "") -> Any:
                env = {**os.environ, "ORDERLINE_DB": str(where / "orders.sqlite3")}
                env.pop("OAI_REALTIME_URL", None)
                config = load_config(CALL_FILE, [f"model.url={url}"], env=env)
                return build(config, Changes(output_dir=str(where)), session_id=session_id)

            # Warm up outside the measurement: imports, the catalog, the caller's speech.
            warm = configure(folder / "warm-up")
            kept = warm.stages  # held: not reused by the calls
            undo = _share_caller_speech(warm.config)

            async def call(ctx: JobContext) -> None:
                # Calls arrive spread over the first second (a ramp), not all in one instant.
                await asyncio.sleep(ctx.params["ramp"])
                config, context, stages = configure(folder / f"call-{ctx.params['index']}",
                                                    ctx.job_id)
                vad = next(i for i, spec in enumerate(config.stages) if spec.type == "vad")
                caller = next(i for i, spec in enumerate(config.stages) if spec.type == "caller")
                model = next(i for i, spec in enumerate(config.stages)
                             if spec.type == "realtime")
                tap = CallerTap()
                meter = CallerLateness(samples, tap)
                # From the last to the first, so the indexes stay right.
                stages.insert(model + 1, AgentAudio(agent_audio))
                stages.insert(vad + 1, meter)
                stages.insert(caller + 1, tap)
                pipeline = Pipeline(stages, name=config.name, context=context, config=config,
                                    inbox_size=config.inbox_size)
                meter.origin = time.perf_counter()
                early = True
                try:
                    async with asyncio.timeout(seconds):
                        await pipeline.run()
                except TimeoutError:
                    early = False  # the window is over: the pipeline was cancelled, shut down
                peak[0] = max(peak[0], _rss_kib())
                result = pipeline.result
                fatal = [e.message for e in result.errors if e.fatal] if result else []
                warnings[0] += len(result.errors) - len(fatal) if result else 0
                if fatal:
                    errors.extend(fatal)
                elif early:
                    errors.append(f"call {ctx.params['index']} ended within {seconds:g} s")

            gc.collect()
            before = _rss_kib()
            queue = MemoryQueue()
            for i in range(calls):
                await queue.submit(Job(params={"ramp": i / calls, "index": i}))
            worker = Worker(WorkerOptions(max_jobs=calls), queue, entry=call, poll_interval=0.02)
            async with asyncio.timeout(seconds + 60):  # each job ends itself after `seconds`
                await worker.run(until_idle=True)
            if worker.counts["completed"] != calls:
                raise RuntimeError(f"order-line calls: {worker.counts}; {errors[:3]}")
            if errors:
                raise RuntimeError(f"order-line calls failed: {errors[:3]}")
            del kept
    finally:
        if undo is not None:
            undo()
        if previous is not None:
            os.sched_setaffinity(0, previous)
        shutil.rmtree(folder, ignore_errors=True)
    stats = _stats(calls, samples, (peak[0] - before) / calls, agent_audio[0] / calls)
    stats.warnings = warnings[0]
    return stats


def _stats(calls: int, samples: list[float], per_call_kib: float,
           agent_audio_s: float | None = None) -> LatenessStats:
    ordered = sorted(samples) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return LatenessStats(calls, len(samples), statistics.median(ordered) * 1000, p99 * 1000,
                         ordered[-1] * 1000, per_call_kib, agent_audio_s)


async def max_calls(
    probe: Probe, seconds: float, budget_ms: float = 20.0, start: int = 25, limit: int = 6400,
    resolution: int = 8,
) -> tuple[LatenessStats | None, list[LatenessStats]]:
    """The most calls with p99 lateness under ``budget_ms``: doubling, then bisection
    until the bracket is within ``1/resolution`` of the best count."""
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
    while high is not None and high - low > max(low // resolution, 1):
        mid = (low + high) // 2
        stats = await probe(mid, seconds)
        trials.append(stats)
        if stats.p99_ms < budget_ms:
            best, low = stats, mid
        else:
            high = mid
    return best, trials


# --- 3. the pool -----------------------------------------------------------------


async def tone_call_job(ctx: JobContext) -> list[float]:
    """One tone call as a pool job: its frames' lateness in ms (the job's result)."""
    from pipeflow.stages.resample import Resample, ResampleOptions
    from pipeflow.stages.sources import ToneOptions, ToneSource

    await asyncio.sleep(ctx.params["ramp"])
    samples: list[float] = []
    meter = LatenessMeter(samples)
    pipeline = Pipeline([
        ToneSource(ToneOptions(duration_ms=ctx.params["seconds"] * 1000, speed=1.0)),
        meter,
        Resample(ResampleOptions(rate=24000)),
    ])
    meter.origin = time.perf_counter()
    result = await pipeline.run()
    if not result.ok:
        raise RuntimeError(result.errors)
    return [round(x * 1000, 3) for x in samples]


async def _until_done(queue: Any, jobs: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await queue.stats()
        if stats.waiting == 0 and stats.running == 0:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{jobs} jobs did not finish in {timeout:g} s")


@contextlib.asynccontextmanager
async def _pool(options: WorkerOptions) -> AsyncIterator[Any]:
    from pipeflow.worker.pool import Pool

    pool = Pool(options)
    runner = asyncio.ensure_future(pool.run())
    deadline = time.monotonic() + 120
    while not (len(pool.children) == pool.size and all(c.ready for c in pool.children.values())):
        if time.monotonic() > deadline or runner.done():
            raise RuntimeError("the pool's processes did not start")
        await asyncio.sleep(0.02)
    try:
        yield pool
    finally:
        pool.stop("benchmark over")
        await runner
        await pool.queue.close()


async def pool_throughput(backend: str, jobs: int, processes: int) -> dict[str, Any]:
    """Trivial jobs end to end: submit them all to a running worker, time until the last ends.

    ``processes`` 0 is one in-process ``Worker`` (no pool) measured the same way.
    """
    prefix = f"bench-pool-{uuid.uuid4().hex[:8]}"
    url = "memory://" if backend == "memory" else REDIS_URL
    options = WorkerOptions(processes=max(processes, 1), max_jobs=50, queue_url=url,
                            queue_prefix=prefix, entry="benchmarks.bench_worker:trivial",
                            health_port=None, log_level="warning")

    async def timed(queue: Any) -> float:
        started = time.perf_counter()
        for _ in range(jobs):
            await queue.submit(Job())
        await _until_done(queue, jobs)
        return time.perf_counter() - started

    try:
        if processes == 0:
            worker = Worker(options, poll_interval=0.02)
            runner = asyncio.ensure_future(worker.run())
            try:
                elapsed = await timed(worker.queue)
            finally:
                worker.stop()
                await runner
                await worker.queue.close()
            done = worker.counts["completed"]
        else:
            async with _pool(options) as pool:
                elapsed = await timed(pool.queue)
                await asyncio.sleep(3 * pool.report_interval)  # the last reports arrive
                done = sum(c.report.get("counts", {}).get("completed", 0)
                           for c in pool.children.values())
        if done != jobs:
            raise RuntimeError(f"{backend}, {processes} processes: {done} of {jobs} completed")
        return {"backend": backend, "processes": processes, "jobs": jobs,
                "per_s": jobs / elapsed}
    finally:
        if backend != "memory":
            from pipeflow.worker.queues.redis import RedisQueue

            cleanup = RedisQueue(REDIS_URL, prefix=prefix)
            await cleanup.delete_all()
            await cleanup.close()


async def pool_calls(per_process: int, processes: int, seconds: float) -> LatenessStats:
    """``per_process`` tone calls on each of ``processes`` pool processes at once."""
    calls = per_process * processes
    options = WorkerOptions(processes=processes, max_jobs=per_process, health_port=None,
                            entry="benchmarks.bench_worker:tone_call_job", log_level="warning",
                            lag_kill=0)
    async with _pool(options) as pool:
        jobs = [await pool.queue.submit(Job(params={"ramp": i / calls, "seconds": seconds}))
                for i in range(calls)]
        await _until_done(pool.queue, calls, timeout=seconds + 120)
        samples: list[float] = []
        memory = [c.watch.get("rss", 0) for c in pool.children.values()]
        for job in jobs:
            status = await pool.queue.status(job.id)
            if status is None or status.state != "completed":
                raise RuntimeError(f"call {job.id}: {status}")
            samples.extend(x / 1000 for x in status.result)
    return _stats(calls, samples, sum(memory) / max(calls, 1) / 1024)


async def _run_pool(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()[0]
    jobs = 1000 if args.quick else 5000
    processes = min(os.cpu_count() or 1, 4)
    rows, data = [], {"throughput": [], "calls": []}
    for backend in ["memory"] if args.no_redis else ["memory", "redis"]:
        n = jobs if backend == "memory" else jobs // 2
        for procs in sorted({0, 1, processes}):
            result = await pool_throughput(backend, n, procs)
            data["throughput"].append(result)
            label = "in-process worker (no pool)" if procs == 0 else f"pool of {procs}"
            rows.append([backend, label, n, result["per_s"]])
            print(f"{backend}, {label}: {result['per_s']:,.0f} jobs/s")
    body = markdown_table(["queue", "worker", "jobs", "jobs per s, end to end"], rows)
    body += (
        "\n\nTrivial jobs (an entry point that returns at once), 50 slots per process: the "
        "worker (or pool) running and idle, then every job submitted and the clock stopped "
        "when the queue reports none waiting or running, so submitting is part of the figure. "
        "Through the pool, the memory queue lives in the supervisor and each take and "
        "completion is a round trip over the process's pipe; with Redis each process talks "
        "to Redis itself. The in-process rows are today's single-process worker measured "
        "the same way in the same run (the 'run per s' table above drains a full queue "
        "instead, in an earlier run, so its figures are higher). The pool's memory queue "
        "costs two pipe round trips per job, all served by the supervisor's one loop: "
        "thousands of jobs a second, far above the rate calls arrive, but well below one "
        "process calling its own queue.\n"
    )
    seconds = 3.0 if args.quick else 5.0
    call_rows = []
    for per_process in ((50, 100, 200) if args.quick else (100, 200, 300, 400)):
        alone = await isolated(DEFAULT_PROBE)(per_process, seconds)  # one process, same load
        stats = await pool_calls(per_process, processes, seconds)
        data["calls"].append({"per_process": per_process, "processes": processes,
                              **vars(stats), "single_process_p99_ms": alone.p99_ms})
        call_rows.append([per_process, processes, stats.calls, stats.p50_ms, stats.p99_ms,
                          stats.max_ms, stats.rss_per_call_kib, alone.p99_ms])
        print(f"pool calls: {per_process} x {processes}: p99 {stats.p99_ms:.1f} ms "
              f"(one process alone: {alone.p99_ms:.1f} ms)")
        if stats.p99_ms >= 20.0:
            break
    body += "\n### Concurrent real-time calls through the pool\n\n"
    body += markdown_table(
        ["calls per process", "processes", "calls", "p50 lateness ms", "p99 lateness ms",
         "max ms", "KiB per call (process RSS / calls)",
         "p99 ms, one in-process worker with the calls per process"], call_rows)
    body += (
        f"\n\nThe tone probe of the single-process table above (tone -> lateness meter -> "
        f"resample 16k->24k, paced in real time, {seconds:g} s of audio per call, calls "
        "starting spread over the first second), each call a job of the pool, "
        f"`max_jobs` set to the calls per process so the {processes} processes share them "
        "evenly. The last column runs the calls of one process alone, as one in-process "
        "worker just before (the single-process probe above), for the same load on the "
        "machine. Memory per call here is the processes' whole resident memory divided by "
        "the calls (interpreter included), not the growth the single-process table "
        "reports.\n\n"
        f"The machine was shared while this ran (load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores): other work ran on its "
        "cores, trials of the same size vary by several times between runs, and with as "
        "many processes as cores the pool's processes compete with the supervisor, with "
        "each other and with that work. Read these figures as a floor and the two columns "
        "of a row as taken under roughly the same load, not as the machine's capacity.\n"
    )
    command = "python -m benchmarks.bench_worker --pool" + (" --quick" if args.quick else "")
    write_section("worker_pool", "Workers: the process pool", body, command, data)


# --- report --------------------------------------------------------------------


DEFAULT_PROBE = "benchmarks.bench_worker:tone_call_probe"
ORDERLINE_PROBE = "benchmarks.bench_worker:orderline_call_probe"


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


def _verdict(best: LatenessStats | None, trials: list[LatenessStats]) -> str:
    if best is None:
        return "no trial met the 20 ms budget"
    if all(t.p99_ms < 20.0 for t in trials):  # the search stopped at its limit
        return f"**at least {best.calls} calls** (the search's limit) with p99 under 20 ms"
    return f"**{best.calls} calls** with p99 frame lateness under 20 ms"


async def _tone_calls(ref: str, seconds: float, custom: bool) -> tuple[str, dict[str, Any]]:
    """The calls-per-process search with the tone probe (or ``ref``): its table and data."""
    best, trials = await max_calls(isolated(ref), seconds)
    for t in trials:
        print(f"{t.calls} calls: p99 {t.p99_ms:.1f} ms, {t.rss_per_call_kib:.0f} KiB/call")
    trial_rows = [[t.calls, t.frames, t.p50_ms, t.p99_ms, t.max_ms, t.rss_per_call_kib]
                  for t in trials]
    body = "\n### Concurrent real-time calls per worker process\n\n"
    body += markdown_table(
        ["calls", "frames", "p50 lateness ms", "p99 lateness ms", "max ms", "KiB per call"],
        trial_rows,
    )
    name = ref if custom else "tone -> lateness meter -> resample 16k->24k, paced in real time"
    body += (f"\n\nProbe: {name}; {seconds:g} s of audio per call, each call a worker job, "
             "the calls starting spread over the first second. "
             f"Result: {_verdict(best, trials)}. Each trial runs in a fresh process; memory per "
             "call is that process's RSS growth at the peak divided by the calls.\n")
    return body, {"best": vars(best) if best else None, "trials": [vars(t) for t in trials],
                  "probe": name}


async def _orderline_calls(quick: bool) -> tuple[str, dict[str, Any]]:
    """The calls-per-process search with the order-line probe: its table and data."""
    seconds = 6.0 if quick else 10.0
    limit = 40 if quick else 160
    best, trials = await max_calls(isolated(ORDERLINE_PROBE), seconds, start=10, limit=limit,
                                   resolution=2)
    for t in trials:
        print(f"order line, {t.calls} calls: p99 {t.p99_ms:.1f} ms, "
              f"{t.rss_per_call_kib:.0f} KiB/call, {t.agent_audio_s or 0:.1f} s agent audio/call")
    rows = [[t.calls, t.frames, t.p50_ms, t.p99_ms, t.max_ms, t.rss_per_call_kib,
             t.agent_audio_s, t.warnings] for t in trials]
    body = "\n### Concurrent order-line calls per worker process\n\n"
    body += markdown_table(
        ["calls", "frames", "p50 lateness ms", "p99 lateness ms", "max ms", "KiB per call",
         "agent audio s per call", "non-fatal errors"],
        rows,
    )
    covered = ("the greeting, the price question, its tool call and the caller barging in "
               "on the answer" if seconds >= 13 else "the greeting and the caller's first question")
    split = _split_cores()
    cores = (f"the worker process pinned to core {min(split[0])}, the server to core(s) "
             f"{', '.join(map(str, sorted(split[1])))}" if split
             else "worker and server sharing the one core")
    body += (
        f"\n\nProbe: `orderline_call_probe`: each call a worker job (memory queue, one worker "
        "process) running the real `pipelines/call.yaml` (simulated caller, resample, vad, "
        "realtime, tools, callbacks, transcript, jsonl and wav sinks, paced in real time) "
        "with its own output folder and SQLite order database, the calls starting spread "
        f"over the first second. Each call runs the first {seconds:g} s of the ~80 s call "
        f"({covered}), then its pipeline is cancelled and shuts down. "
        "The model is one local Realtime server "
        "(`pipeflow realtime-server` playing `pipelines/orderline/script.yaml`: espeak-ng "
        f"speech, pocketsphinx ASR) in its own process for all calls, {cores}. "
        "Lateness is measured on the caller's audio right after the `vad` stage (caller -> "
        "resample 16->24 kHz -> vad -> meter): each frame against the call's schedule for the "
        "caller frame it was made from, from the moment the caller's line started (so the "
        "resampler's block buffering, 20-40 ms of algorithmic delay, is not counted, and "
        "connecting to the model before the line starts is call setup). The caller's "
        "lines are synthesised once per process and shared by the calls (in production "
        "the caller's audio comes from the network). Agent audio per call: seconds of "
        "model audio each call received in its window; it falls when the one model server "
        "falls behind, which lightens the worker's load, so read the capacity with it. "
        "Non-fatal errors: errors the pipelines reported and went on from (such as the "
        "server's 'no active response' when a barge-in's cancel arrives after the answer "
        f"ended). Result: {_verdict(best, trials)}. Each trial runs in a fresh process; "
        "memory per call is that process's RSS growth at the peak divided by the calls.\n"
    )
    return body, {"best": vars(best) if best else None, "trials": [vars(t) for t in trials],
                  "probe": "orderline_call_probe", "seconds": seconds}


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
        seconds = 3.0 if args.quick else 5.0
        text, data["calls"] = await _tone_calls(args.probe or DEFAULT_PROBE, seconds,
                                                custom=bool(args.probe))
        body += text
        if not args.probe:
            text, data["orderline_calls"] = await _orderline_calls(args.quick)
            body += text
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
    parser.add_argument("--pool", action="store_true",
                        help="only the process pool's figures (their own section)")
    parser.add_argument("--trial", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        probe = _load_probe(args.probe or DEFAULT_PROBE)
        stats = asyncio.run(probe(args.trial, args.seconds))  # type: ignore[arg-type]
        print(json.dumps(vars(stats)))
        return
    asyncio.run(_run_pool(args) if args.pool else _run(args))


if __name__ == "__main__":
    main()
