"""The conversation record built from frames."""

from __future__ import annotations

from pipeflow.conversation import Conversation
from pipeflow.frames import (
    AudioFrame,
    Interrupt,
    PlayoutPosition,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
)


def agent_audio(ms: int) -> AudioFrame:
    return AudioFrame(pcm=b"\0\0" * (24 * ms), sample_rate=24000, item_id="item1")


def test_voice_turns_tool_calls_and_interruption() -> None:
    c = Conversation()
    frames = [
        SpeechStarted(at=1.0),
        SpeechStopped(at=2.5),
        Transcript(role="user", text="Two pizzas please"),
        ResponseStarted(response_id="r1"),
        ToolCall(call_id="c1", name="add_to_order", arguments='{"product":"pizza"}'),
        ToolResult(call_id="c1", output='{"ok":true}'),
        ResponseDone(response_id="r1"),
        ResponseStarted(response_id="r2"),
        agent_audio(500),
        agent_audio(500),
        Transcript(role="agent", text="Added two pizzas."),
        ResponseDone(response_id="r2"),
        ResponseStarted(response_id="r3"),
        agent_audio(200),
        Interrupt(),
        ResponseDone(response_id="r3", status="cancelled"),
        TextInput(text="wait"),
    ]
    for i, frame in enumerate(frames):
        c.observe(frame, now=float(i))
    roles = [(t.role, t.text, t.interrupted) for t in c.turns]
    assert roles == [
        ("user", "Two pizzas please", False),
        ("agent", "Added two pizzas.", False),
        ("agent", "", True),
        ("user", "wait", False),
    ]
    assert c.turns[0].audio_duration == 1.5
    assert abs(c.turns[1].audio_duration - 1.0) < 1e-9
    assert c.turns[1].started_at == 7.0 and c.turns[1].ended_at == 11.0
    assert c.turns[3].source == "text"
    [call] = c.tool_calls
    assert call.name == "add_to_order" and call.output == '{"ok":true}' and not call.is_error
    assert "user: Two pizzas please" in c.transcript()
    assert c.to_dict()["tool_calls"][0]["call_id"] == "c1"


def test_transcript_without_vad_makes_its_own_turn() -> None:
    c = Conversation()
    c.observe(Transcript(role="user", text="hello"))
    c.observe(Transcript(role="user", text="again"))
    assert [t.text for t in c.turns] == ["hello", "again"]


def test_a_cut_after_the_model_finished_still_marks_what_was_heard() -> None:
    # The model sends audio faster than it plays: the response is done long before the
    # caller barges in, and only the sink's played position says how much was heard.
    conversation = Conversation()
    conversation.observe(ResponseStarted(response_id="r1"), now=1.0)
    conversation.observe(AudioFrame(pcm=bytes(48000), sample_rate=24000, item_id="i1"), now=1.0)
    conversation.observe(Transcript(role="agent", text="A long answer.", final=True), now=1.0)
    conversation.observe(ResponseDone(response_id="r1"), now=1.1)
    [turn] = conversation.turns
    assert not turn.interrupted
    conversation.observe(PlayoutPosition(item_id="i1", played_ms=420, interrupted=True), now=1.5)
    assert turn.interrupted and turn.heard_ms == 420
    assert conversation.transcript() == "agent: A long answer. [interrupted after 0.4 s]"
    # A position for an item it never saw, or one played to the end, changes nothing.
    conversation.observe(PlayoutPosition(item_id="other", played_ms=5, interrupted=True))
    conversation.observe(PlayoutPosition(item_id="i1", played_ms=999))
    assert turn.heard_ms == 420
