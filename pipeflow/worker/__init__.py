"""Workers: take jobs from a queue and run one pipeline (or entry point) per job.

- ``options``: ``WorkerOptions`` and how they load (file < environment < flags).
- ``queues``: where jobs wait (``memory`` in-process, ``redis`` Streams).
- ``runner``: the ``Worker`` (bounded concurrency, timeouts, cancel, drain).
- ``health``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.
- ``logs``: the JSON log formatter of ``pipeflow start``.
"""

from pipeflow.worker.options import WorkerOptions, load_options
from pipeflow.worker.queues import Delivery, Job, JobStatus, Queue, open_queue
from pipeflow.worker.runner import Worker

__all__ = [
    "Delivery",
    "Job",
    "JobStatus",
    "Queue",
    "Worker",
    "WorkerOptions",
    "load_options",
    "open_queue",
]
