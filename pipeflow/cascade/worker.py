"""One worker thread per offline model: its blocking calls off the event loop, in one hop.

pocketsphinx and espeak-ng block for milliseconds to seconds, so the cascade's
offline recogniser and voice run in a thread. ``ModelThread`` is that thread:
a call is queued to it and its result comes back with one
``loop.call_soon_threadsafe`` onto an asyncio future, the fewest wake-ups a
thread hop can take. It owns no pool and shares nothing: the process's
default executor (``asyncio.to_thread``) serves everything else in the
process, and a voice's sentence never waits there behind another user's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ModelThread"]

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...],
             dict[str, Any]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return  # the caller stopped waiting (a barge-in): the result is not wanted
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ModelThread:
    """A daemon thread running one model's calls in order (started on first use).

    Args:
        name: the thread's name (``pipeflow-espeak``), for debuggers and profiles.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``fn(*args, **kwargs)`` in the thread; await the future for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name=self.name,
                                                    daemon=True)
                    self._thread.start()
        self._jobs.put((loop, future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args, kwargs = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting task, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, result, error)
            del job, future, result, error  # nothing kept alive until the next call

    def close(self) -> None:
        """Stop the thread once the calls queued before are done."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread = None
