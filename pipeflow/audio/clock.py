"""A shared pacing clock: one timer per event loop for every paced stream.

A real-time source sleeps once per frame. Thousands of sessions each calling
``asyncio.sleep`` put thousands of timer handles in the loop's heap; here
every waiter registers a deadline instead, deadlines are rounded up to the
clock's resolution (a few ms) so waiters for the same tick share one bucket,
and a single loop timer wakes each due bucket at once. No waiter wakes
early; one wakes at most one resolution late.

``ManualClock`` is the same clock driven by hand, for tests: time moves only
when ``advance`` is called, so paced code is tested without real sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref

__all__ = ["ManualClock", "PacingClock", "get_clock", "set_clock"]


class PacingClock:
    """Wakes every waiter of one event loop from a single timer.

    Args:
        resolution: the tick in seconds; deadlines round up to a tick.
        loop: the event loop (the running one when omitted).
    """

    def __init__(
        self, resolution: float = 0.004, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if not resolution > 0:
            raise ValueError(f"clock resolution must be positive, got {resolution}")
        self.resolution = resolution
        self.loop = loop or asyncio.get_running_loop()
        self._buckets: dict[int, list[asyncio.Future[None]]] = {}
        self._ticks: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick: int | None = None

    def now(self) -> float:
        """The clock's time in seconds (the loop's monotonic time)."""
        return self.loop.time()

    def pending(self) -> int:
        """How many waiters are asleep (for tests and metrics)."""
        return sum(len(b) for b in self._buckets.values())

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``now() >= deadline``; returns at once if it already is."""
        if deadline <= self.now():
            return
        tick = math.ceil(deadline / self.resolution)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._ticks, tick)
            if self._timer_tick is None or tick < self._timer_tick:
                self._arm(tick)
        waiter: asyncio.Future[None] = self.loop.create_future()
        bucket.append(waiter)
        await waiter

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` from now."""
        await self.sleep_until(self.now() + seconds)

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_tick = tick
        self._timer = self.loop.call_at(tick * self.resolution, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_tick = None
        self._wake_due(self.now())
        if self._ticks:
            self._arm(self._ticks[0])

    def _wake_due(self, now: float) -> None:
        # A tick is due once its time is reached; the small slack absorbs
        # float rounding of tick * resolution against the loop clock.
        limit = math.floor(now / self.resolution + 1e-9)
        ticks = self._ticks
        while ticks and ticks[0] <= limit:
            for waiter in self._buckets.pop(heapq.heappop(ticks)):
                if not waiter.done():
                    waiter.set_result(None)


class ManualClock(PacingClock):
    """A pacing clock whose time only moves when ``advance`` is called.

    Args:
        start: the initial time in seconds.
        resolution: the tick, as for ``PacingClock``.
    """

    def __init__(self, start: float = 0.0, resolution: float = 0.001) -> None:
        super().__init__(resolution=resolution, loop=asyncio.get_running_loop())
        self._now = start

    def now(self) -> float:
        return self._now

    def _arm(self, tick: int) -> None:
        self._timer_tick = tick  # no loop timer: advance() wakes waiters

    async def advance(self, seconds: float, step: float | None = None, rounds: int = 20) -> None:
        """Move time forward, waking due waiters tick by tick.

        After each step the loop runs ``rounds`` iterations so the woken
        tasks block again, and a task that sleeps again within the window
        is woken in turn (fewer rounds: less harness in a measurement).
        """
        step = step or self.resolution
        end = self._now + seconds
        while self._now < end:
            self._now = min(end, self._now + step)
            self._wake_due(self._now)
            self._timer_tick = self._ticks[0] if self._ticks else None
            await settle(rounds)


async def settle(rounds: int = 20) -> None:
    """Let ready tasks run for a few loop iterations (tests with a manual clock)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PacingClock] = (
    weakref.WeakKeyDictionary()
)


def get_clock() -> PacingClock:
    """The running loop's shared clock (made on first use)."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = PacingClock(loop=loop)
    return clock


def set_clock(clock: PacingClock | None) -> None:
    """Install ``clock`` as the running loop's clock (``None`` restores a real one)."""
    loop = asyncio.get_running_loop()
    if clock is None:
        _clocks.pop(loop, None)
    else:
        _clocks[loop] = clock
