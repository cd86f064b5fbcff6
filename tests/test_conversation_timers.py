"""EngineTimers: the engine's deadlines on the event loop, shared by the llm and realtime stages."""

from __future__ import annotations

import asyncio
import time

from pipeflow.conversation.events import CancelTimer, SetTimer, TimerFired
from pipeflow.conversation.timers import EngineTimers
from pipeflow.frames import Frame, Transcript


def _wrap(event: TimerFired) -> Frame:
    return Transcript(role="agent", text=event.name)


async def test_a_due_timer_comes_back_wrapped_once_a_moved_one_at_its_new_time() -> None:
    got: list[tuple[str, float]] = []
    timers = EngineTimers(lambda frame: got.append((frame.text, time.perf_counter())), _wrap)  # type: ignore[attr-defined]
    now = time.perf_counter()
    timers.arm([SetTimer(name="a", at=now + 0.01), SetTimer(name="b", at=now + 0.01)])
    timers.arm([SetTimer(name="b", at=now + 0.05)])  # moved: fires once, later
    assert len(timers) == 2
    await asyncio.sleep(0.1)
    assert [name for name, _ in got] == ["a", "b"]
    assert got[1][1] - now >= 0.05
    assert len(timers) == 0


async def test_cancelled_and_closed_timers_never_fire() -> None:
    got: list[Frame] = []
    timers = EngineTimers(got.append, _wrap)
    now = time.perf_counter()
    timers.arm([SetTimer(name="a", at=now + 0.01), SetTimer(name="b", at=now + 0.01)])
    timers.arm([CancelTimer(name="a")])
    timers.cancel_all()
    await asyncio.sleep(0.05)
    assert got == []
    timers.arm([SetTimer(name="late", at=now - 1.0)])  # already due: fires on the next turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [f.text for f in got] == ["late"]  # type: ignore[attr-defined]
