"""The conversation engine paired in memory with the local server's session: no sockets.

``Pair`` wires ``ConversationEngine`` -> ``RealtimeAdapter`` -> ``RealtimeProtocol``
-> ``ServerSession`` and back, on a hand-moved clock: commands go to the
server at the current time, server events come back when they fall due,
timers fire when their deadline is reached, and a simulated sink plays the
agent's audio in real time and reports the played position on an interrupt.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.conversation.engine import DRAIN_TIMER, ConversationEngine, EngineOptions
from pipeflow.conversation.events import (
    AddMessage,
    AudioOut,
    CancelResponse,
    CancelTimer,
    Command,
    CommitAudio,
    ConnectionLost,
    InputCommitted,
    ModelError,
    ModelNotice,
    Reconnected,
    ResponseBegan,
    ResponseEnded,
    SendToolResult,
    SetTimer,
    SpeechBegan,
    SpeechEnded,
    StartResponse,
    TextOut,
    TimerFired,
    ToolCalled,
    TruncateItem,
    UserTranscript,
)
from pipeflow.errors import LocalError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
    ModelEvent,
    PlayoutPosition,
    ResponseDone,
    ResponseStarted,
    Say,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.realtime import events as ev
from pipeflow.realtime.adapter import RealtimeAdapter
from pipeflow.realtime.protocol import RealtimeProtocol, SessionConfig
from pipeflow.realtime.server_faults import Faults
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from pipeflow.turns import Turn
from tests.realtime_fixtures import TEST_SCRIPT

RATE = 24000
SILENCE = bytes(960)  # 20 ms at 24 kHz


def weather(call: ToolCall) -> ToolResult:
    assert json.loads(call.arguments) == {"location": "Paris"}
    return ToolResult(call_id=call.call_id, name=call.name,
                      output=json.dumps({"temperature": 21, "city": "Paris"}))


class Pair:
    """An engine and a local server session, talking through memory on a manual clock.

    Args:
        tools: answers each ``ToolCall`` (``None``: nobody answers).
        model_turns: server VAD (the model commits turns).
        faults: faults the server injects.
        options: more ``EngineOptions`` fields.
    """

    def __init__(self, *, tools: Callable[[ToolCall], ToolResult] | None = weather,
                 model_turns: bool = False, faults: Faults | None = None,
                 first_audio_delay_ms: int = 0, speed: float = 1.0, **options: Any) -> None:
        options.setdefault("tool_timeout_s", None)
        options.setdefault("drain_timeout_s", 30.0)
        self.now = 0.0
        self.tools = tools
        self.engine = ConversationEngine(EngineOptions(model_turns=model_turns, **options))
        self.adapter = RealtimeAdapter()
        self.faults = faults or Faults()
        self.first_audio_delay_ms = first_audio_delay_ms
        self.speed = speed
        self.timers: dict[str, float] = {}
        self.out: list[Frame] = []
        self.commands: list[Command] = []
        self.inputs: list[Any] = []  # engine inputs delivered, in order
        self.server_errors: list[dict[str, Any]] = []
        self.wire: list[bytes] = []  # server -> client, sent and not yet delivered
        self.playing: dict[str, tuple[float, float]] = {}  # item -> (start, audio seconds)
        self.reported: list[int] = []  # played ms the sink reported on interrupts
        self.turn_detection = "server_vad" if model_turns else "none"
        self.connect()
        self.engine.start(self.now)
        self._collect()

    def connect(self) -> None:
        """A fresh server session and client protocol (a new connection)."""
        self.server = ServerSession(TEST_SCRIPT, ServerOptions(
            speech="tones", speed=self.speed, first_audio_delay_ms=self.first_audio_delay_ms,
            faults=self.faults))
        self.server.start(self.now)
        self.protocol = RealtimeProtocol()
        self.protocol.update_session(SessionConfig(turn_detection=self.turn_detection))
        self._to_server()
        self.pull()
        self.deliver()

    # -- moving things ------------------------------------------------------------------

    def _to_server(self) -> None:
        for data in self.protocol.data_to_send():
            self.server.receive_data(data, self.now)

    def _collect(self) -> None:
        """Take the engine's outputs: commands to the server, timers, frames to the sink."""
        engine = self.engine
        while True:
            commands = engine.commands_to_send()
            for command in commands:
                if isinstance(command, CancelResponse):  # the engine believes one runs
                    assert self.engine_view_active(), self.inputs[-3:]
            self.commands += commands
            self.adapter.send(commands, self.protocol)
            self._to_server()
            for timer in engine.timers_to_set():
                if isinstance(timer, SetTimer):
                    self.timers[timer.name] = timer.at
                else:
                    self.timers.pop(timer.name, None)
            frames = engine.frames_to_emit()
            if not frames:
                return
            for frame in frames:
                self.out.append(frame)
                self._sink(frame)

    def _sink(self, frame: Frame) -> None:
        """A playout sink: agent audio plays in real time from its arrival."""
        if isinstance(frame, AudioFrame) and frame.item_id:
            start, seconds = self.playing.get(frame.item_id, (self.now, 0.0))
            self.playing[frame.item_id] = (start, seconds + frame.duration)
        elif isinstance(frame, Interrupt):
            for item, (start, seconds) in list(self.playing.items()):
                played = min(seconds, self.now - start)
                if played < seconds:
                    self.reported.append(round(played * 1000))
                    self.feed(PlayoutPosition(item_id=item, played_ms=round(played * 1000),
                                              interrupted=True))
            self.playing.clear()
        elif isinstance(frame, ToolCall) and self.tools is not None:
            self.feed(self.tools(frame))

    def engine_view_active(self) -> bool:
        """Whether the last response input the engine got was a begin, not an end."""
        for item in reversed(self.inputs):
            if isinstance(item, ResponseBegan):
                return True
            if isinstance(item, ResponseEnded | Reconnected):
                return False
        return False

    def feed(self, frame: Frame) -> None:
        """A frame into the engine (from upstream, or fed back by a later stage)."""
        self.engine.receive_frame(frame, self.now)
        self._collect()

    def event(self, item: Any) -> None:
        """A model input straight into the engine (what the transport would decode)."""
        self.inputs.append(item)
        self.engine.receive_event(item, self.now)
        self._collect()

    def pull(self) -> None:
        """Server events due now onto the wire (not yet delivered)."""
        self.wire += self.server.data_to_send(self.now)

    def deliver(self) -> None:
        """Everything on the wire into the engine, in order."""
        wire, self.wire = self.wire, []
        for data in wire:
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, ev.ErrorEvent):
                    self.server_errors.append(json.loads(data))
                item = self.adapter.translate(event)
                if item is not None:
                    self.event(item)

    def fire_timers(self) -> None:
        for name, at in sorted(self.timers.items(), key=lambda kv: kv[1]):
            if at <= self.now and self.timers.get(name) == at:
                del self.timers[name]
                self.event(TimerFired(name=name))

    def step(self, seconds: float = 0.0) -> None:
        self.now += seconds
        self.pull()
        self.deliver()
        self.fire_timers()

    def run(self, seconds: float, step: float = 0.01) -> None:
        """Move time ``seconds`` forward in ``step``s, delivering and firing as it goes."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step(min(step, end - self.now))

    def run_until(self, done: Callable[[], bool], limit: float = 60.0,
                  step: float = 0.01) -> None:
        end = self.now + limit
        while not done():
            assert self.now < end, "the condition never held"
            self.step(step)

    def speak(self, seconds: float = 0.2) -> None:
        """Caller audio, one 20 ms frame per 20 ms of clock."""
        for n in range(round(seconds / 0.02)):
            self.feed(AudioFrame(pcm=SILENCE, sample_rate=RATE, pts=n * 0.02))
            self.step(0.02)

    # -- reading results ----------------------------------------------------------------

    def of(self, cls: type) -> list[Any]:
        return [f for f in self.out if isinstance(f, cls)]

    def sent(self) -> list[str]:
        return [type(e).__struct_config__.tag for e in self.server.received]  # type: ignore[union-attr]

    def finals(self) -> list[str]:
        return [t.text for t in self.of(Transcript) if t.role == "agent" and t.final]

    def errors(self) -> list[ErrorFrame]:
        return self.of(ErrorFrame)

    def end(self) -> None:
        """End the input and run until the engine is finished."""
        self.feed(EndOfStream())
        self.run_until(lambda: self.engine.finished)
        self.engine.close()


# --- whole turns ------------------------------------------------------------------------


def test_a_voice_turn_commits_and_streams_the_answer_in_time() -> None:
    pair = Pair(first_audio_delay_ms=200)
    pair.speak(0.2)
    pair.feed(TurnCommitted(at=0.2))
    committed_at = pair.now
    pair.run_until(lambda: bool(pair.of(ResponseDone)))
    assert pair.sent()[:11] == ["session.update"] + ["input_audio_buffer.append"] * 10
    assert pair.sent()[11:13] == ["input_audio_buffer.commit", "response.create"]
    user = [t for t in pair.of(Transcript) if t.role == "user"]
    assert [t.text for t in user] == ["What is the weather in Paris?"]  # the script's first turn
    [metric] = pair.of(Metric)
    assert metric.name == "commit_to_first_audio"
    assert metric.value == pytest.approx(0.2, abs=0.011)  # the server's delay, on our clock
    first_audio = next(f for f in pair.out if isinstance(f, AudioFrame) and f.item_id)
    assert pair.out.index(metric) == pair.out.index(first_audio) - 1
    audio = [f for f in pair.of(AudioFrame) if f.item_id]
    pts = [f.pts for f in audio]
    assert pts[0] == 0 and all(b > a for a, b in itertools.pairwise(pts))
    assert pts[-1] + audio[-1].duration == pytest.approx(sum(f.duration for f in audio))
    assert pair.finals()[0] == "Let me check."
    assert pair.engine.turns.history[:4] == [Turn.IDLE, Turn.THINKING, Turn.SPEAKING,
                                            Turn.TOOLS]
    assert committed_at < pair.now and not pair.errors()


def test_a_commit_with_no_audio_asks_for_nothing() -> None:
    pair = Pair()
    pair.feed(TurnCommitted())
    pair.run(0.5)
    assert pair.sent() == ["session.update"]
    assert pair.of(TurnCommitted) == [TurnCommitted()]  # passed on all the same
    assert pair.engine.idle


def test_a_text_turn() -> None:
    pair = Pair()
    pair.feed(TextInput(text="I would like to order."))
    assert [type(c) for c in pair.commands] == [AddMessage, StartResponse]
    pair.run_until(lambda: pair.engine.idle)
    assert pair.finals() == ["Sure, what would you like?"]
    assert [d.status for d in pair.of(ResponseDone)] == ["completed"]
    assert pair.of(TextInput) == [TextInput(text="I would like to order.")]
    assert pair.engine.turns.history == [Turn.IDLE, Turn.THINKING, Turn.SPEAKING, Turn.IDLE]
    pair.end()
    assert pair.engine.turns.state is Turn.CLOSED and not pair.errors()


def test_a_system_message_asks_for_no_answer() -> None:
    pair = Pair()
    pair.feed(TextInput(text="The caller is a regular.", role="system"))
    assert [type(c) for c in pair.commands] == [AddMessage]
    assert pair.engine.idle


def test_say_is_spoken_verbatim() -> None:
    pair = Pair()
    pair.feed(Say(text="Welcome to the order line."))
    [start] = pair.commands
    assert start == StartResponse(request_id="pf_response_1", say="Welcome to the order line.")
    pair.run_until(lambda: pair.engine.idle)
    assert pair.finals() == ["Welcome to the order line."]


def test_respond_on_start_asks_for_the_greeting() -> None:
    pair = Pair(respond_on_start=True)
    pair.run_until(lambda: pair.engine.idle)
    assert pair.finals() == ["Hello from the test server."]


# --- tools ------------------------------------------------------------------------------


def test_a_tool_round_trip() -> None:
    pair = Pair()
    pair.feed(TextInput(text="How is the weather?"))
    pair.run_until(lambda: pair.engine.idle)
    [call] = pair.of(ToolCall)
    assert call.name == "get_weather"
    [result] = [c for c in pair.commands if isinstance(c, SendToolResult)]
    assert result.call_id == call.call_id and json.loads(result.output)["temperature"] == 21
    starts = [c for c in pair.commands if isinstance(c, StartResponse)]
    assert len(starts) == 2  # the question, then one request after the result
    assert pair.commands.index(result) < pair.commands.index(starts[1])
    assert pair.finals() == ["Let me check.", "It is 21 degrees in Paris."]
    assert Turn.TOOLS in pair.engine.turns.history and not pair.errors()


def test_results_wait_for_the_response_that_made_the_calls() -> None:
    pair = Pair(tools=None)
    call = ToolCalled(call_id="c1", name="lookup", arguments="")
    pair.event(ResponseBegan(response_id="r1"))
    pair.event(call)
    pair.event(call)  # described twice (arguments.done and output_item.done): one call
    [frame] = pair.of(ToolCall)
    assert frame.arguments == "{}"
    pair.feed(ToolResult(call_id="c1", is_error=True))
    assert not [c for c in pair.commands if isinstance(c, SendToolResult)]  # still responding
    pair.event(ResponseEnded(response_id="r1"))
    [result] = [c for c in pair.commands if isinstance(c, SendToolResult)]
    assert result.output == '{"error": "the tool failed"}'
    assert isinstance(pair.commands[-1], StartResponse)
    pair.feed(ToolResult(call_id="c1", output="late"))  # after it was sent: ignored
    assert len([c for c in pair.commands if isinstance(c, SendToolResult)]) == 1


def test_a_tool_that_never_answers_gets_an_error_result_on_time() -> None:
    pair = Pair(tools=None, tool_timeout_s=2.0)
    pair.feed(TextInput(text="weather"))
    pair.run_until(lambda: bool(pair.of(ToolCall)))
    called_at = pair.now
    [call] = pair.of(ToolCall)
    pair.run_until(lambda: bool(pair.errors()))
    assert pair.now - called_at == pytest.approx(2.0, abs=0.011)
    [error] = pair.errors()
    assert error.code == "tool_timeout" and not error.fatal and call.call_id in error.message
    pair.run_until(lambda: pair.engine.idle)
    [result] = [c for c in pair.commands if isinstance(c, SendToolResult)]
    assert "did not answer within 2 s" in json.loads(result.output)["error"]
    assert pair.finals()[-1].startswith("It is")  # the script goes on with the error result


def test_a_result_in_time_cancels_the_tool_timer() -> None:
    pair = Pair(tool_timeout_s=2.0)
    pair.feed(TextInput(text="weather"))
    pair.run_until(lambda: pair.engine.idle)
    assert pair.timers == {} and not pair.errors()
    pair.run(3.0)
    assert not pair.errors()


# --- barge-in, cancel, truncation ------------------------------------------------------------


def test_barge_in_cancels_interrupts_and_truncates_at_the_played_position() -> None:
    pair = Pair()
    pair.feed(Say(text="This is a long answer that goes on for quite a while."))
    pair.run(0.5)
    assert pair.engine.responding
    item = next(f.item_id for f in pair.of(AudioFrame) if f.item_id)
    sent_before = len([f for f in pair.of(AudioFrame) if f.item_id])
    pair.feed(SpeechStarted(at=3.0))  # local VAD: the caller speaks over the answer
    said = [f for f in pair.out if not isinstance(f, PlayoutPosition)]
    assert [type(f) for f in said[-2:]] == [Interrupt, SpeechStarted]
    assert isinstance(pair.commands[-2], CancelResponse)
    [truncate] = [c for c in pair.commands if isinstance(c, TruncateItem)]
    assert truncate.item_id == item
    # The cut goes on downstream as well, for the session's record of what was heard.
    [heard] = [f for f in pair.of(PlayoutPosition) if f.interrupted]
    assert (heard.item_id, heard.played_ms) == (item, truncate.audio_end_ms)
    # what the sink played on the clock: from the first audio (one 10 ms step in) to now
    assert pair.reported == [truncate.audio_end_ms] == [490]
    sent_ms = sum(f.duration for f in pair.of(AudioFrame) if f.item_id) * 1000
    assert 0 < truncate.audio_end_ms <= sent_ms
    pair.run_until(lambda: bool(pair.of(ResponseDone)))
    assert pair.server.truncated == {item: 490}  # the server took it: within what it sent
    assert pair.of(ResponseDone)[-1].status == "cancelled"
    assert len([f for f in pair.of(AudioFrame) if f.item_id]) == sent_before  # muted tail
    assert pair.engine.turns.state is Turn.LISTENING
    assert not pair.errors() and not pair.server_errors


def test_truncation_is_never_past_the_audio_the_model_sent() -> None:
    pair = Pair(speed=0)  # the whole answer arrives at once
    pair.feed(Say(text="Short."))
    pair.run_until(lambda: pair.engine.idle)
    audio = [f for f in pair.of(AudioFrame) if f.item_id]
    total_ms = sum(f.duration for f in audio) * 1000
    pair.feed(PlayoutPosition(item_id=audio[0].item_id, played_ms=round(total_ms) + 5000,
                              interrupted=True))
    [truncate] = [c for c in pair.commands if isinstance(c, TruncateItem)]
    assert 0 < truncate.audio_end_ms == round(total_ms)
    pair.run(0.1)
    assert not pair.server_errors  # unclamped, the server refuses: "already shorter"


def test_an_app_cancel_stops_the_answer_and_frees_the_floor() -> None:
    pair = Pair()
    pair.feed(Say(text="A long answer that the application will cut short."))
    pair.run(0.3)
    pair.feed(Interrupt(reason="cancel"))
    assert pair.of(Interrupt) == [Interrupt(reason="cancel")]
    assert isinstance(pair.commands[-2], CancelResponse)
    assert pair.commands[-1] == TruncateItem(item_id=pair.of(AudioFrame)[0].item_id,
                                             audio_end_ms=290)
    pair.run_until(lambda: pair.engine.idle)
    assert pair.of(ResponseDone)[-1].status == "cancelled"
    assert pair.engine.turns.state is Turn.IDLE and pair.server.cancelled


def test_an_interrupt_with_nothing_playing_cancels_nothing() -> None:
    pair = Pair()
    pair.feed(Interrupt(reason="cancel"))
    assert pair.of(Interrupt) == [Interrupt(reason="cancel")]  # it still reaches the sink
    assert not any(isinstance(c, CancelResponse) for c in pair.commands)


def test_a_cancel_that_raced_the_end_of_the_answer_is_no_error() -> None:
    pair = Pair()
    pair.feed(Say(text="Quick."))
    pair.run(0.05)
    while pair.server.responding:  # the server finishes; the events are still on the wire
        pair.now += 0.01
        pair.pull()
    pair.feed(SpeechStarted(at=1.0))
    assert isinstance(pair.commands[-1], CancelResponse | TruncateItem)
    pair.step()
    pair.step()
    assert [e["error"]["code"] for e in pair.server_errors] == ["response_cancel_not_active"]
    assert not pair.errors()
    assert pair.of(ResponseDone)[-1].status == "completed"


def test_a_response_the_model_starts_while_the_caller_speaks_is_cancelled() -> None:
    pair = Pair()
    pair.feed(SpeechStarted(at=0.0))
    pair.event(ResponseBegan(response_id="r9"))
    assert pair.commands[-1] == CancelResponse(response_id="r9")
    pair.event(AudioOut(item_id="i9", pcm=SILENCE, sample_rate=RATE))
    assert not [f for f in pair.of(AudioFrame) if f.item_id]  # muted
    pair.event(ResponseEnded(response_id="r9", status="cancelled"))
    assert pair.engine.turns.state is Turn.LISTENING


# --- deferred responses ------------------------------------------------------------------------


def test_requests_made_while_busy_are_answered_in_turn_plain_ones_merged() -> None:
    pair = Pair()
    pair.feed(Say(text="First."))
    pair.feed(TextInput(text="order"))
    pair.feed(TextInput(text="Thanks, goodbye."))  # merges with the one before
    pair.feed(Say(text="Last."))
    starts = [c for c in pair.commands if isinstance(c, StartResponse)]
    assert starts == [StartResponse(request_id="pf_response_1", say="First.")]
    pair.run_until(lambda: pair.engine.idle)
    starts = [c for c in pair.commands if isinstance(c, StartResponse)]
    assert [s.say for s in starts] == ["First.", None, "Last."]
    assert [s.request_id for s in starts] == ["pf_response_1", "pf_response_2",
                                              "pf_response_3"]
    assert len(pair.of(ResponseDone)) == 3
    assert not pair.server_errors  # never a response.create while one was active


# --- the end of input ---------------------------------------------------------------------------


def test_end_of_input_waits_for_the_answer() -> None:
    pair = Pair()
    pair.feed(Say(text="Wait for me to finish."))
    pair.feed(EndOfStream())
    assert pair.timers[DRAIN_TIMER] == pytest.approx(30.0)
    assert not pair.engine.finished
    pair.run_until(lambda: pair.engine.finished)
    assert pair.finals() == ["Wait for me to finish."] and not pair.errors()


def test_end_of_input_stops_at_the_drain_deadline() -> None:
    pair = Pair(faults=Faults(stall_after_deltas=1), drain_timeout_s=1.5)
    pair.feed(Say(text="This answer stalls."))
    pair.run(0.2)
    pair.feed(EndOfStream())
    ended_at = pair.now
    pair.run_until(lambda: pair.engine.finished)
    assert pair.now - ended_at == pytest.approx(1.5, abs=0.011)
    [error] = pair.errors()
    assert "drain_timeout_s=1.5" in error.message and not error.fatal


def test_with_model_turns_input_ending_mid_turn_commits_it() -> None:
    pair = Pair(model_turns=True)
    pair.feed(AudioFrame(pcm=SILENCE, sample_rate=RATE))
    pair.event(SpeechBegan(at=0.0, item_id="u1"))
    pair.feed(TurnCommitted())  # passed on: the model commits turns itself
    assert not any(isinstance(c, CommitAudio) for c in pair.commands)
    pair.feed(EndOfStream())
    assert [type(c) for c in pair.commands[-2:]] == [CommitAudio, StartResponse]
    assert pair.engine.turns.state is Turn.THINKING


def test_with_model_turns_the_models_commit_starts_the_clock() -> None:
    pair = Pair(model_turns=True)
    pair.feed(AudioFrame(pcm=SILENCE, sample_rate=RATE))
    pair.event(SpeechBegan(at=0.0, item_id="u1"))
    pair.now = 1.0
    pair.event(SpeechEnded(at=0.9, item_id="u1"))
    pair.event(InputCommitted(item_id="u1"))
    pair.now = 1.25
    pair.event(ResponseBegan(response_id="r1"))
    pair.event(AudioOut(item_id="i1", pcm=SILENCE, sample_rate=RATE))
    [metric] = pair.of(Metric)
    assert metric.value == pytest.approx(0.25)
    assert [type(f) for f in pair.out[1:3]] == [SpeechStarted, SpeechStopped]


# --- errors and the connection -------------------------------------------------------------


def test_a_refused_request_frees_the_floor_and_is_reported() -> None:
    pair = Pair(faults=Faults(reject=["response.create"]))
    pair.feed(TextInput(text="order"))
    pair.run(0.1)
    [error] = pair.errors()
    assert error.error_type == "server_error" and not error.fatal
    assert error.code == "server_error" and "injected fault" in error.message
    assert pair.engine.idle and pair.engine.turns.state is Turn.IDLE
    pair.end()  # nothing is waited for


def test_other_model_errors_are_passed_on() -> None:
    pair = Pair()
    pair.event(ModelError(message="the model server reported an error (x): bad", code="bad",
                          error_type="x", event_id="evt_1"))
    assert pair.of(ErrorFrame) == [ErrorFrame(stage="realtime", message=(
        "the model server reported an error (x): bad"), code="bad", event_id="evt_1",
        error_type="x")]
    pair.event(ModelError(message="late", no_active_response=True))  # no cancel was sent
    assert len(pair.errors()) == 2
    pair.event(ModelNotice(event="output_audio_buffer.started", data={"response_id": "r"}))
    assert pair.out[-1] == ModelEvent(event="output_audio_buffer.started",
                                      data={"response_id": "r"})


def test_reconnect_mid_answer_reports_the_loss_and_goes_on() -> None:
    pair = Pair(tool_timeout_s=5.0, tools=None)
    pair.feed(TextInput(text="weather"))
    pair.run_until(lambda: bool(pair.of(ToolCall)))
    assert any(name.startswith("tool:") for name in pair.timers)
    pair.event(Reconnected(attempt=1, reason="the server closed the connection (code 1011)"))
    assert not any(name.startswith("tool:") for name in pair.timers)  # timers cancelled
    [error] = pair.errors()
    assert error.code == "reconnected" and "answer in progress was lost" in error.message
    assert pair.of(ResponseDone)[-1].status == "failed"
    assert pair.engine.idle and pair.engine.turns.state is Turn.IDLE
    pair.connect()
    pair.feed(TextInput(text="order"))
    pair.run_until(lambda: pair.engine.idle)
    assert pair.finals()[-1] == "Sure, what would you like?"
    assert len(pair.errors()) == 1


def test_connection_lost_for_good_ends_with_a_fatal_error() -> None:
    pair = Pair()
    pair.feed(Say(text="Going, going, gone."))
    pair.run(0.2)
    pair.event(ConnectionLost(message="lost the connection to the Realtime server"))
    assert [type(f) for f in pair.out[-3:]] == [ResponseDone, ErrorFrame, EndOfStream]
    assert pair.of(ResponseDone)[-1].status == "failed"
    assert pair.errors()[-1].fatal and pair.errors()[-1].code == "connection_lost"
    assert pair.engine.lost and pair.engine.finished
    assert pair.engine.turns.state is Turn.ERROR


def test_an_exception_in_a_handler_moves_the_turns_to_error() -> None:
    engine = ConversationEngine()
    bad = PlayoutPosition(item_id="i1", played_ms="soon", interrupted=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        engine.receive_frame(bad, 0.0)
    assert engine.turns.state is Turn.ERROR
    engine.receive_frame(TextInput(text="hi"), 0.0)  # a final state ignores what follows
    assert engine.turns.state is Turn.ERROR


# --- random interleavings -------------------------------------------------------------------

WORDS = ["I would like to order.", "weather", "Thanks, goodbye.", "hello"]

Step_ = tuple[str, Any]
steps = st.lists(st.one_of(
    st.tuples(st.just("text"), st.sampled_from(WORDS)),
    st.tuples(st.just("say"), st.sampled_from(["Okay.", "One moment please, I am looking."])),
    st.tuples(st.just("voice"), st.integers(1, 5)),
    st.tuples(st.just("barge"), st.none()),
    st.tuples(st.just("stop"), st.none()),
    st.tuples(st.just("interrupt"), st.none()),
    st.tuples(st.just("wait"), st.floats(0.01, 1.5)),
    st.tuples(st.just("lag"), st.floats(0.01, 0.5)),
), max_size=14)


def play(pair: Pair, step: Step_) -> None:
    kind, arg = step
    if kind == "text":
        pair.feed(TextInput(text=arg))
    elif kind == "say":
        pair.feed(Say(text=arg))
    elif kind == "voice":
        pair.speak(0.02 * arg)
        pair.feed(TurnCommitted())
    elif kind == "barge":
        pair.feed(SpeechStarted(at=pair.now))
    elif kind == "stop":
        pair.feed(SpeechStopped(at=pair.now))
    elif kind == "interrupt":
        pair.feed(Interrupt(reason="cancel"))
    elif kind == "wait":
        pair.run(arg)
    else:  # the server runs ahead: its events are in flight, not yet delivered
        end = pair.now + arg
        while pair.now < end:
            pair.now += 0.01
            pair.pull()


class Watched(Pair):
    """A pair that checks, as it goes, what the engine sends and emits."""

    def __init__(self) -> None:
        self.cancelled_since: int | None = None  # index in out of the last cancel
        super().__init__()

    def _collect(self) -> None:
        before = len(self.commands)
        super()._collect()
        for command in self.commands[before:]:
            if isinstance(command, StartResponse):
                # never a request while one is asked for or running (as the engine saw it)
                assert not self.engine_view_active()
                assert not self._outstanding(command)
            if isinstance(command, CancelResponse):
                self.cancelled_since = len(self.out)

    def _outstanding(self, new: StartResponse) -> bool:
        """Whether an earlier request has not been answered (begun or refused) yet."""
        earlier = [c for c in self.commands if isinstance(c, StartResponse) and c is not new]
        if not earlier:
            return False
        last = earlier[-1].request_id
        answered = sum(isinstance(i, ResponseBegan) for i in self.inputs)
        refused = {i.request_id for i in self.inputs if isinstance(i, ModelError)}
        return answered < len(earlier) and last not in refused

    def event(self, item: Any) -> None:
        super().event(item)
        if isinstance(item, ResponseEnded):
            if self.cancelled_since is not None:  # nothing of a cancelled answer was played
                tail = self.out[self.cancelled_since:]
                assert not [f for f in tail if isinstance(f, AudioFrame) and f.item_id]
            self.cancelled_since = None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_random_interleavings_keep_the_engine_consistent(script: list[Step_]) -> None:
    pair = Watched()
    for step in script:
        play(pair, step)
        if pair.engine.idle:
            assert not pair.engine.turns.busy
    pair.end()
    # every refusal was a cancel that raced an answer's end, and none was an error frame
    assert {e["error"]["code"] for e in pair.server_errors} <= {"response_cancel_not_active"}
    assert not pair.errors(), pair.errors()
    assert pair.engine.idle and pair.engine.turns.state is Turn.CLOSED
    calls = {c.call_id for c in pair.of(ToolCall)}
    assert calls == {c.call_id for c in pair.commands if isinstance(c, SendToolResult)}
    assert len(pair.of(ResponseStarted)) == len(pair.of(ResponseDone))
    for frame in pair.of(AudioFrame):
        assert frame.item_id or frame.sample_rate == RATE


inputs = st.lists(st.one_of(
    st.builds(ResponseBegan, response_id=st.sampled_from(["r1", "r2", ""])),
    st.builds(ResponseEnded, status=st.sampled_from(["completed", "cancelled"])),
    st.builds(AudioOut, item_id=st.sampled_from(["i1", "i2"]), pcm=st.just(SILENCE),
              sample_rate=st.just(RATE)),
    st.builds(TextOut, item_id=st.just("i1"), text=st.just("hi"), final=st.booleans()),
    st.builds(UserTranscript, item_id=st.just("u1"), text=st.just("hello")),
    st.builds(ToolCalled, call_id=st.sampled_from(["c1", "c2"]), name=st.just("t")),
    st.builds(SpeechBegan), st.builds(SpeechEnded), st.builds(InputCommitted),
    st.builds(ModelError, message=st.just("bad"),
              request_id=st.sampled_from(["", "pf_response_1", "pf_response_2"]),
              no_active_response=st.booleans()),
    st.builds(Reconnected),
    st.builds(TimerFired, name=st.sampled_from([DRAIN_TIMER, "tool:c1", "tool:c2", "x"])),
    st.builds(AudioFrame, pcm=st.just(SILENCE), sample_rate=st.just(RATE)),
    st.builds(TurnCommitted), st.builds(TextInput, text=st.just("hi")),
    st.builds(Say, text=st.just("ok")), st.builds(SpeechStarted), st.builds(SpeechStopped),
    st.builds(Interrupt), st.builds(ToolResult, call_id=st.sampled_from(["c1", "c2"])),
    st.builds(PlayoutPosition, item_id=st.sampled_from(["i1", "i2"]),
              played_ms=st.integers(-10, 10_000), interrupted=st.booleans()),
    st.builds(EndOfStream),
), max_size=40)


@given(inputs, st.booleans())
def test_any_input_sequence_keeps_the_promises(items: list[Any], model_turns: bool) -> None:
    """Whatever a model or pipeline sends, in any order, the engine never raises, cancels
    only a response it saw begin and not end, and asks for one response at a time."""
    engine = ConversationEngine(EngineOptions(model_turns=model_turns, tool_timeout_s=1.0))
    engine.start(0.0)
    active = False  # as the engine was told
    waiting = False  # a StartResponse not yet begun or refused
    request = ""
    sent_ms: dict[str, float] = {}
    for n, item in enumerate(items):
        if isinstance(item, Frame):
            engine.receive_frame(item, float(n))
        else:
            engine.receive_event(item, float(n))
            if isinstance(item, ResponseBegan):
                active, waiting = True, False
            elif isinstance(item, ResponseEnded):
                active = False
            elif isinstance(item, Reconnected):
                active = waiting = False
                sent_ms.clear()
            elif isinstance(item, ModelError) and item.request_id == request:
                waiting = False
            elif isinstance(item, AudioOut):
                sent_ms[item.item_id] = sent_ms.get(item.item_id, 0.0) + 20.0
        for command in engine.commands_to_send():
            if isinstance(command, CancelResponse):
                assert active, "a cancel for a response that is not running"
            elif isinstance(command, StartResponse):
                assert not active and not waiting, "a second request at once"
                waiting, request = True, command.request_id
            elif isinstance(command, TruncateItem):
                assert command.audio_end_ms >= 0
                if command.item_id in sent_ms:
                    assert command.audio_end_ms <= round(sent_ms[command.item_id])
        for timer in engine.timers_to_set():
            assert isinstance(timer, SetTimer | CancelTimer)
        engine.frames_to_emit()
        assert engine.idle is not (engine.turns.busy or waiting or active
                                   or bool(engine.pending_calls))
    assert engine.turns.state not in (Turn.ERROR, Turn.CLOSED) or engine.lost


def test_a_raw_server_event_is_refused_with_a_clear_error() -> None:
    engine = ConversationEngine()
    with pytest.raises(LocalError, match="ResponseCreated, which is not a model input"):
        engine.receive_event(ev.ResponseCreated(), 0.0)  # type: ignore[arg-type]


def test_the_engine_does_no_io() -> None:
    """The engine's modules import no I/O, no clock and no transport (only frames and turns)."""
    import pipeflow.conversation.engine as engine_module

    allowed = {"__future__", "collections.abc", "typing", "msgspec", "pipeflow.errors",
               "pipeflow.frames",
               "pipeflow.turns", "pipeflow.conversation.events"}
    folder = Path(engine_module.__file__).parent
    for name in ("engine.py", "events.py"):
        tree = ast.parse((folder / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert imported <= allowed, (name, imported - allowed)
