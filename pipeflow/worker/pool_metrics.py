"""The pool's ``/metrics``: its own figures plus every process's, merged.

Each process keeps its ``WorkerMetrics`` (jobs, durations, loop lag) and
sends a snapshot with every report (so a scrape sees figures up to one
``report_interval`` old); the supervisor serves them all in one
exposition, each series labelled with the ``process`` slot and ``pid``, so
``sum without (process, pid) (...)`` gives the pool's figure and the
per-process series show which one is in trouble. A replaced process's
counters start again from zero under its new ``pid`` (Prometheus' ``rate``
handles the reset). The supervisor adds what only it knows: restarts,
reclaimed jobs, watchdog trips, and each process's health and memory, which
come from the watchdog thread and so stay current while a loop is blocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from pipeflow.worker.pool import Pool

__all__ = ["PoolMetrics"]


class _Processes:
    """A collector reading the pool's children at scrape time."""

    def __init__(self, pool: Pool, agent: str) -> None:
        self.pool = pool
        self.agent = agent

    def describe(self) -> list[Metric]:
        return []  # names vary with what the processes report; skip the registry's check

    def collect(self) -> Iterator[Metric]:
        labels = ["agent", "process", "pid"]
        healthy = GaugeMetricFamily(
            "pipeflow_process_healthy",
            "1 while a pool process takes jobs, 0 while blocked, draining or being replaced.",
            labels=labels)
        memory = GaugeMetricFamily("pipeflow_process_memory_bytes",
                                   "Resident memory of a pool process.", labels=labels)
        stall = GaugeMetricFamily(
            "pipeflow_process_loop_stall_seconds",
            "How long a pool process's event loop has gone without a tick right now.",
            labels=labels)
        merged: dict[str, Metric] = {}
        for child in sorted(self.pool._all(), key=lambda c: c.slot):
            values = [self.agent, str(child.slot), str(child.pid)]
            healthy.add_metric(values, 1.0 if child.ready else 0.0)
            memory.add_metric(values, float(child.watch.get("rss") or child.report.get("rss", 0)))
            stall.add_metric(values, float(child.watch.get("stall", 0.0)))
            extra = {"process": str(child.slot), "pid": str(child.pid)}
            for family in child.report.get("metrics", []):
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit)
                out.samples.extend(
                    Sample(s.name, {**s.labels, **extra}, s.value, s.timestamp, s.exemplar)
                    for s in family.samples)
        yield healthy
        yield memory
        yield stall
        yield from merged.values()


class PoolMetrics:
    """Counters of the supervisor, and the merged exposition of its processes.

    Args:
        agent: the agent name (a label on every series).
        pool: the pool whose processes are read at scrape time.
    """

    def __init__(self, agent: str, pool: Pool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.agent = agent
        self._processes = Gauge("pipeflow_pool_processes", "Worker processes alive in the pool.",
                                ["agent"], registry=r)
        self._restarts = Counter(
            "pipeflow_pool_restarts",
            "Pool processes replaced, by reason (died, timeout, watchdog, silent, recycle, "
            "killed).", ["agent", "reason"], registry=r)
        self._reclaimed = Counter(
            "pipeflow_pool_reclaimed_jobs",
            "Jobs of a dead pool process handed back to the queue (or to Redis' reclaim), by "
            "why the process died.", ["agent", "reason"], registry=r)
        self._trips = Counter(
            "pipeflow_watchdog_trips",
            "Times a pool process's event loop stayed blocked past lag_threshold + lag_grace.",
            ["agent", "process"], registry=r)
        r.register(_Processes(pool, agent))  # type: ignore[arg-type]

    def set_processes(self, n: int) -> None:
        """Processes alive now."""
        self._processes.labels(self.agent).set(n)

    def restart(self, reason: str) -> None:
        """A process was replaced for ``reason``."""
        self._restarts.labels(self.agent, reason).inc()

    def reclaimed(self, reason: str, count: int) -> None:
        """``count`` jobs of a process that died for ``reason`` were reclaimed."""
        self._reclaimed.labels(self.agent, reason).inc(count)

    def watchdog_trip(self, slot: int, count: int = 1) -> None:
        """The watchdog of process ``slot`` tripped ``count`` more times."""
        self._trips.labels(self.agent, str(slot)).inc(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of the pool and its processes."""
        return generate_latest(self.registry)
