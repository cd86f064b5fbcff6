"""The merged input of a duplex stage.

One queue per duplex stage holds three kinds of arrivals: frames from its
upstream (bounded, so a slow stage pushes back on its producers), frames sent
back by later stages, and frames from the stage's own tasks. Urgent frames
(``Frame.urgent``, e.g. ``Interrupt``) and frames sent back by later stages
(tool results, played positions) go in a priority lane that overtakes queued
data; both are few and small, and neither may wait behind audio.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pipeflow.frames import EndOfStream, Frame

if TYPE_CHECKING:
    from pipeflow.stage import StageContext

__all__ = ["Inbox", "merged_input"]


class _Failure:
    """Carries an exception from a task into the consuming stage."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Closed:
    __slots__ = ()


_CLOSED = _Closed()


class Inbox:
    """A bounded queue with a priority lane for urgent frames."""

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 1:
            raise ValueError("inbox size must be at least 1")
        self.maxsize = maxsize
        self._urgent: deque[Frame | _Failure | _Closed] = deque()
        self._queue: deque[Frame | _Failure | _Closed] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._urgent) + len(self._queue)

    async def put(self, frame: Frame) -> None:
        """Queue a frame, waiting while the data lane is full (back-pressure)."""
        if frame.urgent:
            self.put_nowait(frame)
            return
        while len(self._queue) >= self.maxsize:
            self._writable.clear()
            await self._writable.wait()
        self._queue.append(frame)
        self._readable.set()

    def put_nowait(self, frame: Frame) -> None:
        """Queue a frame at once, past the bound; urgent frames go first."""
        (self._urgent if frame.urgent else self._queue).append(frame)
        self._readable.set()

    def put_feedback(self, frame: Frame) -> None:
        """Queue a frame sent back by a later stage: it never waits behind data."""
        self._urgent.append(frame)
        self._readable.set()

    def fail(self, error: BaseException) -> None:
        """Make the consumer raise ``error`` (a task of the stage failed)."""
        self._urgent.append(_Failure(error))
        self._readable.set()

    def close(self) -> None:
        """End the merged input once what is queued has been read."""
        self._queue.append(_CLOSED)
        self._readable.set()

    async def get(self) -> Frame | None:
        """Next frame, urgent ones first; ``None`` once closed."""
        while not self._urgent and not self._queue:
            self._readable.clear()
            await self._readable.wait()
        item = self._urgent.popleft() if self._urgent else self._queue.popleft()
        if len(self._queue) < self.maxsize:
            self._writable.set()
        if isinstance(item, _Failure):
            raise item.error
        if isinstance(item, _Closed):
            return None
        return item


async def _pump(upstream: AsyncIterator[Frame], inbox: Inbox) -> None:
    """Move upstream frames into the inbox; end with one EndOfStream."""
    saw_end = False
    try:
        async for frame in upstream:
            saw_end = saw_end or isinstance(frame, EndOfStream)
            await inbox.put(frame)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        inbox.fail(exc)
        return
    if not saw_end:
        await inbox.put(EndOfStream())


async def merged_input(
    upstream: AsyncIterator[Frame], ctx: StageContext
) -> AsyncIterator[Frame]:
    """The input a duplex stage iterates: upstream + feedback + own tasks.

    It does not end when the upstream does (the stage may still be waiting
    for its own tasks, like a model finishing its answer); it ends when the
    stage stops reading or something calls ``inbox.close()``.
    """
    inbox = ctx.inbox
    assert inbox is not None  # the runtime only merges duplex stages
    pump = ctx.pipeline.spawn(_pump(upstream, inbox), name=f"{ctx.name}.pump")
    try:
        while True:
            frame = await inbox.get()
            if frame is None:
                return
            yield frame
    finally:
        pump.cancel()
