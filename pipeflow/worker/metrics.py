"""Prometheus metrics of one worker, in a registry of its own.

Each ``WorkerMetrics`` owns a ``CollectorRegistry`` (not the global one), so
several workers can live in one process (tests, benchmarks) without their
figures mixing. ``/metrics`` serves ``render()``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "WorkerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# A call lasts seconds to many minutes; trivial jobs milliseconds.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
# Frame lateness and latencies: a 20 ms frame budget is what matters.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Event-loop lag: a few ms is normal, 20 ms costs audio, seconds mean a blocking job.
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """Counters, gauges and histograms a worker updates as jobs run.

    Args:
        agent: the agent name, a constant label on every series.
    """

    def __init__(self, agent: str = "agent") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["agent"]
        r = self.registry
        self._running = Gauge("pipeflow_jobs_running", "Jobs running now.", labels, registry=r)
        self._capacity = Gauge(
            "pipeflow_jobs_capacity", "Most jobs this worker runs at once.", labels, registry=r
        )
        self._finished = Counter(
            "pipeflow_jobs_finished",
            "Jobs finished, by outcome (completed, failed, cancelled, handed_back, duplicate).",
            [*labels, "outcome"],
            registry=r,
        )
        self._completed = Counter(
            "pipeflow_jobs_completed", "Jobs completed.", labels, registry=r
        )
        self._failed = Counter(
            "pipeflow_jobs_failed", "Jobs failed (raised or timed out).", labels, registry=r
        )
        self._lag = Gauge(
            "pipeflow_queue_lag_jobs", "Jobs waiting in the queue, not yet taken.", labels,
            registry=r,
        )
        self._wait = Histogram(
            "pipeflow_job_wait_seconds", "Time from submit to start.", labels,
            buckets=DURATION_BUCKETS, registry=r,
        )
        self._duration = Histogram(
            "pipeflow_job_duration_seconds", "Run time of finished jobs.", labels,
            buckets=DURATION_BUCKETS, registry=r,
        )
        self._latency = Histogram(
            "pipeflow_frame_latency_seconds",
            "Latency samples jobs report (frame lateness, first audio out...).",
            [*labels, "name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._loop_lag = Histogram(
            "pipeflow_loop_lag_seconds",
            "How late the event loop's watchdog ticks woke (a blocked loop shows here).",
            labels, buckets=LOOP_LAG_BUCKETS, registry=r,
        )
        self.agent = agent
        self._loop_lag_a = self._loop_lag.labels(agent)
        self._running_now = self._running.labels(agent)
        self._capacity_now = self._capacity.labels(agent)
        self._lag_now = self._lag.labels(agent)
        self._wait_a = self._wait.labels(agent)
        self._duration_a = self._duration.labels(agent)
        self._completed_a = self._completed.labels(agent)
        self._failed_a = self._failed.labels(agent)

    def set_capacity(self, max_jobs: int) -> None:
        """Record the worker's concurrency bound."""
        self._capacity_now.set(max_jobs)

    def job_started(self, waited: float) -> None:
        """A job started after ``waited`` seconds in the queue."""
        self._running_now.inc()
        self._wait_a.observe(max(waited, 0.0))

    def job_finished(self, outcome: str, duration: float) -> None:
        """A job ended with ``outcome`` after ``duration`` seconds."""
        self._running_now.dec()
        self._finished.labels(self.agent, outcome).inc()
        if outcome == "completed":
            self._completed_a.inc()
        elif outcome == "failed":
            self._failed_a.inc()
        self._duration_a.observe(duration)

    def observe_latency(self, name: str, seconds: float) -> None:
        """One latency sample a job reported."""
        self._latency.labels(self.agent, name).observe(seconds)

    def observe_loop_lag(self, seconds: float) -> None:
        """One event-loop tick woke ``seconds`` late."""
        self._loop_lag_a.observe(seconds)

    def set_queue_lag(self, waiting: int) -> None:
        """Jobs waiting in the queue now."""
        self._lag_now.set(waiting)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
