"""The event-loop watchdog: notices a blocked loop, says what blocked it.

A job that calls ``time.sleep`` or spins in pure Python holds the event
loop, and with it every other job of the process: no frame, no heartbeat,
no timeout fires. The loop cannot watch itself, so the watch is split:

- a tick coroutine on the loop stamps ``last_tick`` every ``interval``
  seconds and records how late each tick woke (the loop lag histogram);
- a thread reads the stamp. While the loop is stalled it can still look:
  ``sys._current_frames()`` gives the main thread's stack and
  ``asyncio.current_task(loop)`` the task being stepped; a task factory
  (``track_job_tasks``) remembers which job each task was started for
  (``pipeflow.job.current_job_id``), so a pipeline stage's task that blocks
  is charged to its job.

``LoopWatch`` is the decision, free of I/O and clocks (``now`` is passed
in): a stall over ``lag_threshold`` for longer than ``grace`` makes the
process unhealthy (it takes no new jobs); a stall over ``hard_limit``, or a
job past its deadline while it blocks the loop, asks for the process to be
killed. Recovery is automatic: once ticks come on time the process is
healthy again.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "LoopWatch", "Verdict", "WatchState", "Watchdog", "main_thread_stack", "track_job_tasks",
]

WatchState = Literal["ok", "unhealthy", "timeout", "kill"]


@dataclass
class Verdict:
    """What the watch concluded at one look."""

    state: WatchState
    stall: float = 0.0
    """Seconds since the loop last ticked."""
    reason: str = ""
    job_id: str = ""
    """The job whose task was running when the loop stalled (empty: none)."""
    stack: str = ""


@dataclass
class LoopWatch:
    """Decides, from tick stamps and job deadlines, how the loop is doing.

    Args:
        lag_threshold: a stall longer than this counts as blocked.
        grace: how long it must stay blocked before the process is unhealthy.
        hard_limit: a stall this long asks for the process to be killed (0: never).
        interval: the tick period (a tick is due every ``interval`` s).
    """

    lag_threshold: float = 0.25
    grace: float = 1.0
    hard_limit: float = 30.0
    interval: float = 0.05
    state: WatchState = "ok"
    trips: int = 0
    """Times the process went unhealthy."""
    last: Verdict = field(default_factory=lambda: Verdict("ok"))

    def look(
        self,
        now: float,
        last_tick: float,
        job_id: str = "",
        deadlines: Mapping[str, float] | None = None,
        stack: Callable[[], str] = lambda: "",
    ) -> Verdict:
        """Judge the loop at ``now`` given when it last ticked.

        Args:
            now: the monotonic time of this look.
            last_tick: monotonic time of the loop's last tick.
            job_id: the job whose task the loop is running, if any.
            deadlines: job id -> monotonic time its ``job_timeout`` ends.
            stack: called for the blocked thread's stack (only when needed).
        """
        stall = max(now - last_tick - self.interval, 0.0)
        if stall <= self.lag_threshold:
            self.state = "ok"
            self.last = Verdict("ok", stall)
            return self.last
        deadline = (deadlines or {}).get(job_id) if job_id else None
        where = f" in job {job_id}" if job_id else ""
        if deadline is not None and now > deadline:
            verdict = Verdict("timeout", stall, f"job {job_id} passed its timeout while blocking "
                              f"the event loop for {stall:.1f} s", job_id, stack())
        elif self.hard_limit and stall >= self.hard_limit:
            verdict = Verdict("kill", stall, f"event loop blocked for {stall:.1f} s{where}, past "
                              f"the hard limit of {self.hard_limit:g} s", job_id, stack())
        elif stall >= self.lag_threshold + self.grace:
            verdict = Verdict("unhealthy", stall, f"event loop blocked for {stall:.1f} s{where} "
                              f"(over {self.lag_threshold:g} s for more than {self.grace:g} s)",
                              job_id, stack())
        else:  # blocked, but still within the grace period: nothing new to say yet
            if self.state == "ok":
                self.last = Verdict("ok", stall)
            else:
                self.last.stall = stall
            return self.last
        if self.state == "ok":
            self.trips += 1
        self.state = verdict.state
        self.last = verdict
        return verdict


_job_of_task: weakref.WeakKeyDictionary[asyncio.Task[object], str] = (
    weakref.WeakKeyDictionary())


def track_job_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` remember, for each task, the job (``current_job_id``) it was started in."""
    from pipeflow.job import current_job_id

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[object, object, object],
                **kwargs: object) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]
        context = kwargs.get("context")
        job = context.get(current_job_id) if context is not None else current_job_id.get()  # type: ignore[attr-defined]
        if job:
            _job_of_task[task] = job
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]


def main_thread_stack(limit: int = 12) -> str:
    """The main thread's current stack, innermost call last (readable from any thread)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None:
        return ""
    return "".join(traceback.format_stack(frame, limit=limit))


class Watchdog:
    """Runs a ``LoopWatch`` against a loop: the tick task and the watching thread.

    Args:
        watch: the decision rules.
        loop: the loop to watch (the running one).
        on_verdict: called in the watchdog thread after every look
            (every ``period`` s) with the verdict; keep it short and thread-safe.
        deadlines: returns job id -> monotonic deadline (read from the thread).
        on_lag: called on the loop with each tick's lateness (for a histogram).
        period: seconds between looks.
    """

    def __init__(
        self,
        watch: LoopWatch,
        loop: asyncio.AbstractEventLoop,
        on_verdict: Callable[[Verdict], None],
        deadlines: Callable[[], Mapping[str, float]] = dict,
        on_lag: Callable[[float], None] | None = None,
        period: float = 0.1,
    ) -> None:
        self.watch = watch
        self.loop = loop
        self.on_verdict = on_verdict
        self.deadlines = deadlines
        self.on_lag = on_lag
        self.period = period
        self.last_tick = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pipeflow-watchdog", daemon=True)
        self._tick_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the tick task (on the loop) and the thread."""
        self.last_tick = time.monotonic()
        self._tick_task = self.loop.create_task(self._tick(), name="watchdog-tick")
        self._thread.start()

    async def stop(self) -> None:
        """Stop both."""
        self._stop.set()
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
        await asyncio.to_thread(self._thread.join, 2.0)

    async def _tick(self) -> None:
        interval = self.watch.interval
        while True:
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.last_tick = now
            if self.on_lag is not None:
                self.on_lag(max(now - due, 0.0))

    def _current_job(self) -> str:
        try:
            task = asyncio.current_task(self.loop)
        except RuntimeError:
            return ""
        if task is None:
            return ""
        name = task.get_name()
        if name.startswith("job-"):
            return name[4:]
        return _job_of_task.get(task, "")

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            try:
                deadlines = dict(self.deadlines())
            except RuntimeError:  # changed while copied; the loop is running, not stalled
                deadlines = {}
            verdict = self.watch.look(time.monotonic(), self.last_tick, self._current_job(),
                                      deadlines, main_thread_stack)
            self.on_verdict(verdict)
