"""The in-process queue: the default, for one worker in one process.

Nothing survives the process, so there is no visibility timeout: a job is
either waiting, held by a worker of this process, or settled. It keeps the
same contract as the Redis queue (idempotency keys, hand-back, cancel,
attempts and dead letters), so code written against it moves to Redis
unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from pipeflow.worker.queues.base import (
    KEY_RELEASING_STATES,
    Delivery,
    Job,
    JobState,
    JobStatus,
    QueueStats,
)

__all__ = ["MemoryQueue"]


class MemoryQueue:
    """An asyncio queue of jobs with statuses kept in a dict.

    Args:
        max_attempts: deliveries after which a job goes to the dead letters.
    """

    def __init__(self, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts
        self._waiting: deque[Job] = deque()
        self._ready = asyncio.Event()
        self._held: dict[str, Delivery] = {}
        self._statuses: dict[str, JobStatus] = {}
        self._done_keys: dict[str, str] = {}
        self._key_holders: dict[str, Job] = {}  # idempotency key -> the job that holds it
        self._cancel: set[str] = set()
        self.dead: list[tuple[Job, str]] = []

    async def submit(self, job: Job) -> Job:
        """Enqueue ``job``; a job already holding its key is returned instead."""
        holder = self._key_holders.get(job.idempotency_key)
        if holder is not None and self._statuses[holder.id].state not in KEY_RELEASING_STATES:
            return holder
        self._key_holders[job.idempotency_key] = job
        self._statuses[job.id] = JobStatus(
            id=job.id, state="queued", attempts=job.attempts, submitted_at=job.submitted_at
        )
        self._waiting.append(job)
        self._ready.set()
        return job

    async def take(self, consumer: str, timeout: float = 1.0) -> Delivery | None:
        """The next waiting job, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            while self._waiting:
                job = self._waiting.popleft()
                delivery = self._deliver(job, consumer)
                if delivery is not None:
                    return delivery
            self._ready.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._ready.wait(), left)
            except TimeoutError:
                return None

    def _deliver(self, job: Job, consumer: str) -> Delivery | None:
        status = self._statuses[job.id]
        if job.id in self._cancel:
            self._cancel.discard(job.id)
            self._settle(status, "cancelled", error="cancelled before it started")
            return None
        first = self._done_keys.get(job.idempotency_key)
        if first is not None:
            # Completed under its key by another job: settle it with that result.
            self._settle(status, "completed", result=self._statuses[first].result)
            status.duplicate_of = first
            return None
        attempt = job.attempts + 1
        status.attempts = attempt
        if attempt > self.max_attempts:
            self.dead.append((job, f"delivered {job.attempts} times without finishing"))
            self._settle(status, "dead", error=f"gave up after {job.attempts} attempts")
            return None
        status.state = "running"
        status.worker = consumer
        status.started_at = time.time()
        delivery = Delivery(job=job, attempt=attempt, token=job.id, consumer=consumer)
        self._held[job.id] = delivery
        return delivery

    def _settle(
        self, status: JobStatus, state: JobState, result: Any = None, error: str = ""
    ) -> None:
        status.state = state
        status.result = result
        status.error = error
        status.finished_at = time.time()

    async def complete(self, delivery: Delivery, result: Any = None) -> bool:
        """Record success once per idempotency key."""
        self._held.pop(delivery.job.id, None)
        key = delivery.job.idempotency_key
        if key in self._done_keys:
            return False
        self._done_keys[key] = delivery.job.id
        self._settle(self._statuses[delivery.job.id], "completed", result=result)
        return True

    async def fail(self, delivery: Delivery, error: str, state: JobState = "failed") -> None:
        """Record a final failure."""
        self._held.pop(delivery.job.id, None)
        self._cancel.discard(delivery.job.id)
        self._settle(self._statuses[delivery.job.id], state, error=error)

    async def requeue(self, delivery: Delivery) -> None:
        """Put the job back at the front of the line, its attempt counted."""
        self._held.pop(delivery.job.id, None)
        job = delivery.job
        again = Job(
            id=job.id,
            entry=job.entry,
            params=job.params,
            key=job.key,
            attempts=delivery.attempt,
            submitted_at=job.submitted_at,
        )
        status = self._statuses[job.id]
        status.state = "queued"
        status.worker = ""
        self._waiting.appendleft(again)
        self._ready.set()

    async def touch(self, deliveries: list[Delivery]) -> None:
        """Nothing to extend: held jobs never time out in one process."""

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a waiting job now; flag a running one for its worker."""
        status = self._statuses.get(job_id)
        if status is None or status.final:
            return status
        if status.state == "queued":
            for job in list(self._waiting):
                if job.id == job_id:
                    self._waiting.remove(job)
                    self._settle(status, "cancelled", error="cancelled before it started")
                    return status
        self._cancel.add(job_id)
        return status

    async def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Running jobs flagged by ``cancel``."""
        return self._cancel.intersection(job_ids)

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None."""
        return self._statuses.get(job_id)

    async def stats(self) -> QueueStats:
        """Waiting, held and dead counts."""
        return QueueStats(waiting=len(self._waiting), running=len(self._held), dead=len(self.dead))

    async def annotate(self, job_id: str, note: str, worker: str = "") -> None:
        """Add ``note`` to the job's record (only while ``worker`` holds it, if given)."""
        status = self._statuses.get(job_id)
        if status is not None and (not worker or status.worker == worker):
            status.notes.append(note)

    def held(self) -> list[Delivery]:
        """The jobs taken and not settled, with who holds each (the pool reclaims by it)."""
        return list(self._held.values())

    async def close(self) -> None:
        """Nothing to release."""
