"""The playout clock of an audio sink, as a pure model with time passed in.

Audio queued for playing starts when the previous audio ends (or now, when
the output is idle). A chunk is *released* (handed to the device or file)
when it starts playing, so an interrupt can drop everything not yet
released and the error is under one frame. Played time is counted per model
item, so a sink can tell the Realtime transport how much of an answer the
caller heard (to truncate the model's item).

``pause`` holds everything not yet released (the chunk playing finishes:
it was handed over whole); ``resume`` plays it on from there, so the
caller hears the answer continue where it stopped.

Items are reported *done* once they are closed (a response ended, another
item began, or the stream ended) and their last audio has finished.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Chunk", "Done", "Playout", "Started"]


@dataclass(slots=True)
class Chunk:
    """Audio waiting for, or released to, the output."""

    pcm: bytes
    item_id: str
    start: float
    end: float


@dataclass(slots=True)
class Started:
    """The first audio of ``item_id`` started playing at ``at``."""

    item_id: str
    at: float


@dataclass(slots=True)
class Done:
    """``item_id`` played ``played_ms`` in full, or until interrupted."""

    item_id: str
    played_ms: int
    interrupted: bool = False


@dataclass(slots=True)
class _Item:
    played: float = 0.0  # seconds released and fully played
    end: float = 0.0  # when its last queued audio ends
    closed: bool = False
    current: Chunk | None = None


@dataclass
class Playout:
    """Queued audio and per-item played time for one output at ``sample_rate``."""

    sample_rate: int
    queue: deque[Chunk] = field(default_factory=deque)
    end: float = 0.0  # when the last queued audio ends
    items: dict[str, _Item] = field(default_factory=dict)
    paused_at: float | None = None  # held since then; None: playing

    def add(self, pcm: bytes, item_id: str, now: float) -> None:
        """Queue audio behind what is already queued (or at ``now`` when idle)."""
        for other_id, other in self.items.items():
            if other_id != item_id:
                other.closed = True
        start = max(now, self.end)
        step = 2 * max(1, self.sample_rate // 50)  # 20 ms pieces: a pause or a cut
        rate = 2 * self.sample_rate  # lands within 20 ms, whatever size audio comes in
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step] if len(pcm) > step else pcm
            end = start + len(piece) / rate
            self.queue.append(Chunk(piece, item_id, start, end))
            start = end
        self.end = start
        item = self.items.setdefault(item_id, _Item())
        item.end = self.end

    def close(self, item_id: str | None = None) -> None:
        """No more audio comes for ``item_id`` (every item when ``None``)."""
        for key, item in self.items.items():
            if item_id is None or key == item_id:
                item.closed = True

    def release(self, now: float) -> tuple[list[Chunk], list[Started | Done]]:
        """Chunks that started playing by ``now`` and the item events due."""
        chunks: list[Chunk] = []
        events: list[Started | Done] = []
        queue = self.queue
        if self.paused_at is not None:
            now = min(now, self.paused_at)
        while queue and queue[0].start <= now:
            chunk = queue.popleft()
            item = self.items[chunk.item_id]
            if item.current is None and item.played == 0.0:
                events.append(Started(chunk.item_id, chunk.start))
            if item.current is not None:
                item.played += item.current.end - item.current.start
            item.current = chunk
            chunks.append(chunk)
        for item_id, item in list(self.items.items()):
            if item.closed and item.end <= now and not any(c.item_id == item_id for c in queue):
                if item.current is not None:
                    item.played += item.current.end - item.current.start
                events.append(Done(item_id, round(item.played * 1000)))
                del self.items[item_id]
        return chunks, events

    def interrupt(self, now: float) -> tuple[list[Chunk], list[Done]]:
        """Drop what has not started; report each item's played time at ``now``.

        Returns the chunks that start exactly now (released before the drop)
        and one ``Done(interrupted=True)`` per item that had audio.
        """
        chunks, events = self.release(now)
        done = [e for e in events if isinstance(e, Done)]
        for item_id, item in self.items.items():
            played = item.played
            if item.current is not None:
                played += max(0.0, min(now, item.current.end) - item.current.start)
            done.append(Done(item_id, round(played * 1000), interrupted=True))
        self.queue.clear()
        self.items.clear()
        self.end = min(self.end, now)
        self.paused_at = None
        return chunks, done

    def pause(self, now: float) -> None:
        """Hold what has not started by ``now`` (release what is due first)."""
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        """Play the held audio on: its first chunk starts at ``now`` (or when the
        chunk playing at the pause ends)."""
        if self.paused_at is None:
            return
        self.paused_at = None
        if not self.queue:
            return
        playing = [i.current.end for i in self.items.values() if i.current is not None]
        start = max([now, *[end for end in playing if end > self.queue[0].start - 1e-9]])
        shift = start - self.queue[0].start
        if shift <= 0:
            return
        held = {chunk.item_id for chunk in self.queue}
        for chunk in self.queue:
            chunk.start += shift
            chunk.end += shift
        for item_id in held:
            self.items[item_id].end += shift
        self.end += shift

    def next_wake(self) -> float | None:
        """When ``release`` next has something to do (``None``: nothing queued or paused)."""
        if self.paused_at is not None:
            return None
        times = [self.queue[0].start] if self.queue else []
        times += [item.end for item in self.items.values() if item.closed]
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        """Nothing queued and no item left to report."""
        return not self.queue and not self.items
