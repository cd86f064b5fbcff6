"""A session's memory stays flat over a long call: a 30-minute call in compressed time."""

from __future__ import annotations

import tracemalloc

from pipeflow import AgentSession, Pipeline, Stage
from pipeflow.framelog import FrameLog, Subscriber, SubscriberLagged
from pipeflow.frames import (
    AudioFrame,
    ResponseDone,
    ResponseStarted,
    TextInput,
    Transcript,
    TurnCommitted,
)
from pipeflow.registry import registry
from pipeflow.stages.sinks import NullSink

FRAME_S = 0.1
CALLER = b"\x01\x00" * 1600  # 100 ms at 16 kHz
AGENT = b"\x02\x00" * 2400  # 100 ms at 24 kHz


def fresh(pcm: bytes) -> bytes:
    """A new bytes object each time, as a live call's audio is: kept audio would show."""
    return bytes(bytearray(pcm))


class Answerer(Stage):
    """Answers every committed turn with 2 s of agent audio and a transcript."""

    async def process(self, frames):  # type: ignore[no-untyped-def]
        turn = 0
        async for frame in frames:
            yield frame
            if isinstance(frame, TurnCommitted):
                turn += 1
                item = f"item_{turn}"
                yield ResponseStarted(response_id=f"resp_{turn}")
                for index in range(20):
                    yield AudioFrame(pcm=fresh(AGENT), sample_rate=24000, pts=index * FRAME_S,
                                     item_id=item)
                yield Transcript(role="agent", text=f"answer {turn}", final=True, item_id=item)
                yield ResponseDone(response_id=f"resp_{turn}")


async def test_a_thirty_minute_call_keeps_the_session_memory_flat() -> None:
    stages = [registry.resolve("push")(sample_rate=16000), Answerer(),
              NullSink(realtime=False)]
    session = AgentSession(pipeline=Pipeline(stages), log_size=500)
    seconds_per_turn = 10
    turns = 30 * 60 // seconds_per_turn
    tracemalloc.start()
    try:
        async with session:
            stalled = session.subscribe()  # a reader that never reads: bounded all the same
            await anext(_primed(stalled, session))
            baseline = 0
            for turn in range(turns):
                for _ in range(round(seconds_per_turn / FRAME_S)):
                    await session.stream_audio(fresh(CALLER), 16000)
                mark = session.frames_seen
                await session.commit_audio()
                await session.wait_for(ResponseDone, 10, after=mark)
                if turn == 6:  # one minute in: everything is warm
                    baseline = tracemalloc.get_traced_memory()[0]
            grown = tracemalloc.get_traced_memory()[0] - baseline
            logged = len(session.frames)
            seen = session.frames_seen
            out = session.frames_out
            await stalled.aclose()
    finally:
        tracemalloc.stop()
    audio = turns * (seconds_per_turn / FRAME_S + 20)
    assert out >= audio  # 30 minutes of audio went through the session...
    assert grown < 2 * 1024 * 1024, f"the session grew by {grown / 1e6:.1f} MB"  # ...not kept
    # Each turn: commit, response started, first-audio metric, transcript, response done;
    # and the first "hello".
    assert logged == 500 and seen == turns * 5 + 1  # the log is a window, numbered for the call
    assert session.conversation.turns[-1].text == f"answer {turns}"


async def _primed(frames, session: AgentSession):  # type: ignore[no-untyped-def]
    """Registers the subscriber (its first step) and yields once."""
    await session.send_text("hello")
    async for frame in frames:
        if isinstance(frame, TextInput):
            yield frame
            return


def test_the_frame_log_is_a_numbered_window() -> None:
    log = FrameLog(3)
    for n in range(5):
        log.append(TextInput(text=str(n)))
    assert (log.total, log.first, len(log)) == (5, 2, 3)
    assert [f.text for f in log.since(3)] == ["3", "4"]  # type: ignore[attr-defined]
    assert [f.text for f in log.since(0)] == ["2", "3", "4"]  # type: ignore[attr-defined]
    assert log.since(9) == []


async def test_a_slow_subscriber_loses_the_oldest_audio_never_events() -> None:
    subscriber = Subscriber(max_audio=2, max_lag=100)
    frames = [AudioFrame(pcm=b"\x00\x00", sample_rate=8000, pts=n) for n in range(4)]
    subscriber.put(frames[0])
    subscriber.put(TextInput(text="kept"))
    for frame in frames[1:]:
        subscriber.put(frame)
    subscriber.close()
    got = []
    while (frame := await subscriber.get()) is not None:
        got.append(frame)
    assert got == [TextInput(text="kept"), frames[2], frames[3]]
    assert subscriber.dropped_audio == 2


async def test_a_subscriber_too_far_behind_is_cut_off_with_a_clear_error() -> None:
    subscriber = Subscriber(max_audio=2, max_lag=3)
    for n in range(4):
        subscriber.put(TextInput(text=str(n)))
    assert len(subscriber) == 0  # its backlog is let go at once
    try:
        await subscriber.get()
    except SubscriberLagged as exc:
        assert "more than 3 frames behind" in str(exc)
    else:
        raise AssertionError("a lagging subscriber was not cut off")
