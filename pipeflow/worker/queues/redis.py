"""The Redis queue: Redis Streams consumer groups, for many workers on many machines.

Keys, all under ``{prefix}:{agent}``:

- ``:stream``: the jobs (``XADD`` to submit); consumer group ``workers``
  (``XREADGROUP`` to take, ``XACK`` + ``XDEL`` once settled).
- ``:dead``: dead letters, jobs delivered more than ``max_attempts`` times.
- ``:status:{id}``: one hash per job (state, attempts, worker, result, error).
- ``:done:{key}``: set once, when the job with idempotency key ``key``
  completes; a later completion of the same key is a duplicate.
- ``:key:{key}``: the id of the job that holds idempotency key ``key``, set
  at submit; a submit with a key held by a queued, running or completed job
  returns that job instead of adding one.
- ``:cancel``: ids of running jobs someone asked to cancel.

A worker that dies leaves its jobs pending in the group. Any live worker
takes them over with ``XAUTOCLAIM`` once they have been idle longer than the
visibility timeout; live workers keep their own jobs fresh with a heartbeat
(``XCLAIM ... JUSTID``, which resets the idle time without counting a
delivery). Every decision that reads then writes runs as one Lua script, so
two workers never both settle the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from pipeflow.errors import ConfigError, RemoteError
from pipeflow.worker.queues.base import Delivery, Job, JobState, JobStatus, QueueStats

__all__ = ["CONNECT_TIMEOUT_S", "RedisQueue"]

CONNECT_TIMEOUT_S = 10.0
"""Seconds the first command to Redis may take before the queue gives up."""

GROUP = "workers"

# KEYS: stream, status, done, dead, cancel
# ARGV: group, entry id, job id, attempt, max attempts, consumer, now, job json, ttl,
# status key prefix
_ADMIT = """
if redis.call('SISMEMBER', KEYS[5], ARGV[3]) == 1 then
  redis.call('SREM', KEYS[5], ARGV[3])
  redis.call('HSET', KEYS[2], 'state', 'cancelled', 'error', 'cancelled before it started',
             'finished_at', ARGV[7])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
  return 'cancelled'
end
local first = redis.call('GET', KEYS[3])
if first then
  -- Completed under its key by another job: settle this one with that result.
  local result = redis.call('HGET', ARGV[10] .. first, 'result') or 'null'
  redis.call('HSET', KEYS[2], 'state', 'completed', 'result', result, 'duplicate_of', first,
             'finished_at', ARGV[7])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
  return 'done'
end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'completed' or state == 'failed' or state == 'cancelled' or state == 'dead' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
  return 'settled'
end
if tonumber(ARGV[4]) > tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[4], '*', 'job', ARGV[8], 'reason',
             'delivered ' .. (tonumber(ARGV[4]) - 1) .. ' times without finishing')
  redis.call('HSET', KEYS[2], 'state', 'dead', 'attempts', tonumber(ARGV[4]) - 1,
             'error', 'gave up after ' .. (tonumber(ARGV[4]) - 1) .. ' attempts',
             'finished_at', ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[9])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
  return 'dead'
end
redis.call('HSET', KEYS[2], 'state', 'running', 'attempts', ARGV[4], 'worker', ARGV[6],
           'started_at', ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[9])
return 'ok'
"""

# KEYS: stream, status, done, claim ; ARGV: group, entry id, job id, result json, now, ttl
_COMPLETE = """
local first = 0
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[6]) then
  redis.call('HSET', KEYS[2], 'state', 'completed', 'result', ARGV[4], 'error', '',
             'finished_at', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[6])
  first = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
return first
"""

# KEYS: stream, status, done, cancel ; ARGV: group, entry id, job id, state, error, now
_FAIL = """
redis.call('SREM', KEYS[4], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[2], 'state', ARGV[4], 'error', ARGV[5], 'finished_at', ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, status ; ARGV: group, entry id, job json, attempts
_REQUEUE = """
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
redis.call('HSET', KEYS[2], 'state', 'queued', 'worker', '', 'entry', id, 'attempts', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2])
return id
"""

# KEYS: stream, status, cancel ; ARGV: job id, now
_CANCEL = """
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'queued' then
  local entry = redis.call('HGET', KEYS[2], 'entry')
  if entry then redis.call('XDEL', KEYS[1], entry) end
  redis.call('HSET', KEYS[2], 'state', 'cancelled', 'error', 'cancelled before it started',
             'finished_at', ARGV[2])
  return 'cancelled'
elseif state == 'running' then
  redis.call('SADD', KEYS[3], ARGV[1])
  return 'flagged'
end
return state or ''
"""

# KEYS: stream, status, claim ; ARGV: job json, attempts, submitted at, ttl, job id,
# status key prefix. The holder's status hash is read by name (single-node Redis).
_SUBMIT = """
local holder = redis.call('GET', KEYS[3])
if holder then
  local state = redis.call('HGET', ARGV[6] .. holder, 'state')
  if state and state ~= 'failed' and state ~= 'cancelled' and state ~= 'dead' then
    return {0, holder, redis.call('HGET', ARGV[6] .. holder, 'job') or ''}
  end
end
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'state', 'queued', 'attempts', ARGV[2], 'submitted_at', ARGV[3],
           'entry', id, 'job', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1, ARGV[5], ''}
"""


# KEYS: status ; ARGV: note, worker ('' for any)
_ANNOTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2]
   and redis.call('HGET', KEYS[1], 'state') ~= 'queued' then
  return 0  -- someone else holds it now (a 'queued' one was read but never admitted)
end
local notes = redis.call('HGET', KEYS[1], 'notes')
local list = notes and cjson.decode(notes) or {}
table.insert(list, ARGV[1])
redis.call('HSET', KEYS[1], 'notes', cjson.encode(list))
return 1
"""


class RedisQueue:
    """Jobs in a Redis stream consumed by a consumer group.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://``).
        agent: the agent name; each agent has its own stream.
        prefix: namespace of every key (tests use a unique one each).
        visibility_timeout: seconds a taken job may go without a heartbeat
            before another worker may take it over.
        max_attempts: deliveries after which a job goes to the dead letters.
        result_ttl: seconds statuses and idempotency records are kept.
    """

    def __init__(
        self,
        url: str,
        *,
        agent: str = "agent",
        prefix: str = "pipeflow",
        visibility_timeout: float = 30.0,
        max_attempts: int = 3,
        result_ttl: int = 86400,
    ) -> None:
        import redis.asyncio as aioredis

        try:
            self.redis = aioredis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(
                f"queue URL {_safe_url(url)!r} is not a valid Redis URL: {exc}"
            ) from exc
        self.url = url
        self.base = f"{prefix}:{agent}"
        self.stream = f"{self.base}:stream"
        self.dead_stream = f"{self.base}:dead"
        self.cancel_set = f"{self.base}:cancel"
        self.visibility_timeout = visibility_timeout
        self.max_attempts = max_attempts
        self.result_ttl = result_ttl
        self.reclaim_interval = max(visibility_timeout / 4, 0.05)
        self._group_ready = False
        self._consumers: set[str] = set()
        self._next_reclaim = 0.0
        self._cursor = "0-0"
        self._submit = self.redis.register_script(_SUBMIT)
        self._admit = self.redis.register_script(_ADMIT)
        self._complete = self.redis.register_script(_COMPLETE)
        self._fail = self.redis.register_script(_FAIL)
        self._requeue = self.redis.register_script(_REQUEUE)
        self._cancel = self.redis.register_script(_CANCEL)
        self._annotate = self.redis.register_script(_ANNOTATE)

    def status_key(self, job_id: str) -> str:
        """The hash holding one job's status."""
        return f"{self.base}:status:{job_id}"

    def done_key(self, key: str) -> str:
        """The record of one idempotency key's completion."""
        return f"{self.base}:done:{key}"

    def claim_key(self, key: str) -> str:
        """Which job holds one idempotency key (set at submit)."""
        return f"{self.base}:key:{key}"

    async def _call(self, what: str, coro: Any) -> Any:
        """Await one Redis command; every failure becomes a ``RemoteError`` saying what.

        The first command must be answered within ``CONNECT_TIMEOUT_S``: a
        port that speaks another protocol (HTTP) may never answer at all.
        """
        import redis.exceptions

        where = _safe_url(self.url)
        try:
            if self._group_ready:
                return await coro
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await coro
        except redis.exceptions.ConnectionError as exc:
            raise RemoteError(f"cannot reach Redis at {where} to {what}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            raise RemoteError(f"Redis refused to {what}: {exc}") from exc
        except (redis.exceptions.InvalidResponse, redis.exceptions.DataError) as exc:
            raise RemoteError(f"the server at {where} does not speak the Redis protocol "
                              f"({exc}); check the queue URL") from exc
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            raise RemoteError(f"no answer from Redis at {where} to {what} within "
                              f"{CONNECT_TIMEOUT_S:g} s; is a Redis server listening "
                              "there?") from exc
        except redis.exceptions.RedisError as exc:
            raise RemoteError(f"Redis at {where} failed to {what}: "
                              f"{type(exc).__name__}: {exc}") from exc

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        import redis.exceptions

        try:
            await self._call(
                "create the consumer group",
                self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True),
            )
        except RemoteError as exc:
            if not isinstance(exc.__cause__, redis.exceptions.ResponseError) or (
                "BUSYGROUP" not in str(exc.__cause__)
            ):
                raise
        self._group_ready = True

    async def submit(self, job: Job) -> Job:
        """``XADD`` the job and record it as queued, unless its key is held by a
        queued, running or completed job: then that job is returned."""
        await self._ensure_group()
        added, holder, raw = await self._call("submit a job", self._submit(
            keys=[self.stream, self.status_key(job.id), self.claim_key(job.idempotency_key)],
            args=[msgspec.json.encode(job), job.attempts, job.submitted_at, self.result_ttl,
                  job.id, self.status_key("")],
        ))
        if added:
            return job
        holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
        if raw:
            with contextlib.suppress(msgspec.DecodeError):
                return msgspec.json.decode(raw, type=Job)
        return msgspec.structs.replace(job, id=holder_id)

    async def take(self, consumer: str, timeout: float = 1.0) -> Delivery | None:
        """Take over a job left idle by a dead worker, else read a new one."""
        await self._ensure_group()
        if consumer not in self._consumers:
            # Listed in XINFO CONSUMERS from the start (operators see idle workers too).
            await self._call("register the worker", self.redis.xgroup_createconsumer(
                self.stream, GROUP, consumer
            ))
            self._consumers.add(consumer)
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_reclaim or self._cursor != "0-0":
                delivery = await self._reclaim(consumer)
                if delivery is not None:
                    return delivery
            # Wake up for the next reclaim round even while waiting for new jobs.
            until = min(deadline, self._next_reclaim) - time.monotonic()
            block = int(max(until, 0) * 1000)
            reply = await self._call("take a job", self.redis.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=1, block=max(block, 1)
            ))
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    delivery = await self._admit_entry(entry_id, fields, consumer, None)
                    if delivery is not None:
                        return delivery
            if time.monotonic() >= deadline:
                return None

    async def _reclaim(self, consumer: str) -> Delivery | None:
        """``XAUTOCLAIM`` one job idle past the visibility timeout."""
        reply = await self._call("reclaim jobs", self.redis.xautoclaim(
            self.stream, GROUP, consumer, int(self.visibility_timeout * 1000),
            start_id=self._cursor, count=1,
        ))
        cursor, entries = reply[0], reply[1]
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._cursor == "0-0":
            self._next_reclaim = time.monotonic() + self.reclaim_interval
        for entry_id, fields in entries:
            if fields is None:
                continue
            pending = await self.redis.xpending_range(
                self.stream, GROUP, min=entry_id, max=entry_id, count=1
            )
            times = int(pending[0]["times_delivered"]) if pending else 1
            delivery = await self._admit_entry(entry_id, fields, consumer, times)
            if delivery is not None:
                return delivery
        return None

    async def _admit_entry(
        self, entry_id: bytes | str, fields: dict[bytes, bytes], consumer: str,
        times_delivered: int | None,
    ) -> Delivery | None:
        token = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        raw = fields.get(b"job", b"")
        try:
            job = msgspec.json.decode(raw, type=Job)
        except msgspec.DecodeError:
            # Not ours or corrupt: move it to the dead letters, never loop on it.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_stream, {"job": raw, "reason": "undecodable job entry"})
                pipe.xack(self.stream, GROUP, token)
                pipe.xdel(self.stream, token)
                await self._call("dead-letter a bad entry", pipe.execute())
            return None
        attempt = job.attempts + (times_delivered or 1)
        verdict = await self._call("admit a job", self._admit(
            keys=[self.stream, self.status_key(job.id), self.done_key(job.idempotency_key),
                  self.dead_stream, self.cancel_set],
            args=[GROUP, token, job.id, attempt, self.max_attempts, consumer, time.time(),
                  raw, self.result_ttl, self.status_key("")],
        ))
        if verdict != b"ok":
            return None
        return Delivery(job=job, attempt=attempt, token=token, consumer=consumer,
                        reclaimed=times_delivered is not None)

    async def complete(self, delivery: Delivery, result: Any = None) -> bool:
        """Record the key's completion once; ack either way."""
        job = delivery.job
        first = await self._call("complete a job", self._complete(
            keys=[self.stream, self.status_key(job.id), self.done_key(job.idempotency_key),
                  self.claim_key(job.idempotency_key)],
            args=[GROUP, delivery.token, job.id, msgspec.json.encode(result), time.time(),
                  self.result_ttl],
        ))
        return bool(first)

    async def fail(self, delivery: Delivery, error: str, state: JobState = "failed") -> None:
        """Record a final failure (unless the key already completed) and ack."""
        job = delivery.job
        await self._call("fail a job", self._fail(
            keys=[self.stream, self.status_key(job.id), self.done_key(job.idempotency_key),
                  self.cancel_set],
            args=[GROUP, delivery.token, job.id, state, error, time.time()],
        ))

    async def requeue(self, delivery: Delivery) -> None:
        """``XADD`` the job again (attempt counted) and ack the old entry."""
        job = msgspec.structs.replace(delivery.job, attempts=delivery.attempt)
        await self._call("hand a job back", self._requeue(
            keys=[self.stream, self.status_key(job.id)],
            args=[GROUP, delivery.token, msgspec.json.encode(job), delivery.attempt],
        ))

    async def touch(self, deliveries: list[Delivery]) -> None:
        """Reset the idle time of held jobs (``XCLAIM ... JUSTID``)."""
        by_consumer: dict[str, list[str]] = {}
        for d in deliveries:
            by_consumer.setdefault(d.consumer, []).append(d.token)
        for consumer, tokens in by_consumer.items():
            await self._call("renew held jobs", self.redis.xclaim(
                self.stream, GROUP, consumer, 0, tokens, justid=True
            ))

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a waiting job now; flag a running one for its worker."""
        await self._call("cancel a job", self._cancel(
            keys=[self.stream, self.status_key(job_id), self.cancel_set],
            args=[job_id, time.time()],
        ))
        return await self.status(job_id)

    async def held_by(self, consumer: str) -> list[Delivery]:
        """The jobs ``consumer`` has taken and not settled (its pending entries)."""
        await self._ensure_group()
        pending = await self._call("read pending jobs", self.redis.xpending_range(
            self.stream, GROUP, min="-", max="+", count=10_000, consumername=consumer))
        held = []
        for entry in pending:
            token = entry["message_id"]
            token = token.decode() if isinstance(token, bytes) else str(token)
            found = await self._call("read a pending job", self.redis.xrange(
                self.stream, min=token, max=token, count=1))
            if not found or b"job" not in found[0][1]:
                continue
            try:
                job = msgspec.json.decode(found[0][1][b"job"], type=Job)
            except msgspec.DecodeError:
                continue
            held.append(Delivery(job=job, attempt=job.attempts + int(entry["times_delivered"]),
                                 token=token, consumer=consumer))
        return held

    async def annotate(self, job_id: str, note: str, worker: str = "") -> None:
        """Add ``note`` to the job's status (only while ``worker`` holds it, if given,
        or while it is still queued: read by ``worker`` but never admitted)."""
        await self._call("annotate a job", self._annotate(
            keys=[self.status_key(job_id)], args=[note, worker],
        ))

    async def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Running jobs flagged by ``cancel`` (``SMISMEMBER``)."""
        if not job_ids:
            return set()
        flags = await self._call("read cancel requests",
                                 self.redis.smismember(self.cancel_set, job_ids))
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def status(self, job_id: str) -> JobStatus | None:
        """Read the job's status hash."""
        raw = await self._call("read a job status", self.redis.hgetall(self.status_key(job_id)))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        result = msgspec.json.decode(data["result"]) if data.get("result") else None
        return JobStatus(
            id=job_id,
            state=data.get("state", "queued"),  # type: ignore[arg-type]
            attempts=int(data.get("attempts", 0)),
            worker=data.get("worker", ""),
            result=result,
            error=data.get("error", ""),
            submitted_at=float(data.get("submitted_at", 0) or 0),
            started_at=float(data.get("started_at", 0) or 0),
            finished_at=float(data.get("finished_at", 0) or 0),
            notes=msgspec.json.decode(data["notes"]) if data.get("notes") else [],
            duplicate_of=data.get("duplicate_of", ""),
        )

    async def stats(self) -> QueueStats:
        """Waiting = stream length minus pending (settled entries are deleted)."""
        await self._ensure_group()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, GROUP)
            pipe.xlen(self.dead_stream)
            length, pending, dead = await self._call("read queue figures", pipe.execute())
        running = int(pending["pending"]) if pending else 0
        return QueueStats(waiting=max(int(length) - running, 0), running=running, dead=int(dead))

    async def delete_all(self) -> None:
        """Remove every key of this queue (tests and benchmarks clean up with it)."""
        keys = [k async for k in self.redis.scan_iter(match=f"{self.base}:*", count=500)]
        for start in range(0, len(keys), 500):
            await self.redis.delete(*keys[start : start + 500])

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def _safe_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
