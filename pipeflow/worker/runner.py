"""The Worker: takes jobs from a queue and runs each in its own task.

One asyncio task per job, each with its own ``JobContext``; a semaphore of
``max_jobs`` slots bounds how many run at once (a job is taken from the
queue only once a slot is free, so a busy worker leaves jobs to the others).
A job that raises or times out is recorded as failed with its error and the
worker goes on. ``stop()`` (SIGTERM, SIGINT) drains: no new jobs are taken,
running ones get ``drain_timeout`` seconds to finish, then they are
cancelled and handed back to the queue for another worker.

A synchronous entry point runs in a thread (``call_function``), so a blocking one
stalls only itself; ``sync_on_loop`` keeps it on the loop. A process that
the watchdog finds blocked is ``pause``d: it takes no new jobs until
``resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from pipeflow.errors import ConfigError, PipeflowError
from pipeflow.job import JobContext, call_function, current_job_id
from pipeflow.worker.metrics import WorkerMetrics
from pipeflow.worker.options import WorkerOptions
from pipeflow.worker.queues import Delivery, Queue, open_queue

__all__ = ["EntryPoint", "JobOutcome", "Worker", "resolve_entry"]

log = logging.getLogger("pipeflow.worker")

EntryPoint = Callable[[JobContext], Awaitable[Any] | Any]
Outcome = Literal["completed", "failed", "cancelled", "handed_back", "duplicate"]


@dataclass
class JobOutcome:
    """How one job ended in this worker."""

    job_id: str
    outcome: Outcome
    duration: float
    error: str = ""
    attempt: int = 1


@dataclass
class _Running:
    delivery: Delivery
    ctx: JobContext
    task: asyncio.Task[None]
    started: float
    deadline: float = float("inf")
    stop_reason: Outcome | None = None
    settling: bool = False


def resolve_entry(entry: str) -> EntryPoint:
    """The callable a job entry point names.

    ``entry`` is a pipeline file (``.yaml``/``.yml``, checked now) or a
    ``module:function`` reference to ``async def f(ctx: JobContext)``.

    Raises:
        ConfigError: no entry point, a missing or invalid file, or a
            reference that does not import or is not callable.
    """
    if not entry:
        raise ConfigError(
            "no entry point: set 'entry' (a pipeline YAML file or 'module:function') "
            "in the worker options or on the job"
        )
    if entry.endswith((".yaml", ".yml")) or (":" not in entry and Path(entry).exists()):
        from pipeflow.config import load_config

        load_config(entry)  # fail now, not in every job
        return _pipeline_entry(entry)
    from pipeflow.registry import import_ref

    function = import_ref(entry, "job entry point")
    if not callable(function):
        raise ConfigError(
            f"job entry point {entry!r} is a {type(function).__name__}, not a function "
            "taking a JobContext"
        )
    return function  # type: ignore[no-any-return]


def _pipeline_entry(path: str) -> EntryPoint:
    async def run(ctx: JobContext) -> dict[str, Any]:
        result = await ctx.run_pipeline(path)
        if not result.ok:
            messages = "; ".join(f"{e.stage}: {e.message}" for e in result.errors if e.fatal)
            raise PipelineFailed(messages or "the pipeline was cancelled")
        return {
            "pipeline": result.name,
            "duration": result.duration,
            "frames_out": result.frames_out,
            "errors": [e.message for e in result.errors],
        }

    run.__qualname__ = f"pipeline {path}"
    return run


class PipelineFailed(PipeflowError):
    """A job's pipeline ended with a fatal error."""


class Worker:
    """Runs jobs from ``queue`` under ``options``.

    Args:
        options: the worker's options (``max_jobs``, ``job_timeout``...).
        queue: where jobs come from; opened from ``options.queue_url`` when None.
        entry: the default entry point as a callable (overrides ``options.entry``).
        metrics: where figures go; a fresh ``WorkerMetrics`` when None.
        poll_interval: longest wait for a job before re-checking for a stop.

    Attributes:
        id: this worker's consumer name (host, pid and a random suffix).
        state: ``idle``, ``running``, ``draining`` or ``stopped``.
        outcomes: the most recent job outcomes (newest last).
    """

    def __init__(
        self,
        options: WorkerOptions | None = None,
        queue: Queue | None = None,
        *,
        entry: EntryPoint | None = None,
        metrics: WorkerMetrics | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.options = options or WorkerOptions()
        self.queue: Queue = queue or open_queue(
            self.options.queue_url, **self.options.queue_options()
        )
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.metrics = metrics or WorkerMetrics(self.options.agent_name)
        self.metrics.set_capacity(self.options.max_jobs)
        self.poll_interval = poll_interval
        self.state: Literal["idle", "running", "draining", "stopped"] = "idle"
        self.outcomes: deque[JobOutcome] = deque(maxlen=1000)
        self.counts: dict[str, int] = dict.fromkeys(
            ("completed", "failed", "cancelled", "handed_back", "duplicate"), 0
        )
        self._default_entry = entry
        self._entries: dict[str, EntryPoint] = {}
        self._slots = asyncio.Semaphore(self.options.max_jobs)
        self._running: dict[str, _Running] = {}
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._until_idle = False
        self._drain_all = False
        self.paused = ""
        """Why the worker takes no new jobs for now ('': it takes them)."""

    # --- state --------------------------------------------------------------

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._running)

    @property
    def running_ids(self) -> list[str]:
        """Ids of the jobs running now."""
        return list(self._running)

    @property
    def load(self) -> float:
        """Running jobs as a fraction of ``max_jobs``."""
        return len(self._running) / self.options.max_jobs

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker accepts jobs now, and why not when it does not."""
        if self.state in ("draining", "stopped"):
            return False, f"worker is {self.state}"
        if self.state == "idle":
            return False, "worker has not started"
        if self.paused:
            return False, self.paused
        if len(self._running) >= self.options.max_jobs:
            return False, f"all {self.options.max_jobs} job slots are busy"
        if self.load > self.options.load_threshold:
            return False, (
                f"load {self.load:.2f} is above the threshold {self.options.load_threshold:.2f}"
            )
        return True, "accepting jobs"

    def entry_for(self, name: str) -> EntryPoint:
        """The entry point a job names ('' for the worker's own), resolved once."""
        if not name and self._default_entry is not None:
            return self._default_entry
        key = name or self.options.entry
        if key not in self._entries:
            self._entries[key] = resolve_entry(key)
        return self._entries[key]

    def forget_entries(self) -> None:
        """Drop resolved entry points so the next jobs resolve them again (reload)."""
        self._entries.clear()

    # --- control ------------------------------------------------------------

    def stop(self, reason: str = "stop requested", *, wait_for_jobs: bool = False) -> None:
        """Stop taking jobs and drain (idempotent; safe from a signal handler).

        Args:
            reason: logged, and shown by ``/readyz``.
            wait_for_jobs: wait for every running job to end on its own (each
                still bounded by ``job_timeout``) instead of handing back what
                is left after ``drain_timeout``: recycling cuts no call off.
        """
        if not self._stop.is_set():
            log.info("worker %s draining: %s", self.id, reason)
            self._stop_reason = reason
            self._drain_all = wait_for_jobs
            self._stop.set()

    def pause(self, reason: str) -> None:
        """Take no new jobs until ``resume`` (running ones go on)."""
        self.paused = reason

    def resume(self) -> None:
        """Take jobs again after ``pause``."""
        self.paused = ""

    def deadlines(self) -> dict[str, float]:
        """Job id -> monotonic time its ``job_timeout`` ends (read by the watchdog thread)."""
        return {job_id: r.deadline for job_id, r in list(self._running.items())}

    def cancel(self, job_id: str) -> bool:
        """Cancel a job running here; it is recorded as cancelled. False if not here."""
        running = self._running.get(job_id)
        if running is None or running.settling or running.task.done():
            return False
        running.stop_reason = running.stop_reason or "cancelled"
        running.task.cancel()
        return True

    def install_signal_handlers(self) -> Callable[[], None]:
        """Drain on SIGTERM or SIGINT; a second signal hands running jobs back now.

        Returns:
            A function that removes the handlers again.
        """
        loop = asyncio.get_running_loop()
        installed = []

        def on_signal(name: str) -> None:
            if self._stop.is_set():
                log.warning("second %s: handing running jobs back now", name)
                self._hand_back_all()
            self.stop(f"received {name}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)

        def remove() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return remove

    def _hand_back_all(self) -> None:
        for running in self._running.values():
            if not running.settling and not running.task.done():
                running.stop_reason = running.stop_reason or "handed_back"
                running.task.cancel()

    # --- main loop ----------------------------------------------------------

    async def run(self, until_idle: bool = False) -> None:
        """Take and run jobs until ``stop()``, then drain.

        Args:
            until_idle: also stop once the queue is empty and no job runs
                (tests, benchmarks, batch runs).
        """
        if self.state != "idle":
            raise RuntimeError("a Worker runs once; make a new one")
        self.state = "running"
        self._until_idle = until_idle
        log.info("worker %s started (%d slots, queue %s)", self.id, self.options.max_jobs,
                 type(self.queue).__name__)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat())
        try:
            await self._take_loop()
            await self._drain()
        except asyncio.CancelledError:
            self._hand_back_all()
            await self._wait_jobs()
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.state = "stopped"
            log.info("worker %s stopped: %s", self.id, self.counts)

    async def _take_loop(self) -> None:
        while not self._stop.is_set():
            if self.paused:
                await asyncio.sleep(min(self.poll_interval, 0.05))
                continue
            if not await self._acquire_slot():
                return
            try:
                delivery = await self.queue.take(self.id, timeout=self.poll_interval)
            except BaseException:
                self._slots.release()
                raise
            if delivery is None:
                self._slots.release()
                if self._until_idle and not self._running:
                    self.stop("queue is empty")
                continue
            if self._stop.is_set():
                self._slots.release()
                await self.queue.requeue(delivery)
                return
            self._start(delivery)

    async def _acquire_slot(self) -> bool:
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if acquire.done() and not acquire.cancelled():
            if self._stop.is_set():
                self._slots.release()
                return False
            return True
        return False

    def _start(self, delivery: Delivery) -> None:
        job = delivery.job
        ctx = JobContext(
            job.id,
            job.params,
            info={
                "worker_id": self.id,
                "agent_name": self.options.agent_name,
                "attempt": delivery.attempt,
                "key": job.idempotency_key,
                "reclaimed": delivery.reclaimed,
                "entry": job.entry or self.options.entry,
                "server_url": self.options.server_url,
                "submitted_at": job.submitted_at,
            },
            secrets=self.options.secrets,
            on_metric=self.metrics.observe_latency,
        )
        self.metrics.job_started(time.time() - job.submitted_at)
        task = asyncio.get_running_loop().create_task(
            self._run_job(delivery, ctx), name=f"job-{job.id}"
        )
        now = time.monotonic()
        limit = self.options.job_timeout or float("inf")
        self._running[job.id] = _Running(delivery, ctx, task, now, deadline=now + limit)
        log.debug("job %s started (attempt %d%s)", job.id, delivery.attempt,
                  ", reclaimed" if delivery.reclaimed else "")

    async def _run_job(self, delivery: Delivery, ctx: JobContext) -> None:
        job = delivery.job
        started = time.monotonic()
        outcome: Outcome = "failed"
        error = ""
        result: Any = None
        timeout = self.options.job_timeout or None
        current_job_id.set(job.id)  # this task's context: tasks the job starts inherit it
        try:
            async with asyncio.timeout(timeout) as deadline:
                entry = self.entry_for(job.entry)
                value = await call_function(entry, ctx, on_loop=self.options.sync_on_loop)
            result = _storable(value)
            outcome = "completed"
        except asyncio.CancelledError:
            running = self._running.get(job.id)
            outcome = running.stop_reason if running and running.stop_reason else "cancelled"
            error = "handed back while draining" if outcome == "handed_back" else "cancelled"
        except TimeoutError:
            if deadline.expired():
                error = f"timed out after {self.options.job_timeout:g} s"
            else:
                error = "TimeoutError raised by the job"
        except PipeflowError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.debug("job %s failed", job.id, exc_info=exc)
        running = self._running.get(job.id)
        if running is not None:
            running.settling = True
        await ctx.shutdown(outcome)
        try:
            outcome = await self._settle(delivery, outcome, result, error)
        except Exception as exc:  # the queue is down: the job stays pending for a reclaim
            log.error("job %s: cannot record its outcome (%s): %s", job.id, outcome, exc)
        finally:
            duration = time.monotonic() - started
            self._running.pop(job.id, None)
            self._slots.release()
            self.counts[outcome] += 1
            self.metrics.job_finished(outcome, duration)
            self.outcomes.append(JobOutcome(job.id, outcome, duration, error, delivery.attempt))
            if error and outcome == "failed":
                log.warning("job %s failed: %s", job.id, error)

    async def _settle(
        self, delivery: Delivery, outcome: Outcome, result: Any, error: str
    ) -> Outcome:
        if outcome == "completed":
            first = await self.queue.complete(delivery, result)
            return "completed" if first else "duplicate"
        if outcome == "handed_back":
            await self.queue.requeue(delivery)
            return outcome
        await self.queue.fail(delivery, error, "cancelled" if outcome == "cancelled" else "failed")
        return outcome

    async def _heartbeat(self) -> None:
        """Keep held jobs fresh, act on cancel requests, refresh queue figures."""
        interval = min(max(self.options.visibility_timeout / 3, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                held = [r.delivery for r in self._running.values()]
                if held:
                    await self.queue.touch(held)
                    for job_id in await self.queue.cancel_requested([d.job.id for d in held]):
                        log.info("job %s: cancel requested", job_id)
                        self.cancel(job_id)
                stats = await self.queue.stats()
                self.metrics.set_queue_lag(stats.waiting)
            except Exception as exc:  # a queue hiccup must not stop the heartbeat
                log.warning("heartbeat: %s", exc)

    async def _drain(self) -> None:
        self.state = "draining"
        tasks = [r.task for r in self._running.values()]
        if tasks:
            limit = None if self._drain_all else self.options.drain_timeout
            log.info("waiting %s for %d running jobs to end",
                     "as long as it takes" if limit is None else f"up to {limit:g} s", len(tasks))
            await asyncio.wait(tasks, timeout=limit)
            self._hand_back_all()
        await self._wait_jobs()

    async def _wait_jobs(self) -> None:
        while self._running:
            await asyncio.gather(*[r.task for r in self._running.values()],
                                 return_exceptions=True)


def _storable(value: Any) -> Any:
    """The job's return value as plain data, or a clear error."""
    try:
        return msgspec.to_builtins(value)
    except TypeError as exc:
        raise ConfigError(
            f"the job returned a {type(value).__name__}, which cannot be stored as its "
            f"result ({exc}); return plain data (dict, list, str, numbers) or a msgspec Struct"
        ) from exc
