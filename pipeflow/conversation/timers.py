"""The engine's timers, armed on the event loop for a stage that drives the engine.

``ConversationEngine.timers_to_set`` asks for named deadlines (in
``perf_counter`` time); a due one must come back to the engine as
``TimerFired`` through the stage's own input, so the one loop that owns
the engine's state handles it. ``EngineTimers`` does that for any
transport: the ``realtime`` and ``llm`` stages differ only in the frame
that carries the event (``wrap``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pipeflow.conversation.events import SetTimer, TimerCommand, TimerFired
from pipeflow.frames import Frame

__all__ = ["EngineTimers"]


class EngineTimers:
    """Named deadlines; a due one is put into ``deliver`` as ``wrap(TimerFired(name))``.

    Args:
        deliver: puts a frame into the stage's input at once (``ctx.emit_nowait``).
        wrap: the stage's internal frame around an engine input.
    """

    def __init__(self, deliver: Callable[[Frame], None],
                 wrap: Callable[[TimerFired], Frame]) -> None:
        self._deliver = deliver
        self._wrap = wrap
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def arm(self, timers: list[TimerCommand]) -> None:
        """Carry out ``timers_to_set``: set (or move) and cancel deadlines."""
        if not timers:
            return
        loop = asyncio.get_running_loop()
        for timer in timers:
            old = self._handles.pop(timer.name, None)
            if old is not None:
                old.cancel()
            if isinstance(timer, SetTimer):
                delay = max(0.0, timer.at - time.perf_counter())
                self._handles[timer.name] = loop.call_later(delay, self._fire, timer.name)

    def _fire(self, name: str) -> None:
        self._handles.pop(name, None)
        self._deliver(self._wrap(TimerFired(name=name)))

    def cancel_all(self) -> None:
        """Forget every deadline (the stage is closing)."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
