"""The simulated caller waits for the agent's answer, not for any playout report."""

from __future__ import annotations

import numpy as np

from pipeflow.frames import AudioFrame, Frame, PlayoutPosition
from pipeflow.stages.caller import CallerSource
from pipeflow.testing import run_stage


def _loud(frame: AudioFrame) -> bool:
    return bool(np.abs(np.frombuffer(frame.pcm, np.int16)).max() > 300)


async def test_a_paused_or_repeated_report_is_not_the_agent_done() -> None:
    # After line one: a pause's interrupted report, then a repeat of the
    # greeting's report; only the answer's own report, 40 frames later, may
    # let the caller speak line two.
    caller = CallerSource(lines=["one", "two"], speed=50, pause_ms=100, max_wait_s=5,
                          wait_for_greeting_s=0, record=None)
    sent = 0
    line_one_over = answered_at = -1
    talking = False

    def respond(frame: Frame) -> list[Frame]:
        nonlocal sent, line_one_over, answered_at, talking
        if not isinstance(frame, AudioFrame):
            return []
        sent += 1
        loud = _loud(frame)
        if loud and not talking and line_one_over < 0:
            talking = True
            return [PlayoutPosition(item_id="greeting", played_ms=900)]
        if talking and not loud and line_one_over < 0:
            line_one_over = sent
            return [PlayoutPosition(item_id="answer", played_ms=0, interrupted=True),
                    PlayoutPosition(item_id="greeting", played_ms=900)]
        if line_one_over > 0 and sent == line_one_over + 40:
            answered_at = sent
            return [PlayoutPosition(item_id="answer", played_ms=800)]
        return []

    result = await run_stage(caller, [], respond=respond)
    audio = result.of(AudioFrame)
    loud = [i + 1 for i, f in enumerate(audio) if _loud(f)]
    line_two = [i for i in loud if i > line_one_over + 5]
    assert line_one_over > 0 and answered_at > 0
    assert line_two, "the caller never said its second line"
    assert line_two[0] >= answered_at + 5  # after the answer and its pause (5 frames)
