"""The pipe between the pool supervisor and one worker process.

Messages are small picklable tuples over a duplex ``multiprocessing`` pipe,
read on the event loop with ``add_reader`` (no thread, no polling):

- child -> supervisor: ``("call", id, method, args)`` (a queue call, when
  the supervisor owns the memory queue), ``("report", slot, dict)`` (state
  and metrics, from the child's loop), ``("watch", slot, dict)`` (the
  watchdog's verdict, from its thread: it arrives even while the loop is
  blocked), ``("recycle", slot, reason)``.
- supervisor -> child: ``("reply", id, ok, value)``.

``PipeQueue`` is the child's side of the memory queue: the ``Queue``
contract with every call forwarded to the supervisor's ``MemoryQueue``, so
one queue serves every process of the pool and the supervisor knows which
process holds which job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pipeflow.errors import RemoteError
from pipeflow.worker.queues.base import Delivery, Job, JobState, JobStatus, QueueStats

__all__ = ["QUEUE_METHODS", "Channel", "PipeQueue", "serve_call"]

QUEUE_METHODS = frozenset({
    "submit", "take", "complete", "fail", "requeue", "touch", "cancel", "cancel_requested",
    "status", "stats",
})


class Channel:
    """One end of the pipe: thread-safe ``send``, messages handed to a callback.

    Args:
        conn: the pipe end.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: tuple[Any, ...]) -> bool:
        """Send one message (from any thread); False once the other end is gone."""
        if self.closed:
            return False
        with self._lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, EOFError, ValueError):
                self.closed = True
                return False

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[tuple[Any, ...]], None],
        on_close: Callable[[], None],
    ) -> None:
        """Call ``on_message`` on ``loop`` for each message; ``on_close`` at end of pipe."""
        self._loop = loop

        def readable() -> None:
            try:
                while self.conn.poll():
                    on_message(self.conn.recv())
            except (EOFError, OSError):
                self.detach()
                self.closed = True
                on_close()

        loop.add_reader(self.conn.fileno(), readable)

    def detach(self) -> None:
        """Stop reading (the pipe stays open)."""
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.conn.fileno())
            self._loop = None

    def close(self) -> None:
        """Stop reading and close the pipe."""
        self.detach()
        self.closed = True
        with contextlib.suppress(OSError):
            self.conn.close()


class PipeQueue:
    """A worker process's queue: each call answered by the supervisor's queue.

    Args:
        channel: the child's end of the pipe (already attached; replies are
            routed here by ``on_reply``).
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    def on_reply(self, call_id: int, ok: bool, value: Any) -> None:
        """Settle the call ``call_id`` (called for each ``reply`` message)."""
        future = self._waiting.pop(call_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(RemoteError(f"the pool's queue refused the call: {value}"))

    def lost(self) -> None:
        """The supervisor is gone: every waiting call fails."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RemoteError("the pool supervisor is gone"))
        self._waiting.clear()

    async def _call(self, method: str, *args: Any) -> Any:
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        if not self.channel.send(("call", call_id, method, args)):
            self._waiting.pop(call_id, None)
            raise RemoteError("the pool supervisor is gone")
        return await future

    async def submit(self, job: Job) -> Job:
        """Enqueue ``job`` in the pool's queue."""
        return await self._call("submit", job)  # type: ignore[no-any-return]

    async def take(self, consumer: str, timeout: float = 1.0) -> Delivery | None:
        """The next job for this process."""
        return await self._call("take", consumer, timeout)  # type: ignore[no-any-return]

    async def complete(self, delivery: Delivery, result: Any = None) -> bool:
        """Record success (False: a duplicate)."""
        return await self._call("complete", delivery, result)  # type: ignore[no-any-return]

    async def fail(self, delivery: Delivery, error: str, state: JobState = "failed") -> None:
        """Record a final failure."""
        await self._call("fail", delivery, error, state)

    async def requeue(self, delivery: Delivery) -> None:
        """Hand the job back."""
        await self._call("requeue", delivery)

    async def touch(self, deliveries: list[Delivery]) -> None:
        """Nothing to renew in the memory queue, so no round trip."""

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Ask for a job to be cancelled."""
        return await self._call("cancel", job_id)  # type: ignore[no-any-return]

    async def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs someone asked to cancel."""
        return await self._call("cancel_requested", job_ids)  # type: ignore[no-any-return]

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status."""
        return await self._call("status", job_id)  # type: ignore[no-any-return]

    async def stats(self) -> QueueStats:
        """The pool queue's figures."""
        return await self._call("stats")  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Nothing to release: the supervisor owns the queue."""


async def serve_call(queue: Any, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    """Run one forwarded queue call; ``(ok, value or error text)``."""
    if method not in QUEUE_METHODS:
        return False, f"unknown queue method {method!r}"
    try:
        return True, await getattr(queue, method)(*args)
    except Exception as exc:  # the child gets it as a RemoteError, the pool goes on
        return False, f"{type(exc).__name__}: {exc}"
