"""Workers: take jobs from a queue and run one pipeline (or entry point) per job.

- ``options``: ``WorkerOptions`` and how they load (file < environment < flags).
- ``queues``: where jobs wait (``memory`` in-process, ``redis`` Streams).
- ``runner``: the ``Worker`` (bounded concurrency, timeouts, cancel, drain).
- ``pool``: the ``Pool``: a supervisor over worker processes (``process``),
  talking to each over a pipe (``channel``), merging their metrics
  (``pool_metrics``); ``watchdog`` catches a blocked event loop.
- ``health``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.
- ``logs``: the JSON log formatter of ``pipeflow start``.
"""

from pipeflow.worker.options import WorkerOptions, load_options
from pipeflow.worker.pool import Pool
from pipeflow.worker.queues import Delivery, Job, JobStatus, Queue, open_queue
from pipeflow.worker.runner import Worker

__all__ = [
    "Delivery",
    "Job",
    "JobStatus",
    "Pool",
    "Queue",
    "Worker",
    "WorkerOptions",
    "load_options",
    "open_queue",
]
