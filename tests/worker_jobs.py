"""Job entry points for the worker tests (``tests.worker_jobs:NAME``).

``record`` is the job of the multi-process tests: it marks itself running
in Redis (per worker process), sleeps briefly, then records its completion
under its idempotency key, so a test can check that every job completed
exactly once across workers that die.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio as aioredis

from pipeflow.job import JobContext

_clients: dict[str, aioredis.Redis] = {}


def _client(url: str) -> aioredis.Redis:
    if url not in _clients:
        _clients[url] = aioredis.Redis.from_url(url)
    return _clients[url]


async def record(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``params['sleep']`` s, then count one completion of this job's key."""
    redis = _client(ctx.params["redis"])
    ns = ctx.params["ns"]
    pid = os.getpid()
    await redis.incr(f"{ns}:running:{pid}")
    try:
        await asyncio.sleep(float(ctx.params.get("sleep", 0.02)))
        await redis.hincrby(f"{ns}:runs", ctx.info["key"], 1)
    finally:
        await redis.decr(f"{ns}:running:{pid}")
    return {"pid": pid, "attempt": ctx.info["attempt"]}


async def echo(ctx: JobContext) -> dict[str, Any]:
    """Return the job's parameters (a trivial job for benchmarks and CLI tests)."""
    return dict(ctx.params)


async def wait_forever(ctx: JobContext) -> None:
    """Never finish on its own (for cancel, timeout and drain tests)."""
    await asyncio.Event().wait()


def not_async(ctx: JobContext) -> str:
    """A plain function is allowed: its return value is the result."""
    return f"sync {ctx.job_id}"


NOT_CALLABLE = 42


async def nap(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``params['sleep']`` s without blocking; return this process's pid."""
    await asyncio.sleep(float(ctx.params.get("sleep", 0.05)))
    return {"pid": os.getpid(), "attempt": ctx.info["attempt"]}


async def block_loop(ctx: JobContext) -> str:
    """Hold the event loop with ``time.sleep`` (the bug a watchdog is for)."""
    time.sleep(float(ctx.params.get("sleep", 1.0)))
    return "woke"


def sync_sleep(ctx: JobContext) -> str:
    """A blocking plain function: it runs in a thread, so only it waits."""
    time.sleep(float(ctx.params.get("sleep", 1.0)))
    return "slept"


async def block_in_subtask(ctx: JobContext) -> str:
    """Block the loop from a task the job started (as a pipeline stage's task would)."""

    async def stage() -> None:
        time.sleep(float(ctx.params.get("sleep", 1.0)))

    await ctx.start_task(stage(), name="some-stage")
    return "woke"


async def tone_recording(ctx: JobContext) -> dict[str, Any]:
    """Run the pipeline ``params['pipeline']`` (a paced tone into a jsonl sink)."""
    result = await ctx.run_pipeline(ctx.params["pipeline"])
    return {"pid": os.getpid(), "attempt": ctx.info["attempt"], "ok": result.ok}
