"""Bounded memory of a running conversation: a frame log and subscriber queues.

A session that kept every frame grew without bound: a minute of streamed
caller audio is about 3,000 ``AudioFrame`` values. What a reader of a
session needs is the recent events (transcripts, tool calls, responses) and
a live feed; audio is recorded by a sink when it is wanted, not kept here.

- ``FrameLog``: the last ``size`` non-audio frames, numbered from 0 for the
  whole call, so ``since(n)`` answers "what came after frame n" while only
  a bounded window is held.
- ``Subscriber``: one reader's queue, with a stated drop policy: past
  ``max_audio`` queued audio frames the oldest audio frame is dropped (a
  slow listener hears a gap, never a growing delay, and ``dropped_audio``
  counts them); other frames are never dropped, but a reader more than
  ``max_lag`` of them behind is cut off: its next read raises
  ``SubscriberLagged`` instead of holding memory for a reader that is gone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import islice

from pipeflow.errors import LocalError
from pipeflow.frames import AudioFrame, Frame

__all__ = ["FrameLog", "Subscriber", "SubscriberLagged"]


class SubscriberLagged(LocalError):
    """A subscriber fell too far behind and was cut off."""


class FrameLog:
    """The last ``size`` non-audio frames, numbered for the whole call.

    Args:
        size: how many frames to keep (at least 1).
    """

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError("a frame log keeps at least 1 frame")
        self._frames: deque[Frame] = deque(maxlen=size)
        self.total = 0
        """Frames logged over the whole call (the number of the next one)."""

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def first(self) -> int:
        """The number of the oldest frame still kept."""
        return self.total - len(self._frames)

    def append(self, frame: Frame) -> None:
        """Log a frame; the oldest goes when the log is full."""
        self._frames.append(frame)
        self.total += 1

    def since(self, number: int) -> list[Frame]:
        """Frames numbered ``number`` on that are still kept, oldest first."""
        skip = max(0, number - self.first)
        return list(islice(self._frames, skip, None))


class Subscriber:
    """One reader's bounded queue of frames (see the module docstring for the policy).

    Args:
        max_audio: audio frames held before the oldest is dropped.
        max_lag: other frames held before the reader is cut off.
        audio: false leaves audio frames out altogether (an events-only reader).
    """

    def __init__(self, max_audio: int = 250, max_lag: int = 10000, *, audio: bool = True) -> None:
        self.audio = audio
        self.max_audio = max_audio
        self.max_lag = max_lag
        self.dropped_audio = 0
        """Audio frames dropped because this reader was slow."""
        self._queue: deque[Frame] = deque()
        self._audio = 0
        self._closed = False
        self._lagged = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, frame: Frame) -> None:
        """Queue a frame for the reader (never blocks the producer)."""
        if self._closed:
            return
        is_audio = type(frame) is AudioFrame
        if is_audio and not self.audio:
            return
        queue = self._queue
        queue.append(frame)
        if is_audio:
            self._audio += 1
            if self._audio > self.max_audio:
                self._drop_oldest_audio()
        elif len(queue) - self._audio > self.max_lag:
            queue.clear()
            self._audio = 0
            self._lagged = self._closed = True
        self._ready.set()

    def _drop_oldest_audio(self) -> None:
        queue = self._queue
        for index, queued in enumerate(queue):  # a slow reader's backlog starts with audio
            if type(queued) is AudioFrame:
                del queue[index]
                self._audio -= 1
                self.dropped_audio += 1
                return

    def close(self) -> None:
        """No more frames: the reader gets what is queued, then the end."""
        self._closed = True
        self._ready.set()

    async def get(self) -> Frame | None:
        """The next frame; ``None`` once closed and empty.

        Raises:
            SubscriberLagged: the reader fell more than ``max_lag`` frames behind.
        """
        while not self._queue:
            if self._lagged:
                raise SubscriberLagged(
                    f"a subscriber fell more than {self.max_lag} frames behind and was cut off"
                )
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._queue.popleft()
        if type(frame) is AudioFrame:
            self._audio -= 1
        return frame
