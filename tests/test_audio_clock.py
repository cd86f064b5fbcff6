"""The shared pacing clock: one timer, no early wake-ups, manual time for tests."""

from __future__ import annotations

import asyncio

import pytest

from pipeflow.audio.clock import ManualClock, PacingClock, get_clock, set_clock


async def test_waiters_wake_in_deadline_order_and_never_early():
    clock = PacingClock(resolution=0.002)
    start = clock.now()
    woke: list[tuple[float, float]] = []

    async def wait(offset: float) -> None:
        await clock.sleep_until(start + offset)
        woke.append((offset, clock.now() - start))

    offsets = [0.012, 0.004, 0.004, 0.008, 0.0, -1.0]
    await asyncio.gather(*(wait(o) for o in offsets))
    assert sorted(o for o, _ in woke) == sorted(offsets)
    timed = [o for o, _ in woke if o > 0]  # past deadlines return at once, in call order
    assert timed == sorted(timed)
    assert all(elapsed >= offset for offset, elapsed in woke)
    assert clock.pending() == 0


async def test_many_waiters_share_one_loop_timer():
    clock = PacingClock(resolution=0.005)
    deadline = clock.now() + 0.01
    tasks = [asyncio.create_task(clock.sleep_until(deadline + i * 1e-4)) for i in range(200)]
    await asyncio.sleep(0)
    assert clock.pending() == 200
    assert len(clock._buckets) <= 5  # 200 deadlines within 20 ms share at most 5 ticks of 5 ms
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_does_not_disturb_others():
    clock = ManualClock()
    first = asyncio.create_task(clock.sleep_until(0.01))
    second = asyncio.create_task(clock.sleep_until(0.01))
    await asyncio.sleep(0)
    first.cancel()
    await clock.advance(0.01)
    assert second.done() and not second.cancelled()
    assert first.cancelled()


async def test_manual_clock_only_moves_when_advanced():
    clock = ManualClock()
    ticks: list[float] = []

    async def every_20ms() -> None:
        for i in range(5):
            await clock.sleep_until(i * 0.02)
            ticks.append(clock.now())

    task = asyncio.create_task(every_20ms())
    await asyncio.sleep(0)
    await clock.advance(0.05)
    assert ticks == pytest.approx([0.0, 0.02, 0.04])
    await clock.advance(0.05)
    await task
    assert ticks == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])


async def test_manual_clock_runs_the_rounds_asked_after_each_step():
    clock = ManualClock()
    hops: list[int] = []

    async def wakes_then_hops() -> None:
        await clock.sleep_until(0.02)
        for hop in range(10):
            hops.append(hop)
            await asyncio.sleep(0)

    task = asyncio.create_task(wakes_then_hops())
    await asyncio.sleep(0)
    await clock.advance(0.02, step=0.02, rounds=3)
    assert 0 < len(hops) < 10  # woken, then cut short after the rounds asked
    await clock.advance(0.02, step=0.02)  # the default rounds let it finish
    await task
    assert hops == list(range(10))


async def test_get_clock_is_per_loop_and_replaceable():
    assert get_clock() is get_clock()
    manual = ManualClock()
    set_clock(manual)
    try:
        assert get_clock() is manual
    finally:
        set_clock(None)
    assert get_clock() is not manual


def test_resolution_must_be_positive():
    with pytest.raises(ValueError, match="resolution"):
        PacingClock(resolution=0, loop=asyncio.new_event_loop())
