"""The queue contract every backend keeps, and the records it moves.

Delivery is at least once: a job taken by a worker that dies is delivered
again (after a visibility timeout) to another worker. What makes that safe
is the job's idempotency ``key``: ``complete`` records it once and answers
False to any later completion of the same key, so a reclaimed job is never
completed twice.

A key also names one job at submit time: submitting a job whose key is held
by a job that is queued, running or completed returns that first job (its
id, and through ``status`` its result) and enqueues nothing, so a retried
submit never starts a second run and never leaves a job that no worker will
take. A key whose job failed, was cancelled or went to the dead letters is
free again: the next submit with it is a new job (a retry).

A job delivered more than ``max_attempts`` times goes to the dead letters
instead of running again.

Job states::

    queued -> running -> completed | failed | cancelled
       ^         |
       +---------+  handed back (drain) or reclaimed (worker died)
    running -> dead  (too many attempts)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "FINAL_STATES",
    "KEY_RELEASING_STATES",
    "Delivery",
    "Job",
    "JobState",
    "JobStatus",
    "Queue",
    "QueueStats",
    "new_job_id",
]

JobState = Literal["queued", "running", "completed", "failed", "cancelled", "dead"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "dead"})
KEY_RELEASING_STATES: frozenset[str] = frozenset({"failed", "cancelled", "dead"})
"""States in which a job no longer holds its idempotency key (a retry may take it)."""


def new_job_id() -> str:
    """A fresh, unique job id."""
    return uuid.uuid4().hex


class Job(msgspec.Struct, kw_only=True, frozen=True):
    """One unit of work: run an entry point with parameters."""

    id: str = msgspec.field(default_factory=new_job_id)
    """Unique job id (also the pipeline's session id)."""
    entry: str = ""
    """Pipeline YAML path or 'module:function'; empty: the worker's entry point."""
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    """Parameters handed to the job (``ctx.params``)."""
    key: str = ""
    """Idempotency key (default: the id): a job with this key completes at most once,
    and submitting it again while its job is queued, running or completed returns
    that job instead of a new one."""
    attempts: int = 0
    """Deliveries before this one (a handed-back job keeps its count)."""
    submitted_at: float = msgspec.field(default_factory=time.time)
    """Wall-clock submit time (epoch seconds), for queue-lag figures."""

    @property
    def idempotency_key(self) -> str:
        """The key completion is recorded under."""
        return self.key or self.id


class JobStatus(msgspec.Struct, kw_only=True):
    """What a queue knows about one job."""

    id: str
    state: JobState
    attempts: int = 0
    worker: str = ""
    result: Any = None
    error: str = ""
    submitted_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    notes: list[str] = msgspec.field(default_factory=list)
    """What happened to it on the way (its worker process died, was killed...)."""
    duplicate_of: str = ""
    """Id of the job that completed this key first, when this one was settled as
    its duplicate without running (it then carries that job's result)."""

    @property
    def final(self) -> bool:
        """True once the job will not run again."""
        return self.state in FINAL_STATES


@dataclass
class Delivery:
    """A job handed to one worker, with what the queue needs to settle it.

    Attributes:
        job: the job.
        attempt: 1 for the first delivery, 2 after one reclaim or hand-back...
        token: the backend's receipt (a stream entry id for Redis).
        taken_at: monotonic time it was taken.
        reclaimed: True when it was taken over from a worker that stopped
            answering.
        consumer: the worker that holds it.
    """

    job: Job
    attempt: int
    token: str = ""
    consumer: str = ""
    taken_at: float = field(default_factory=time.monotonic)
    reclaimed: bool = False


@dataclass
class QueueStats:
    """Load figures of a queue (for ``/metrics`` and ``/readyz``)."""

    waiting: int = 0
    """Jobs submitted and not yet taken by any worker (the queue lag)."""
    running: int = 0
    """Jobs taken and not settled (all workers)."""
    dead: int = 0
    """Jobs in the dead letters."""


@runtime_checkable
class Queue(Protocol):
    """Where jobs wait for workers. Every method is safe to call concurrently."""

    async def submit(self, job: Job) -> Job:
        """Enqueue ``job`` and return it; or, when its idempotency key is held by
        a queued, running or completed job, return that job and enqueue nothing."""
        ...

    async def take(self, consumer: str, timeout: float = 1.0) -> Delivery | None:
        """The next job for ``consumer``, waiting up to ``timeout`` seconds.

        Jobs already completed under their key, or cancelled while they
        waited, are settled here and never returned.
        """
        ...

    async def complete(self, delivery: Delivery, result: Any = None) -> bool:
        """Record success; False when the key had already completed (a duplicate)."""
        ...

    async def fail(self, delivery: Delivery, error: str, state: JobState = "failed") -> None:
        """Record a final failure (``failed`` or ``cancelled``) with its error."""
        ...

    async def requeue(self, delivery: Delivery) -> None:
        """Hand an unfinished job back so another worker takes it now."""
        ...

    async def touch(self, deliveries: list[Delivery]) -> None:
        """Tell the queue these jobs are still being worked on (heartbeat)."""
        ...

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Ask for a job to be cancelled (now if waiting, by its worker if running)."""
        ...

    async def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of these running jobs someone asked to cancel."""
        ...

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None when unknown (or expired)."""
        ...

    async def stats(self) -> QueueStats:
        """Current load figures."""
        ...

    async def annotate(self, job_id: str, note: str, worker: str = "") -> None:
        """Add ``note`` to the job's record (only while ``worker`` holds it, if given)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
