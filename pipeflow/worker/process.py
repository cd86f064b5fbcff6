"""One process of the worker pool: a ``Worker`` with its watchdog, reporting home.

Started by the supervisor (``pool.Pool``) as a fresh interpreter
(``python -c 'from pipeflow.worker.process import main; main()' FD``, the
pipe's socket passed as FD: nothing of the parent's state is inherited and,
unlike ``multiprocessing``'s spawn, the parent's ``__main__`` is not run
again), it runs a ``Worker`` on its own event loop, many jobs at once, and tells
the supervisor over its pipe how it is doing: a report from the loop every
``report_interval`` seconds (state, running jobs, memory, its metrics) and the
watchdog's verdict from the watchdog thread every tenth of a second, which
keeps coming while the loop is blocked. The supervisor decides kills and
replacements; this side only pauses itself when the loop is blocked and
drains itself when it is due for recycling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from pipeflow.worker.channel import Channel, PipeQueue
from pipeflow.worker.options import WorkerOptions
from pipeflow.worker.runner import Worker
from pipeflow.worker.watchdog import LoopWatch, Verdict, Watchdog, track_job_tasks

__all__ = ["ChildSpec", "child_main", "main", "recycle_reason", "rss_bytes"]

log = logging.getLogger("pipeflow.worker")


@dataclass
class ChildSpec:
    """What a pool process needs to start (pickled to it)."""

    slot: int
    options: dict[str, Any]
    cwd: str
    json_logs: bool = False
    report_interval: float = 0.25


def rss_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _die_with_parent() -> None:
    """Ask Linux to kill this process if the supervisor dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def main() -> None:
    """Entry of a pool process: read its ``ChildSpec`` from the pipe FD in argv, run."""
    conn = Connection(int(sys.argv[1]))
    child_main(conn.recv(), conn)


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """The process's main function: run the worker until it stops, then exit."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the supervisor decides
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # stopped before any job: just go
    from pipeflow.asr.process import decode_in_processes
    from pipeflow.worker.logs import setup_logging

    decode_in_processes()  # jobs' local servers decode off this process's event loop

    options = msgspec.convert(spec.options, WorkerOptions)
    setup_logging(options.log_level, json=spec.json_logs)
    if spec.cwd not in sys.path:
        sys.path.insert(0, spec.cwd)
    code = asyncio.run(_run(spec, options, Channel(conn)))
    logging.shutdown()
    os._exit(code)  # threads still in a blocking sync call must not hold the exit


async def _run(spec: ChildSpec, options: WorkerOptions, channel: Channel) -> int:
    loop = asyncio.get_running_loop()
    # Sync entry points and tools run here; a blocking one holds a thread, not the loop.
    loop.set_default_executor(ThreadPoolExecutor(
        max_workers=max(32, 2 * options.max_jobs), thread_name_prefix="pipeflow-sync"))
    track_job_tasks(loop)  # a blocking stage task is charged to its job
    memory = options.queue_url in ("", "memory://") or options.queue_url.startswith("memory")
    pipe_queue = PipeQueue(channel) if memory else None
    worker = Worker(options, pipe_queue, poll_interval=0.2 if memory else 1.0)

    def on_message(message: tuple[Any, ...]) -> None:
        if message[0] == "reply" and pipe_queue is not None:
            pipe_queue.on_reply(*message[1:])

    def on_close() -> None:  # the supervisor is gone: hand jobs back, leave soon
        if pipe_queue is not None:
            pipe_queue.lost()
        worker.stop("the pool supervisor is gone")
        worker._hand_back_all()
        loop.call_later(5.0, os._exit, 1)

    channel.attach(loop, on_message, on_close)
    watch = LoopWatch(options.lag_threshold, options.lag_grace, options.lag_kill)

    def on_verdict(verdict: Verdict) -> None:  # in the watchdog thread
        blocked = verdict.state != "ok"
        if blocked and not worker.paused:
            worker.pause(f"watchdog: {verdict.reason}")
        elif not blocked and worker.paused.startswith("watchdog:"):
            worker.resume()
        held = worker._running.get(verdict.job_id) if verdict.job_id else None
        channel.send(("watch", spec.slot, {
            "state": verdict.state, "stall": verdict.stall, "reason": verdict.reason,
            "job_id": verdict.job_id, "stack": verdict.stack, "trips": watch.trips,
            "rss": rss_bytes(), "delivery": held.delivery if held is not None else None,
        }))

    watchdog = Watchdog(watch, loop, on_verdict, worker.deadlines, worker.metrics.observe_loop_lag)
    remove_handlers = worker.install_signal_handlers()
    watchdog.start()
    reporter = loop.create_task(_report(spec, options, worker, channel))
    try:
        await worker.run()
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        _send_report(spec, worker, channel)
        await watchdog.stop()
        remove_handlers()
        if pipe_queue is None:
            await worker.queue.close()
        channel.close()
    return 0


def _send_report(spec: ChildSpec, worker: Worker, channel: Channel) -> None:
    ready, reason = worker.readiness()
    channel.send(("report", spec.slot, {
        "pid": os.getpid(), "worker_id": worker.id, "state": worker.state, "ready": ready,
        "reason": reason, "running": worker.running, "max_jobs": worker.options.max_jobs,
        "counts": dict(worker.counts), "rss": rss_bytes(),
        "metrics": list(worker.metrics.registry.collect()),
    }))


async def _report(spec: ChildSpec, options: WorkerOptions, worker: Worker,
                  channel: Channel) -> None:
    recycling = False
    while True:
        _send_report(spec, worker, channel)
        if not recycling:
            why = recycle_reason(options, worker)
            if why:
                recycling = True
                channel.send(("recycle", spec.slot, why))
                worker.stop(f"recycling: {why}", wait_for_jobs=True)
        await asyncio.sleep(spec.report_interval)


def recycle_reason(options: WorkerOptions, worker: Worker) -> str:
    """Why this process should drain and be replaced now ('' while it need not)."""
    done = sum(worker.counts.values())
    if options.recycle_jobs and done >= options.recycle_jobs:
        return f"ran {done} jobs (recycle_jobs {options.recycle_jobs})"
    if options.recycle_memory_mb:
        rss = rss_bytes() / 2**20
        if rss > options.recycle_memory_mb:
            return f"uses {rss:.0f} MiB (recycle_memory_mb {options.recycle_memory_mb:g})"
    return ""
