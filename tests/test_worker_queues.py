"""The queue contract, run against the memory queue and the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from pipeflow.errors import ConfigError, RemoteError
from pipeflow.worker.queues import Job, Queue, open_queue
from pipeflow.worker.queues.memory import MemoryQueue
from pipeflow.worker.queues.redis import RedisQueue
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _redis_queue(**options: object) -> RedisQueue:
    require_service("Redis", "127.0.0.1", 6379)
    return RedisQueue(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:10]}", **options)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[Queue]:
    if request.param == "memory":
        yield MemoryQueue(max_attempts=2)
        return
    q = await _redis_queue(max_attempts=2, visibility_timeout=30)
    try:
        yield q
    finally:
        await q.delete_all()
        await q.close()


async def test_submit_take_complete(queue: Queue) -> None:
    job = await queue.submit(Job(entry="tests.worker_jobs:echo", params={"n": 1}))
    assert (await queue.status(job.id)).state == "queued"  # type: ignore[union-attr]
    delivery = await queue.take("w1", timeout=1)
    assert delivery is not None and delivery.job == job and delivery.attempt == 1
    status = await queue.status(job.id)
    assert status is not None and status.state == "running" and status.worker == "w1"
    assert (await queue.stats()).running == 1
    assert await queue.complete(delivery, {"ok": True}) is True
    status = await queue.status(job.id)
    assert status is not None and status.state == "completed" and status.result == {"ok": True}
    assert status.final and status.finished_at >= status.started_at > 0
    assert await queue.take("w1", timeout=0.05) is None
    stats = await queue.stats()
    assert (stats.waiting, stats.running) == (0, 0)


async def test_one_idempotency_key_completes_once(queue: Queue) -> None:
    first = await queue.submit(Job(key="order-42"))
    delivery = await queue.take("w1", timeout=1)
    assert delivery is not None and delivery.job.id == first.id
    assert await queue.complete(delivery, 1) is True
    # The same delivery completing again (a slow worker whose job was taken
    # over) is acknowledged, not recorded.
    assert await queue.complete(delivery, 2) is False
    status = await queue.status(first.id)
    assert status is not None and status.state == "completed" and status.result == 1


@pytest.mark.parametrize("first_state", ["queued", "running", "completed"])
async def test_a_reused_key_returns_the_first_job(queue: Queue, first_state: str) -> None:
    first = await queue.submit(Job(key="order-7", params={"n": 1}))
    if first_state != "queued":
        delivery = await queue.take("w1", timeout=1)
        assert delivery is not None
        if first_state == "completed":
            await queue.complete(delivery, {"total": 12.5})
    again = await queue.submit(Job(key="order-7", params={"n": 2}))
    assert again.id == first.id and again.params == {"n": 1}
    status = await queue.status(again.id)
    assert status is not None and status.state == first_state
    if first_state == "completed":
        assert status.result == {"total": 12.5}
    # Nothing new was enqueued: no job waits that no worker will run.
    assert (await queue.stats()).waiting == (1 if first_state == "queued" else 0)
    if first_state != "queued":
        assert await queue.take("w2", timeout=0.05) is None


@pytest.mark.parametrize("end", ["failed", "cancelled"])
async def test_a_key_whose_job_failed_is_free_for_a_retry(queue: Queue, end: str) -> None:
    first = await queue.submit(Job(key="order-9"))
    if end == "failed":
        delivery = await queue.take("w1", timeout=1)
        assert delivery is not None
        await queue.fail(delivery, "RuntimeError: boom")
    else:
        await queue.cancel(first.id)
    retry = await queue.submit(Job(key="order-9"))
    assert retry.id != first.id
    delivery = await queue.take("w1", timeout=1)
    assert delivery is not None and delivery.job.id == retry.id
    assert await queue.complete(delivery, "ok") is True
    assert (await queue.status(retry.id)).result == "ok"  # type: ignore[union-attr]


async def test_a_job_left_waiting_after_its_key_completed_settles_as_a_duplicate() -> None:
    # Two jobs under one key can only both be waiting when the submit-time
    # record is gone (expired); the second must end, never stay queued.
    q = MemoryQueue()
    first = await q.submit(Job(key="k"))
    q._key_holders.clear()
    second = await q.submit(Job(key="k"))
    delivery = await q.take("w1", timeout=1)
    assert delivery is not None and delivery.job.id == first.id
    await q.complete(delivery, [1, 2])
    assert await q.take("w1", timeout=0.05) is None
    status = await q.status(second.id)
    assert status is not None and status.state == "completed"
    assert (status.result, status.duplicate_of) == ([1, 2], first.id)


async def test_redis_job_left_waiting_after_its_key_completed_settles_as_a_duplicate() -> None:
    q = await _redis_queue()
    try:
        first = await q.submit(Job(key="k"))
        await q.redis.delete(q.claim_key("k"))
        second = await q.submit(Job(key="k"))
        delivery = await q.take("w1", timeout=1)
        assert delivery is not None and delivery.job.id == first.id
        await q.complete(delivery, [1, 2])
        assert await q.take("w1", timeout=0.05) is None
        status = await q.status(second.id)
        assert status is not None and status.state == "completed"
        assert (status.result, status.duplicate_of) == ([1, 2], first.id)
    finally:
        await q.delete_all()
        await q.close()


async def test_fail_is_final_and_keeps_the_error(queue: Queue) -> None:
    job = await queue.submit(Job())
    delivery = await queue.take("w1", timeout=1)
    assert delivery is not None
    await queue.fail(delivery, "RuntimeError: boom")
    status = await queue.status(job.id)
    assert status is not None and status.state == "failed" and status.error == "RuntimeError: boom"
    assert await queue.take("w1", timeout=0.05) is None


async def test_requeue_counts_the_attempt_and_dead_letters_after_the_limit(queue: Queue) -> None:
    job = await queue.submit(Job())
    first = await queue.take("w1", timeout=1)
    assert first is not None and first.attempt == 1
    await queue.requeue(first)
    assert (await queue.status(job.id)).state == "queued"  # type: ignore[union-attr]
    second = await queue.take("w2", timeout=1)
    assert second is not None and second.job.id == job.id and second.attempt == 2
    await queue.requeue(second)
    assert await queue.take("w1", timeout=0.05) is None  # max_attempts=2: dead-lettered
    status = await queue.status(job.id)
    assert status is not None and status.state == "dead" and "2 attempts" in status.error
    assert (await queue.stats()).dead == 1


async def test_cancel_a_waiting_job_and_flag_a_running_one(queue: Queue) -> None:
    waiting = await queue.submit(Job())
    status = await queue.cancel(waiting.id)
    assert status is not None and status.state == "cancelled"
    running = await queue.submit(Job())
    delivery = await queue.take("w1", timeout=1)
    assert delivery is not None and delivery.job.id == running.id
    await queue.cancel(running.id)
    assert await queue.cancel_requested([running.id, "other"]) == {running.id}
    await queue.fail(delivery, "cancelled", "cancelled")
    assert (await queue.status(running.id)).state == "cancelled"  # type: ignore[union-attr]
    assert await queue.cancel_requested([running.id]) == set()
    assert await queue.cancel("no-such-job") is None


async def test_take_waits_for_a_submit(queue: Queue) -> None:
    taker = asyncio.ensure_future(queue.take("w1", timeout=5))
    await asyncio.sleep(0)  # let the taker block first
    job = await queue.submit(Job())
    delivery = await taker
    assert delivery is not None and delivery.job.id == job.id


async def test_redis_reclaims_a_job_whose_worker_went_silent() -> None:
    queue = await _redis_queue(visibility_timeout=0.2, max_attempts=3)
    try:
        job = await queue.submit(Job())
        lost = await queue.take("dead-worker", timeout=1)
        assert lost is not None and not lost.reclaimed
        assert await queue.take("alive", timeout=0.05) is None  # not idle long enough yet
        delivery = await queue.take("alive", timeout=2)
        assert delivery is not None and delivery.job.id == job.id
        assert delivery.reclaimed and delivery.attempt == 2
        assert (await queue.status(job.id)).worker == "alive"  # type: ignore[union-attr]
        assert await queue.complete(delivery) is True
        assert await queue.complete(lost) is False  # the zombie's late completion is a duplicate
    finally:
        await queue.delete_all()
        await queue.close()


async def test_redis_dead_letters_a_job_whose_workers_keep_dying() -> None:
    queue = await _redis_queue(visibility_timeout=0.1, max_attempts=2)
    try:
        job = await queue.submit(Job(params={"n": 1}))
        first = await queue.take("dies-first", timeout=1)
        assert first is not None and first.attempt == 1
        second = await queue.take("dies-second", timeout=1)  # XAUTOCLAIM after 0.1 s idle
        assert second is not None and second.reclaimed and second.attempt == 2
        assert await queue.take("third", timeout=0.5) is None  # third delivery: dead letter
        status = await queue.status(job.id)
        assert status is not None and status.state == "dead" and status.attempts == 2
        [(_id, fields)] = await queue.redis.xrange(queue.dead_stream)
        assert b'"n":1' in fields[b"job"]
        assert fields[b"reason"] == b"delivered 2 times without finishing"
        stats = await queue.stats()
        assert (stats.waiting, stats.running, stats.dead) == (0, 0, 1)
    finally:
        await queue.delete_all()
        await queue.close()


async def test_redis_heartbeat_keeps_a_held_job() -> None:
    queue = await _redis_queue(visibility_timeout=0.3)
    try:
        await queue.submit(Job())
        held = await queue.take("busy", timeout=1)
        assert held is not None
        for _ in range(4):  # 0.4 s in all, past the visibility timeout, with heartbeats
            await asyncio.sleep(0.1)
            await queue.touch([held])
        assert await queue.take("other", timeout=0.05) is None
    finally:
        await queue.delete_all()
        await queue.close()


async def test_redis_dead_letters_an_undecodable_entry() -> None:
    queue = await _redis_queue()
    try:
        await queue._ensure_group()
        await queue.redis.xadd(queue.stream, {"job": b"not json"})
        assert await queue.take("w", timeout=0.1) is None
        assert await queue.redis.xlen(queue.dead_stream) == 1
    finally:
        await queue.delete_all()
        await queue.close()


async def test_unreachable_redis_is_a_remote_error() -> None:
    queue = RedisQueue("redis://:secretpw@127.0.0.1:1/0", prefix="nowhere")
    with pytest.raises(RemoteError, match=r"cannot reach Redis at redis://:\*\*\*@127.0.0.1:1/0"):
        await queue.submit(Job())
    await queue.close()


def test_open_queue_by_url() -> None:
    assert isinstance(open_queue("memory://"), MemoryQueue)
    assert isinstance(open_queue(""), MemoryQueue)
    assert isinstance(open_queue(REDIS_URL, prefix="x"), RedisQueue)
    with pytest.raises(ConfigError, match="scheme 'amqp' is not supported"):
        open_queue("amqp://localhost")
