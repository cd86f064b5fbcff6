"""What a queue-depth autoscaler reads: the Redis figures KEDA's redis-streams
scaler uses, checked against the real Redis, and the documented ScaledObject."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import yaml

from pipeflow.worker import Job
from pipeflow.worker.queues.redis import GROUP, RedisQueue

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_scaled_object_names_the_real_stream_and_group() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "ScaledObject" in b)
    manifest = yaml.safe_load(block)
    assert manifest["apiVersion"] == "keda.sh/v1alpha1" and manifest["kind"] == "ScaledObject"
    trigger = manifest["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    queue = RedisQueue("redis://redis.internal:6379/0", agent="orderline")  # not connected
    assert trigger["metadata"]["stream"] == queue.stream
    assert trigger["metadata"]["consumerGroup"] == GROUP
    assert int(trigger["metadata"]["streamLength"]) == int(4 * 40 * 0.8)


async def test_stream_length_pending_and_lag_count_what_the_docs_say(redis_url: str) -> None:
    queue = RedisQueue(redis_url, prefix=f"test-scale-{uuid.uuid4().hex[:8]}")
    try:
        for i in range(10):
            await queue.submit(Job(params={"i": i}))
        taken = [await queue.take("w1", timeout=0.1) for _ in range(4)]
        assert all(d is not None for d in taken)
        await queue.complete(taken[0])  # type: ignore[arg-type]
        await queue.fail(taken[1], "broken")  # type: ignore[arg-type]
        await queue.requeue(taken[2])  # type: ignore[arg-type]
        stats = await queue.stats()
        assert (stats.waiting, stats.running) == (7, 1)
        assert await queue.redis.xlen(queue.stream) == stats.waiting + stats.running
        group = next(g for g in await queue.redis.xinfo_groups(queue.stream)
                     if g["name"] == GROUP.encode())
        assert group["pending"] == stats.running
        assert group["lag"] == stats.waiting
    finally:
        await queue.delete_all()
        await queue.close()
