"""Interruptions that are meant: the engine's tentative speech and the playout's pause."""

from __future__ import annotations

import pytest

from pipeflow.audio.playout import Done, Playout
from pipeflow.conversation.engine import ConversationEngine
from pipeflow.conversation.events import (
    AppendAudio,
    AudioOut,
    CancelResponse,
    CommitAudio,
    ResponseBegan,
    ResponseEnded,
    StartResponse,
)
from pipeflow.frames import (
    AudioFrame,
    Interrupt,
    PausePlayout,
    PlayoutPosition,
    ResumePlayout,
    SpeechConfirmed,
    SpeechStarted,
    SpeechStopped,
    TurnCommitted,
)

CALLER = AudioFrame(pcm=b"\x01\x00" * 320, sample_rate=16000)


def events(engine: ConversationEngine) -> list[type]:
    """The kinds of frame the engine emitted, caller audio (passed through) left out."""
    return [type(f) for f in engine.frames_to_emit() if type(f) is not AudioFrame]


def speaking_engine() -> ConversationEngine:
    """An engine whose agent is mid-answer, with one second of audio sent downstream."""
    engine = ConversationEngine()
    engine.start(0.0)
    engine.receive_event(ResponseBegan(response_id="r1"), 0.0)
    engine.receive_event(AudioOut(item_id="a1", pcm=b"\x00\x00" * 24000, sample_rate=24000), 0.0)
    engine.commands_to_send()
    engine.frames_to_emit()
    return engine


def test_tentative_speech_pauses_the_agent_and_a_stop_resumes_it_with_nothing_sent() -> None:
    engine = speaking_engine()
    engine.receive_frame(SpeechStarted(at=1.0, tentative=True), 1.0)
    assert events(engine) == [PausePlayout]  # the speech frame waits for the verdict
    engine.receive_frame(CALLER, 1.1)  # a "mhmm": held back from the model
    assert engine.commands_to_send() == []
    engine.receive_frame(SpeechStopped(at=1.3), 1.6)
    assert events(engine) == [ResumePlayout]  # nobody's turn: nothing goes downstream
    engine.receive_frame(TurnCommitted(at=1.9), 1.9)  # its commit: nothing to answer
    assert engine.commands_to_send() == []
    assert engine.turns.state.value == "speaking" and engine.responding


def test_confirmed_speech_barges_in_and_sends_the_held_audio_then_the_turn() -> None:
    engine = speaking_engine()
    engine.receive_frame(SpeechStarted(at=1.0, tentative=True), 1.0)
    engine.receive_frame(CALLER, 1.1)
    engine.frames_to_emit()
    engine.receive_frame(SpeechConfirmed(at=1.0, words="no wait"), 1.9)
    commands = engine.commands_to_send()
    assert [type(c) for c in commands] == [CancelResponse, AppendAudio]
    assert events(engine) == [Interrupt, SpeechStarted, SpeechConfirmed]
    engine.receive_event(ResponseEnded(response_id="r1", status="cancelled"), 2.0)
    engine.receive_frame(CALLER, 2.1)
    engine.receive_frame(TurnCommitted(at=2.5), 2.5)
    assert [type(c) for c in engine.commands_to_send()] == [AppendAudio, CommitAudio,
                                                            StartResponse]


def test_a_commit_of_tentative_speech_makes_it_a_turn() -> None:
    engine = speaking_engine()
    engine.receive_frame(SpeechStarted(at=1.0, tentative=True), 1.0)
    engine.receive_frame(CALLER, 1.1)
    engine.receive_frame(TurnCommitted(at=1.5), 1.5)
    kinds = [type(c) for c in engine.commands_to_send()]
    assert kinds[:3] == [CancelResponse, AppendAudio, CommitAudio]


def test_tentative_speech_to_an_idle_agent_is_an_ordinary_turn() -> None:
    engine = ConversationEngine()
    engine.start(0.0)
    engine.receive_frame(SpeechStarted(at=1.0, tentative=True), 1.0)
    assert events(engine) == [SpeechStarted]
    engine.receive_frame(CALLER, 1.1)
    engine.receive_frame(SpeechStopped(at=1.3), 1.6)
    engine.receive_frame(TurnCommitted(at=1.9), 1.9)  # a "mhmm" answering a question
    assert [type(c) for c in engine.commands_to_send()] == [AppendAudio, CommitAudio,
                                                            StartResponse]


def test_plain_speech_still_barges_in_at_once() -> None:
    engine = speaking_engine()
    engine.receive_frame(SpeechStarted(at=1.0), 1.0)
    assert [type(c) for c in engine.commands_to_send()] == [CancelResponse]
    assert Interrupt in events(engine)


def test_the_truncation_after_a_paused_barge_in_is_where_the_pause_held_it() -> None:
    engine = speaking_engine()
    engine.receive_frame(SpeechStarted(at=1.0, tentative=True), 1.0)
    engine.receive_frame(SpeechConfirmed(at=1.0), 1.9)
    engine.commands_to_send()
    engine.receive_frame(PlayoutPosition(item_id="a1", played_ms=620, interrupted=True), 1.9)
    [truncate] = engine.commands_to_send()
    assert truncate.audio_end_ms == 620  # type: ignore[attr-defined]
    past = speaking_engine()
    past.receive_frame(SpeechStarted(at=1.0), 1.0)
    past.commands_to_send()
    past.receive_frame(PlayoutPosition(item_id="a1", played_ms=5000, interrupted=True), 1.1)
    [truncate] = past.commands_to_send()
    assert truncate.audio_end_ms == 1000  # never past what the model sent


def chunk(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)


def test_playout_pause_holds_the_queue_and_resume_plays_it_on_from_there() -> None:
    playout = Playout(16000)
    for _ in range(10):
        playout.add(chunk(100), "a1", 0.0)  # one second queued
    chunks, _ = playout.release(0.25)
    assert len(chunks) == 13 and chunks[-1].end == pytest.approx(0.26)  # 20 ms pieces
    playout.pause(0.25)
    assert playout.release(2.0)[0] == [] and playout.next_wake() is None
    playout.resume(2.0)
    chunks, _ = playout.release(2.0)
    assert [round(c.start, 6) for c in chunks] == [2.0]  # the next piece, at the resume
    _, events = playout.release(10.0)
    assert events == [] or all(not isinstance(e, Done) for e in events)
    playout.close()
    _, events = playout.release(10.0)
    assert [e for e in events if isinstance(e, Done)] == [Done("a1", 1000)]


def test_an_interrupt_while_paused_reports_what_played_before_the_pause() -> None:
    playout = Playout(16000)
    for _ in range(10):
        playout.add(chunk(100), "a1", 0.0)
    playout.release(0.25)
    playout.pause(0.25)
    _, done = playout.interrupt(1.2)
    assert done == [Done("a1", 260, interrupted=True)]  # the piece playing at the pause ends
    assert playout.paused_at is None and playout.idle
