"""The worker pool: one supervisor, a process per core, many jobs per process.

Hundreds of calls share one event loop cheaply, but one job that blocks
that loop (``time.sleep``, a CPU-bound loop, a sync driver called from async
code) stalls every call of the process and no asyncio timeout can fire. The
pool keeps the many-calls-per-process design and adds what one process
cannot do for itself:

- **Supervision.** ``processes`` worker processes (``process.child_main``)
  each run a ``Worker``. A process that dies is started again (with a
  back-off when it dies at once, so a broken entry point does not spin).
- **Reclaim.** With the memory queue the supervisor owns the queue and
  serves it to its processes over their pipes, so it knows which process
  holds which job: a dead process's jobs go back to the queue at once. With
  Redis, a dead process's jobs are taken over by the consumer group's
  reclaim (``XAUTOCLAIM`` after ``visibility_timeout``). Either way the
  job's record gets a note of what happened.
- **Blocked loops.** Each process runs a watchdog (``watchdog.py``) whose
  verdict arrives here from its thread even while the loop is stuck. A
  stall past ``lag_threshold`` for ``lag_grace`` pauses the process (no new
  jobs; ``/readyz`` shows why, with the stack); past ``lag_kill`` the
  supervisor kills it and its jobs are reclaimed.
- **Timeouts for blocking code.** A job past ``job_timeout`` while it holds
  the loop cannot be cancelled (cancelling needs the loop). The watchdog
  sees which job's code is running (its task or one it started) and that
  its deadline passed; the
  supervisor then kills the process, records that job as failed ("timed
  out ... while blocking the event loop") and hands the process's other
  jobs back so they run again elsewhere. A sync entry point or tool runs in
  a thread and is cancelled at its timeout like any async job.
- **Recycling.** A process past ``recycle_jobs`` jobs or
  ``recycle_memory_mb`` stops taking jobs, lets every running one finish
  (no call is cut off) and exits; its replacement starts at once.
- **One face.** One health server and one ``/metrics`` for the pool: the
  processes' figures are merged with ``process`` and ``pid`` labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import msgspec

from pipeflow.worker.channel import Channel, serve_call
from pipeflow.worker.options import WorkerOptions
from pipeflow.worker.pool_metrics import PoolMetrics
from pipeflow.worker.process import ChildSpec
from pipeflow.worker.queues import Delivery, Queue, open_queue
from pipeflow.worker.queues.memory import MemoryQueue
from pipeflow.worker.queues.redis import RedisQueue

__all__ = ["Child", "Pool"]

log = logging.getLogger("pipeflow.worker")

START_GRACE = 30.0
"""Seconds a new process may take to start (import, connect) before it must report."""


@dataclass
class Child:
    """What the supervisor knows of one worker process."""

    slot: int
    process: subprocess.Popen[bytes]
    channel: Channel
    started: float
    last_heard: float
    report: dict[str, Any] = field(default_factory=dict)
    """The process's last report from its loop (state, held jobs, metrics)."""
    watch: dict[str, Any] = field(default_factory=dict)
    """The watchdog's last verdict (from its thread)."""
    last_trip: dict[str, Any] = field(default_factory=dict)
    consumers: set[str] = field(default_factory=set)
    trips: int = 0
    kill: tuple[str, str] | None = None
    """(restart reason, what happened) once the supervisor decided to kill it."""
    failed: Delivery | None = None
    """The job to record as failed when it dies (it timed out while blocking)."""
    recycling: str = ""
    stopping: bool = False
    dead: bool = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def ready(self) -> bool:
        """Whether it takes jobs now, by its report and the watchdog's fresher word."""
        if self.dead or self.recycling or self.kill or self.watch.get("state", "ok") != "ok":
            return False
        return bool(self.report.get("ready"))

    @property
    def reason(self) -> str:
        """Why it does not take jobs (or 'accepting jobs')."""
        if self.kill:
            return f"being replaced: {self.kill[1]}"
        if self.recycling:
            return f"recycling: {self.recycling}"
        if self.watch.get("state", "ok") != "ok":
            return f"watchdog: {self.watch.get('reason', '')}"
        return str(self.report.get("reason", "starting"))


class Pool:
    """Runs ``options.processes`` worker processes under one supervisor.

    Args:
        options: the workers' options (every process gets the same).
        json_logs: processes log JSON lines (``pipeflow start``).
        report_interval: seconds between a process's reports.

    Attributes:
        queue: the supervisor's queue: the one the processes share when it
            is the memory queue (submit jobs to it), else a connection of
            its own to Redis (for records and failures).
        size: processes kept running.
        state: ``idle``, ``running``, ``draining`` or ``stopped``.
    """

    def __init__(
        self, options: WorkerOptions, *, json_logs: bool = False, report_interval: float = 0.25
    ) -> None:
        self.options = options
        self.size = options.processes or _cores()
        self.queue: Queue = open_queue(options.queue_url, **options.queue_options())
        self.memory = isinstance(self.queue, MemoryQueue)
        self.id = f"{socket.gethostname()}-{os.getpid()}-pool-{uuid.uuid4().hex[:6]}"
        self.json_logs = json_logs
        self.report_interval = report_interval
        self.metrics = PoolMetrics(options.agent_name, self)
        self.children: dict[int, Child] = {}
        self.leaving: list[Child] = []
        self.state: Literal["idle", "running", "draining", "stopped"] = "idle"
        self.events: deque[str] = deque(maxlen=50)
        self.restarts = 0
        self.reclaimed = 0
        self._due: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._calls: set[asyncio.Task[None]] = set()

    # --- control ------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Drain every process (each hands back what ``drain_timeout`` leaves), then stop.

        A second call, while draining, asks the processes to hand back now.
        """
        if self._stop.is_set():
            for child in self._all():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
            return
        log.info("pool %s stopping: %s", self.id, reason)
        self._stop_reason = reason
        self._stop.set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Stop on SIGTERM or SIGINT; returns a function that removes the handlers."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop, f"received {sig.name}")
                installed.append(sig)

        def remove() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return remove

    def kill(self, slot: int, reason: str = "killed on request") -> bool:
        """SIGKILL the process in ``slot`` (its jobs are reclaimed); False if none."""
        child = self.children.get(slot)
        if child is None or child.dead:
            return False
        self._kill(child, "killed", reason)
        return True

    async def run(self) -> None:
        """Start the processes and keep them running until ``stop()``, then drain."""
        if self.state != "idle":
            raise RuntimeError("a Pool runs once; make a new one")
        self.state = "running"
        log.info("pool %s: %d processes x %d jobs, queue %s", self.id, self.size,
                 self.options.max_jobs, type(self.queue).__name__)
        try:
            for slot in range(self.size):
                self._spawn(slot)
            while not self._stop.is_set():
                await self._check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
            await self._drain()
        finally:
            for child in self._all():
                if child.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                    child.process.wait(5)
                child.channel.close()
            for task in list(self._calls):
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            self.state = "stopped"
            log.info("pool %s stopped (%d restarts, %d jobs reclaimed)", self.id,
                     self.restarts, self.reclaimed)

    # --- processes ----------------------------------------------------------

    def _all(self) -> list[Child]:
        return [*self.children.values(), *self.leaving]

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        spec = ChildSpec(slot, msgspec.to_builtins(self.options), os.getcwd(), self.json_logs,
                         self.report_interval)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", "from pipeflow.worker.process import main; main()",
                 str(theirs.fileno())],
                pass_fds=[theirs.fileno()], cwd=os.getcwd(),
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send(spec)
        now = time.monotonic()
        child = Child(slot, process, Channel(conn), now, now + START_GRACE)
        child.channel.attach(asyncio.get_running_loop(),
                             lambda message: self._on_message(child, message), lambda: None)
        self.children[slot] = child
        self._due.pop(slot, None)
        self.metrics.set_processes(len(self._all()))
        log.info("process %d starting (pid %d)", slot, child.pid)

    def _on_message(self, child: Child, message: tuple[Any, ...]) -> None:
        child.last_heard = time.monotonic()
        kind = message[0]
        if kind == "call":
            _, call_id, method, args = message
            if method == "take":
                child.consumers.add(args[0])
            task = asyncio.get_running_loop().create_task(
                self._serve(child, call_id, method, args))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        elif kind == "report":
            child.report = message[2]
        elif kind == "watch":
            self._on_watch(child, message[2])
        elif kind == "recycle":
            self._on_recycle(child, message[2])

    async def _serve(self, child: Child, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        ok, value = await serve_call(self.queue, method, args)
        sent = not child.dead and child.channel.send(("reply", call_id, ok, value))
        if method == "take" and ok and value is not None and not sent:
            # Taken for a process that died meanwhile: back to the queue, unless its
            # death already put it there.
            held = self.queue.held() if isinstance(self.queue, MemoryQueue) else []
            if any(d is value for d in held):
                await self._hand_back(value, f"its worker process {child.slot} (pid "
                                             f"{child.pid}) died before it started")

    def _on_watch(self, child: Child, watch: dict[str, Any]) -> None:
        child.watch = watch
        if watch["trips"] > child.trips:
            self.metrics.watchdog_trip(child.slot, watch["trips"] - child.trips)
            child.trips = watch["trips"]
        if watch["state"] != "ok":
            child.last_trip = {**watch, "at": time.time()}
            child.last_trip.pop("delivery", None)
        if watch["state"] == "timeout" and not child.kill:
            held: Delivery | None = watch.get("delivery")
            self._kill(child, "timeout", f"was killed: {watch['reason']}{_where(watch['stack'])}",
                       failed=held)
        elif watch["state"] == "kill" and not child.kill:
            self._kill(child, "watchdog",
                       f"was killed by the watchdog: {watch['reason']}{_where(watch['stack'])}")

    def _on_recycle(self, child: Child, reason: str) -> None:
        if self.children.get(child.slot) is not child or self._stop.is_set():
            return
        log.info("process %d (pid %d) recycling: %s", child.slot, child.pid, reason)
        child.recycling = reason
        del self.children[child.slot]
        self.leaving.append(child)
        self._count_restart("recycle", f"process {child.slot} (pid {child.pid}) {reason}")
        self._spawn(child.slot)

    def _kill(self, child: Child, label: str, text: str, failed: Delivery | None = None) -> None:
        child.kill = (label, text)
        child.failed = failed
        log.warning("killing process %d (pid %d): %s", child.slot, child.pid, text)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    def _count_restart(self, reason: str, text: str) -> None:
        self.restarts += 1
        self.metrics.restart(reason)
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")

    async def _check(self) -> None:
        now = time.monotonic()
        for child in self._all():
            if child.process.poll() is not None:
                await self._reap(child)
            elif (not child.kill and self.options.lag_kill
                  and now - child.last_heard > max(self.options.lag_kill, 1.0) + 1.0):
                self._kill(child, "silent", f"stopped answering for "
                           f"{now - child.last_heard:.1f} s (not even its watchdog thread)")
        if not self._stop.is_set():
            for slot in range(self.size):
                if slot not in self.children and now >= self._due.setdefault(slot, now):
                    self._spawn(slot)

    async def _reap(self, child: Child) -> None:
        child.dead = True
        child.channel.close()
        code = child.process.returncode or 0
        if child in self.leaving:
            self.leaving.remove(child)
        elif self.children.get(child.slot) is child:
            del self.children[child.slot]
        self.metrics.set_processes(len(self._all()))
        # SIGTERM before its worker set up its handlers (a stop right after a start): no jobs.
        clean = code in (0, -signal.SIGTERM) and child.kill is None and (
            bool(child.recycling) or child.stopping or self._stop.is_set())
        if clean:
            log.info("process %d (pid %d) exited", child.slot, child.pid)
            return
        label, text = child.kill or ("died", _exit_text(code))
        log.warning("process %d (pid %d) %s", child.slot, child.pid, text)
        self._count_restart(label, f"process {child.slot} (pid {child.pid}) {text}")
        await self._reclaim(child, label, text)
        if not child.recycling and not self._stop.is_set():
            quick = time.monotonic() - child.started < 2.0 and child.kill is None
            failures = self._failures.get(child.slot, 0) + 1 if quick else 0
            self._failures[child.slot] = failures
            self._due[child.slot] = time.monotonic() + (min(0.5 * 2 ** failures, 10.0)
                                                        if failures else 0.0)

    async def _reclaim(self, child: Child, label: str, text: str) -> None:
        """Settle what the dead process held: fail the job that timed out, reclaim the rest."""
        who = f"worker process {child.slot} (pid {child.pid})"
        failed_id = child.failed.job.id if child.failed is not None else ""
        if isinstance(self.queue, MemoryQueue):
            held = [d for d in self.queue.held() if d.consumer in child.consumers]
        else:  # Redis knows exactly what the dead consumer had taken
            held = []
            consumer = child.report.get("worker_id", "")
            if consumer and isinstance(self.queue, RedisQueue):
                held = await self.queue.held_by(consumer)
            if child.failed is not None and all(d.job.id != failed_id for d in held):
                held.append(child.failed)
        count = 0
        for delivery in held:
            job_id = delivery.job.id
            if job_id == failed_id:
                error = (f"timed out after {self.options.job_timeout:g} s while blocking the "
                         f"event loop; its {who} was killed and its other jobs run elsewhere"
                         f"{_where(child.watch.get('stack', ''))}")
                await self.queue.annotate(job_id, f"attempt {delivery.attempt}: {who} {text}")
                await self.queue.fail(delivery, error)
                continue
            count += 1
            if self.memory:
                await self._hand_back(delivery, f"its {who} {text}")
            else:
                await self.queue.annotate(
                    job_id, f"attempt {delivery.attempt}: its {who} {text}; another worker "
                            "takes it over after visibility_timeout", worker=delivery.consumer)
        if count:
            self.reclaimed += count
            self.metrics.reclaimed(label, count)
            log.warning("%d jobs of %s reclaimed", count, who)

    async def _hand_back(self, delivery: Delivery, why: str) -> None:
        await self.queue.annotate(delivery.job.id,
                                  f"attempt {delivery.attempt}: {why}; handed back to run again")
        await self.queue.requeue(delivery)

    async def _drain(self) -> None:
        self.state = "draining"
        for child in self._all():
            child.stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.drain_timeout + 15.0
        while self._all() and time.monotonic() < deadline:
            for child in self._all():
                if child.process.poll() is not None:
                    await self._reap(child)
            await asyncio.sleep(0.05)
        for child in self._all():
            self._kill(child, "killed", "did not stop in time after SIGTERM")
            await asyncio.to_thread(child.process.wait, 5)
            await self._reap(child)

    # --- health -------------------------------------------------------------

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """``(alive, ready, body)`` for ``/healthz`` and ``/readyz``."""
        processes = [self._describe(c) for c in sorted(self._all(), key=lambda c: c.slot)]
        current = [c for c in self.children.values() if not c.dead]
        ready_n = sum(1 for c in current if c.ready)
        alive = self.state in ("running", "draining")
        ready = self.state == "running" and ready_n > 0
        trouble = [f"process {c.slot}: {c.reason}" for c in current if not c.ready]
        if self.state != "running":
            reason = f"pool is {self.state}"
        elif ready:
            reason = f"{ready_n} of {self.size} processes accept jobs"
        else:
            reason = "no process accepts jobs"
        if trouble and self.state == "running":
            reason += "; " + "; ".join(trouble)
        running = sum(int(c.report.get("running", 0)) for c in self._all())
        capacity = self.size * self.options.max_jobs
        counts: dict[str, int] = {}
        for c in self._all():
            for key, n in c.report.get("counts", {}).items():
                counts[key] = counts.get(key, 0) + n
        return alive, ready, {
            "worker": self.id, "agent": self.options.agent_name, "state": self.state,
            "ready": ready, "reason": reason, "running": running, "max_jobs": capacity,
            "load": round(running / capacity, 4) if capacity else 0.0,
            "load_threshold": self.options.load_threshold, "counts": counts,
            "processes": processes, "restarts": self.restarts, "reclaimed": self.reclaimed,
            "events": list(self.events),
        }

    def _describe(self, child: Child) -> dict[str, Any]:
        watch = child.watch
        return {
            "process": child.slot, "pid": child.pid, "ready": child.ready,
            "reason": child.reason, "state": child.report.get("state", "starting"),
            "running": child.report.get("running", 0), "max_jobs": self.options.max_jobs,
            "counts": child.report.get("counts", {}),
            "memory_bytes": watch.get("rss") or child.report.get("rss", 0),
            "recycling": child.recycling,
            "watchdog": {
                "state": watch.get("state", "ok"), "stall_s": round(watch.get("stall", 0.0), 3),
                "reason": watch.get("reason", ""), "job_id": watch.get("job_id", ""),
                "stack": watch.get("stack", ""), "trips": child.trips,
                "last_trip": child.last_trip,
            },
        }


def _cores() -> int:
    """Cores this process may run on (its affinity mask, so a cpuset is respected)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"died ({name})"
    return f"died (exit code {code})"


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _where(stack: str) -> str:
    """' at file:line in function' for the innermost frame of a formatted stack."""
    frames = _FRAME.findall(stack or "")
    if not frames:
        return ""
    path, line, function = frames[-1]
    return f" (at {path}:{line} in {function})"
