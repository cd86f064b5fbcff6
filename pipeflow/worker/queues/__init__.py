"""Queue backends: ``memory`` (in-process, the default) and ``redis`` (Streams)."""

from __future__ import annotations

from typing import Any

from pipeflow.errors import ConfigError
from pipeflow.worker.queues.base import (
    FINAL_STATES,
    Delivery,
    Job,
    JobState,
    JobStatus,
    Queue,
    QueueStats,
    new_job_id,
)

__all__ = [
    "FINAL_STATES",
    "Delivery",
    "Job",
    "JobState",
    "JobStatus",
    "Queue",
    "QueueStats",
    "new_job_id",
    "open_queue",
]


def open_queue(url: str = "memory://", **options: Any) -> Queue:
    """The queue backend a URL names.

    Args:
        url: ``memory://`` (or empty) for the in-process queue;
            ``redis://``, ``rediss://`` or ``unix://`` for Redis Streams.
        options: backend options (``agent``, ``prefix``, ``visibility_timeout``,
            ``max_attempts``, ``result_ttl``); the memory queue uses only
            ``max_attempts``.

    Raises:
        ConfigError: the URL names no known backend.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme in ("", "memory"):
        from pipeflow.worker.queues.memory import MemoryQueue

        return MemoryQueue(max_attempts=options.get("max_attempts", 3))
    if scheme in ("redis", "rediss", "unix"):
        from pipeflow.worker.queues.redis import RedisQueue

        return RedisQueue(url, **options)
    raise ConfigError(
        f"queue URL scheme {scheme!r} is not supported; "
        "use memory:// (in-process) or redis://host:port/db"
    )
