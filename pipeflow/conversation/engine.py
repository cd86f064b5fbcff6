"""The conversation engine: turns, responses, tools, cancels and truncation, with no I/O.

``ConversationEngine`` is the part of a model transport that decides; the
transport only moves bytes. In the style of h11 and websockets' protocol
objects it only buffers: inputs go in with the current time, outputs are
handed over and reset by three calls.

Inputs:

- ``receive_frame(frame, now)``: every frame the transport stage reads:
  caller audio, ``TurnCommitted``, ``TextInput``, ``Say``, local VAD's
  ``SpeechStarted`` / ``SpeechStopped``, an app's ``Interrupt``, and the
  feedback later stages send back: ``ToolResult`` and ``PlayoutPosition``
  (how much of an item the caller heard), and ``EndOfStream``;
- ``receive_event(event, now)``: what the model did, decoded by the
  transport into ``pipeflow.conversation.events`` inputs (a response
  began / ended, audio and text out, a tool call, the model's VAD, an
  error, the connection restored or lost), and ``TimerFired``.

Outputs:

- ``commands_to_send()``: ``Command``s for the model (append / commit
  audio, add a message, start / cancel a response, truncate an item at a
  played position, send a tool result), for the transport to encode;
- ``frames_to_emit()``: frames to yield downstream, in order (frames the
  engine does not handle pass through in place);
- ``timers_to_set()``: ``SetTimer`` / ``CancelTimer`` (tool timeouts, the
  drain deadline), absolute times in the ``now`` time base.

``finished`` says when the stage's loop should stop (the input ended and the
answer is done or the drain deadline passed; or the connection is lost).

The turn machine (``pipeflow.turns``) decides what each input does to the
floor; the engine carries out its actions (a cancel only while a response
is in progress; an ``Interrupt`` only while agent audio may be playing) and
keeps what the table does not: tentative speech over the agent (a
``SpeechStarted`` with ``tentative``: playback pauses, the caller's audio
is held back from the model, the frame itself waits; ``SpeechConfirmed``
makes it a barge-in, a ``SpeechStopped`` first makes it nothing: playback
resumes where it paused, the frames, the held audio and the next commit
are dropped), the response
asked for and not yet begun,
requests made while busy (answered one after another, plain ones merged),
the muted tail of a cancelled response, tool calls and their results (sent
back together once the response that made them is done), and how much
audio of each item went downstream (a truncation is never past it).

A second transport reuses the engine unchanged. A cascade (speech-to-text,
a Chat Completions LLM, text-to-speech over HTTP) would drive it so:

- ``AppendAudio`` / ``CommitAudio``: feed the STT stream, finish the
  utterance; when the STT returns the words, ``receive_event(UserTranscript)``
  (with local VAD and ``TurnCommitted`` frames, ``model_turns=False``);
- ``AddMessage``: append to its message list; ``SendToolResult``: append a
  ``tool`` message;
- ``StartResponse``: start a chat completion over the messages (``say``:
  skip the LLM, speak the text); report ``ResponseBegan``, then each text
  delta as ``TextOut`` and the TTS audio as ``AudioOut``, tool calls of the
  completion as ``ToolCalled``, and ``ResponseEnded`` when both the stream
  and the speech are done; a failed request is a ``ModelError`` with
  ``request_id``;
- ``CancelResponse``: abort the completion and the TTS, then report
  ``ResponseEnded(status="cancelled")``;
- ``TruncateItem``: cut the assistant message to the words spoken by
  ``audio_end_ms`` (from the TTS timing), so the next turn's context is what
  the caller heard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from pipeflow.conversation.events import (
    AddMessage,
    AppendAudio,
    AudioOut,
    CancelResponse,
    CancelTimer,
    Command,
    CommitAudio,
    ConnectionLost,
    InputCommitted,
    ModelError,
    ModelInput,
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
    TimerCommand,
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
    PausePlayout,
    PlayoutPosition,
    ResponseDone,
    ResponseStarted,
    ResumePlayout,
    Say,
    SpeechConfirmed,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.turns import Action, Input, Turn, TurnMachine

__all__ = ["DRAIN_TIMER", "ConversationEngine", "EngineOptions", "tool_timer"]

DRAIN_TIMER = "drain"
"""The timer that bounds how long the end of input waits for the answer."""

_KEEP_ITEMS = 16
"""How many output items' audio lengths are kept for truncation (the recent ones)."""


def tool_timer(call_id: str) -> str:
    """The name of the timer that bounds how long ``call_id`` may take."""
    return f"tool:{call_id}"


class EngineOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How one conversation runs.

    Attributes:
        name: the stage named in the ``ErrorFrame``s and ``Metric``s made.
        model_turns: the model detects the caller's turns itself (server
            VAD): ``InputCommitted`` ends a turn, ``TurnCommitted`` frames
            are passed on only.
        respond_on_start: ask for a response (a greeting) at ``start``.
        tool_timeout_s: a tool call with no result after this long gets an
            error result (``None``: wait for ever).
        drain_timeout_s: how long the end of input waits for the answer.
    """

    name: str = "realtime"
    model_turns: bool = False
    respond_on_start: bool = False
    tool_timeout_s: float | None = 60.0
    drain_timeout_s: float = 10.0


class ConversationEngine:
    """The state of one conversation with a model; no I/O, time passed in.

    Args:
        options: turn detection, timeouts, the stage name for frames.
        turns: the turn machine to drive (a new one when omitted), so a
            caller can watch it (``on_change``) before the engine exists.

    Attributes:
        turns: the ``TurnMachine``; its state is the conversation's.
        lost: the connection is gone for good (``ConnectionLost``).
    """

    def __init__(self, options: EngineOptions | None = None,
                 turns: TurnMachine | None = None) -> None:
        self.options = options or EngineOptions()
        self.turns = turns or TurnMachine()
        self.lost = False
        self._now = 0.0
        self._appended = False  # caller audio appended since the last commit
        self._ending = False  # the input ended: finish the answer, then stop
        self._tentative: SpeechStarted | None = None  # caller speech over the agent, not yet meant
        self._held: list[Command] = []  # caller audio of tentative speech, held back
        self._dismissed = False  # tentative speech came to nothing: skip its commit
        self._drained = False  # ...and the drain deadline passed
        self._next_request = 0
        self._commands: list[Command] = []
        self._frames: list[Frame] = []
        self._timer_out: list[TimerCommand] = []
        self._reset()

    def _reset(self) -> None:
        """Forget what the model knew (start, or a connection set up again)."""
        self._active: str | None = None  # id of the response in progress
        self._requested: str | None = None  # request id of a StartResponse not yet begun
        self._deferred: list[str | None] = []  # requests made while busy (say text or None)
        self._muted = False  # drop audio of a cancelled response until it ends
        self._cancels = 0  # cancels whose answer may be "no active response"
        self._asked_at: float | None = None  # when the next answer was asked for
        self._timing: float | None = None  # ...and the answer in progress, until first audio
        self._unplayed: set[str] = set()  # items with audio downstream not reported played
        self._item_s: dict[str, float] = {}  # seconds of audio of each item of the response
        self._audio_end: dict[str, float] = {}  # ms of audio of recent items (truncation bound)
        self._calls: dict[str, ToolCall] = {}
        self._results: dict[str, ToolResult] = {}
        self._seen_calls: set[str] = set()
        self._calls_done = False  # the response that made the pending calls has ended
        self._tool_timers: set[str] = set()

    # -- the sans-I/O interface ---------------------------------------------------------

    def start(self, now: float) -> None:
        """The connection is up: ask for a greeting if ``respond_on_start``."""
        self._now = now
        if self.options.respond_on_start:
            self._request()

    def receive_frame(self, frame: Frame, now: float) -> None:
        """Handle one frame from the pipeline (upstream or fed back).

        Raises:
            Whatever a handler raised; the turn machine is then in ERROR.
        """
        self._now = now
        handler = _FRAME_HANDLERS.get(type(frame))
        if handler is None:
            self._frames.append(frame)
            return
        try:
            handler(self, frame)
        except BaseException:
            self.turns.fail()
            raise

    def receive_event(self, event: ModelInput, now: float) -> None:
        """Handle one model input (decoded by the transport) or a due timer.

        Raises:
            LocalError: ``event`` is not a ``ModelInput`` (a transport's bug).
        """
        self._now = now
        handler = _EVENT_HANDLERS.get(type(event))
        if handler is None:
            raise LocalError(
                f"ConversationEngine.receive_event got a {type(event).__name__}, which is not a "
                "model input; a transport must translate its events to "
                "pipeflow.conversation.events first")
        try:
            handler(self, event)
        except BaseException:
            self.turns.fail()
            raise

    def commands_to_send(self) -> list[Command]:
        """Commands for the model made since the last call, in order."""
        out, self._commands = self._commands, []
        return out

    def frames_to_emit(self) -> list[Frame]:
        """Frames to yield downstream made since the last call, in order."""
        out, self._frames = self._frames, []
        return out

    def timers_to_set(self) -> list[TimerCommand]:
        """Timers to arm or cancel since the last call, in order."""
        out, self._timer_out = self._timer_out, []
        return out

    @property
    def idle(self) -> bool:
        """Nothing asked of the model, in progress, or waiting on tools."""
        return not (self.turns.busy or self._calls or self._requested
                    or self._active is not None)

    @property
    def pending_calls(self) -> tuple[str, ...]:
        """Ids of the tool calls whose results are not sent back yet."""
        return tuple(self._calls)

    @property
    def responding(self) -> bool:
        """A response is in progress."""
        return self._active is not None

    @property
    def finished(self) -> bool:
        """The loop should stop: lost, or the input ended and the answer is over."""
        return self.lost or (self._ending and (self._drained or self.idle))

    def close(self) -> None:
        """The conversation ended (the turn machine goes to CLOSED)."""
        self.turns.close()

    def fail(self) -> None:
        """The transport failed (the turn machine goes to ERROR)."""
        self.turns.fail()

    # -- helpers ------------------------------------------------------------------------------

    def _error(self, message: str, *, fatal: bool = False, code: str = "", event_id: str = "",
               error_type: str = "") -> ErrorFrame:
        return ErrorFrame(stage=self.options.name, message=message, fatal=fatal, code=code,
                          event_id=event_id, error_type=error_type)

    def _apply(self, actions: tuple[Action, ...], reason: str, always: bool = False) -> None:
        """Carry out a transition's actions (a cancel only while a response runs)."""
        if Action.CANCEL in actions and self._active is not None:
            self._commands.append(CancelResponse(response_id=self._active))
            self._cancels += 1
            self._muted = True
        if Action.INTERRUPT in actions and (always or self._unplayed or self._muted):
            self._unplayed.clear()
            self._frames.append(Interrupt(reason=reason))

    def _request(self, say: str | None = None, deferred: bool = False) -> None:
        """Ask for a response now, or once the one in progress is done."""
        self.turns.feed(Input.REQUESTED)
        if not deferred:
            self._asked_at = self._now
        if self._requested or self._active is not None:
            if say is not None or not self._deferred or self._deferred[-1] is not None:
                self._deferred.append(say)  # plain requests made while busy merge
            return
        self._next_request += 1
        self._requested = f"pf_response_{self._next_request}"
        self._commands.append(StartResponse(request_id=self._requested, say=say))

    def _commit(self) -> None:
        self._commands.append(CommitAudio())
        self._appended = False
        self.turns.feed(Input.COMMITTED)
        self._request()

    # -- frames -------------------------------------------------------------------------------

    def _on_audio_in(self, frame: AudioFrame) -> None:
        if not frame.item_id:  # caller audio; agent audio passes through
            append = AppendAudio(pcm=frame.pcm, sample_rate=frame.sample_rate)
            if self._tentative is not None:
                self._held.append(append)  # sent if the speech proves meant
            else:
                self._commands.append(append)
                self._appended = True
        self._frames.append(frame)

    def _on_committed(self, frame: TurnCommitted) -> None:
        dismissed, self._dismissed = self._dismissed, False
        if self._tentative is not None:  # a commit ends the tentative speech: it was a turn
            self._confirm()
        elif dismissed:
            self._frames.append(frame)  # a backchannel or a cough: nothing to answer
            return
        if not self.options.model_turns and self._appended:
            self._commit()
        self._frames.append(frame)

    def _on_text(self, frame: TextInput) -> None:
        self._commands.append(AddMessage(text=frame.text, role=frame.role))
        if frame.role == "user":
            self._request()
        self._frames.append(frame)

    def _on_say(self, frame: Say) -> None:
        self._request(say=frame.text)
        self._frames.append(frame)

    def _on_speech_started(self, frame: SpeechStarted) -> None:
        self._dismissed = False
        if self._tentative is not None:
            return  # the VAD heard more of the same tentative speech
        if frame.tentative and (self.turns.busy or self._unplayed or self._active is not None):
            # The agent holds the floor: pause it until the speech proves meant. The
            # frame goes downstream only then (a cough is nobody's turn).
            self._tentative = frame
            self._frames.append(PausePlayout())
            return
        self._apply(self.turns.feed(Input.SPEECH_STARTED), "barge_in")
        self._frames.append(frame)

    def _on_speech_confirmed(self, frame: SpeechConfirmed) -> None:
        if self._tentative is not None:
            self._confirm()
        self._frames.append(frame)

    def _confirm(self) -> None:
        """Tentative speech is meant: barge in, and send the caller's held audio."""
        started, self._tentative = self._tentative, None
        before = len(self._frames)
        self._apply(self.turns.feed(Input.SPEECH_STARTED), "barge_in")
        if not any(type(f) is Interrupt for f in self._frames[before:]):
            self._frames.append(ResumePlayout())  # nothing to cut: let what comes play
        if started is not None:
            self._frames.append(started)
        if self._held:
            self._commands.extend(self._held)
            self._held.clear()
            self._appended = True

    def _on_speech_stopped(self, frame: SpeechStopped) -> None:
        if self._tentative is not None:  # it came to nothing: the agent plays on
            self._tentative = None
            self._dismissed = True
            self._held.clear()
            self._frames.append(ResumePlayout())
            return
        self.turns.feed(Input.SPEECH_STOPPED)
        self._frames.append(frame)

    def _on_interrupt(self, frame: Interrupt) -> None:
        self._apply(self.turns.feed(Input.INTERRUPT), frame.reason, always=True)

    def _on_result(self, result: ToolResult) -> None:
        if result.call_id not in self._calls:
            return  # late (timed out), or from before a reconnect
        name = tool_timer(result.call_id)
        if name in self._tool_timers:
            self._tool_timers.discard(name)
            self._timer_out.append(CancelTimer(name=name))
        self._results[result.call_id] = result
        self._send_results()

    def _on_played(self, frame: PlayoutPosition) -> None:
        self._unplayed.discard(frame.item_id)
        if frame.interrupted:
            played = max(0, frame.played_ms)
            end = self._audio_end.get(frame.item_id)
            if end is not None:
                played = min(played, round(end))  # the model cannot cut past what it sent
            self._commands.append(TruncateItem(item_id=frame.item_id, audio_end_ms=played))
            # Downstream too: the session's conversation marks what the caller heard.
            self._frames.append(msgspec.structs.replace(frame, played_ms=played))

    def _on_end(self, frame: EndOfStream) -> None:
        self._ending = True
        if (self.options.model_turns and self._appended
                and self.turns.state is Turn.LISTENING):
            # The caller was mid-turn when the input ended: the model's VAD will
            # hear no silence now, so end the turn here and have it answered.
            self._commit()
        if not self.idle:
            self._timer_out.append(SetTimer(name=DRAIN_TIMER,
                                            at=self._now + self.options.drain_timeout_s))

    # -- tools ----------------------------------------------------------------------------------

    def _on_call(self, event: ToolCalled) -> None:
        call_id = event.call_id
        if not call_id or call_id in self._seen_calls:
            return
        self._seen_calls.add(call_id)
        call = ToolCall(call_id=call_id, name=event.name, arguments=event.arguments or "{}")
        self._calls[call_id] = call
        self.turns.feed(Input.TOOL_PENDING)
        timeout = self.options.tool_timeout_s
        if timeout is not None:
            name = tool_timer(call_id)
            self._tool_timers.add(name)
            self._timer_out.append(SetTimer(name=name, at=self._now + timeout))
        self._frames.append(call)

    def _tool_timed_out(self, call_id: str) -> None:
        self._tool_timers.discard(tool_timer(call_id))
        call = self._calls.get(call_id)
        if call is None or call_id in self._results:
            return
        timeout = self.options.tool_timeout_s or 0.0
        self._frames.append(self._error(
            f"tool {call.name!r} (call {call_id}) did not answer within {timeout:g} s; "
            "the model gets an error result", code="tool_timeout"))
        output = msgspec.json.encode(
            {"error": f"the tool {call.name!r} did not answer within {timeout:g} s"}).decode()
        self._on_result(ToolResult(call_id=call_id, name=call.name, output=output,
                                   is_error=True))

    def _send_results(self) -> None:
        """When every call of the response has its result and the response is done:
        one result per call, then one request."""
        if not self._calls or not self._calls_done or len(self._results) < len(self._calls):
            return
        for call_id in self._calls:
            result = self._results[call_id]
            output = result.output
            if result.is_error and not output:
                output = '{"error": "the tool failed"}'
            self._commands.append(SendToolResult(call_id=call_id, output=output))
        self._calls.clear()
        self._results.clear()
        self._calls_done = False
        if self.turns.state is not Turn.LISTENING:  # the caller took the floor: they go first
            self._request()

    # -- model events ------------------------------------------------------------------------------

    def _on_audio_out(self, event: AudioOut) -> None:
        if not event.pcm:
            return
        item_id, rate = event.item_id, event.sample_rate
        seconds = len(event.pcm) / (2 * rate)
        # What the model has of the item, muted tail included: a truncation past it is refused.
        ends = self._audio_end
        if item_id not in ends and len(ends) >= _KEEP_ITEMS:
            del ends[next(iter(ends))]
        ends[item_id] = ends.get(item_id, 0.0) + seconds * 1000
        if self._muted:
            return
        pts = self._item_s.get(item_id, 0.0)
        self._item_s[item_id] = pts + seconds
        self._unplayed.add(item_id)
        asked, self._timing = self._timing, None
        if asked is not None:
            self._frames.append(Metric(stage=self.options.name, name="commit_to_first_audio",
                                       value=self._now - asked, unit="s"))
        self._frames.append(AudioFrame(pcm=event.pcm, sample_rate=rate, pts=pts,
                                       item_id=item_id))

    def _on_text_out(self, event: TextOut) -> None:
        self._frames.append(Transcript(role="agent", text=event.text, final=event.final,
                                       item_id=event.item_id))

    def _on_user_transcript(self, event: UserTranscript) -> None:
        self._frames.append(Transcript(role="user", text=event.text, item_id=event.item_id))

    def _on_began(self, event: ResponseBegan) -> None:
        self._requested = None
        self._active = event.response_id or "response"
        self._muted = False
        self._calls_done = False
        self._seen_calls.clear()
        self._timing, self._asked_at = self._asked_at, None
        actions = self.turns.feed(Input.RESPONSE_STARTED)
        self._frames.append(ResponseStarted(response_id=event.response_id))
        self._apply(actions, "barge_in")

    def _on_ended(self, event: ResponseEnded) -> None:
        self._active = None
        self._muted = False
        self._timing = None
        self._item_s.clear()
        self.turns.feed(Input.RESPONSE_DONE)
        if self._calls:
            self.turns.feed(Input.TOOL_PENDING)
            self._calls_done = True
            self._send_results()
        elif self._deferred:
            self._request(self._deferred.pop(0), deferred=True)
        self._frames.append(ResponseDone(response_id=event.response_id, status=event.status,
                                         usage=dict(event.usage)))

    def _on_model_speech_started(self, event: SpeechBegan) -> None:
        self._apply(self.turns.feed(Input.SPEECH_STARTED), "barge_in")
        self._frames.append(SpeechStarted(at=event.at, item_id=event.item_id))

    def _on_model_speech_stopped(self, event: SpeechEnded) -> None:
        self.turns.feed(Input.SPEECH_STOPPED)
        self._frames.append(SpeechStopped(at=event.at, item_id=event.item_id))

    def _on_input_committed(self, event: InputCommitted) -> None:
        if self.options.model_turns:
            self._appended = False
            self.turns.feed(Input.COMMITTED)
            self._asked_at = self._now

    def _on_error(self, event: ModelError) -> None:
        if event.no_active_response and self._cancels:
            # A barge-in raced the end of the answer: the model finished it just
            # before the cancel arrived. Nothing was lost.
            self._cancels -= 1
            return
        failed = bool(self._requested) and event.request_id == self._requested
        if failed:
            self._requested = None  # that response will never come
            self.turns.feed(Input.RESPONSE_DONE)
        self._frames.append(self._error(event.message, code=event.code, event_id=event.event_id,
                                        error_type=event.error_type))
        if failed and self._deferred:  # the requests queued behind it are still owed
            self._request(self._deferred.pop(0), deferred=True)

    def _on_notice(self, event: ModelNotice) -> None:
        self._frames.append(ModelEvent(event=event.event, data=event.data))

    def _on_reconnected(self, event: Reconnected) -> None:
        lost = not self.idle
        for name in sorted(self._tool_timers):
            self._timer_out.append(CancelTimer(name=name))
        self._reset()
        self._appended = False
        self._frames.append(self._error(
            f"the connection to the model was lost ({event.reason}) and restored "
            f"(attempt {event.attempt}); the session was set up again"
            + ("; the answer in progress was lost" if lost else ""), code="reconnected"))
        if lost:
            self.turns.feed(Input.RESPONSE_DONE)
            self.turns.feed(Input.INTERRUPT)
            self._frames.append(ResponseDone(status="failed"))

    def _on_lost(self, event: ConnectionLost) -> None:
        self.turns.fail()
        if self._active is not None:
            self._frames.append(ResponseDone(status="failed"))
        self._frames.append(self._error(event.message, fatal=True, code="connection_lost"))
        self._frames.append(EndOfStream())
        self.lost = True

    def _on_timer(self, event: TimerFired) -> None:
        if event.name == DRAIN_TIMER:
            if self._ending and not self.idle:
                self._drained = True
                self._frames.append(self._error(
                    "the model's answer did not finish within "
                    f"drain_timeout_s={self.options.drain_timeout_s:g} s; closing the session"))
        elif event.name.startswith("tool:"):
            self._tool_timed_out(event.name[len("tool:"):])


_Handler = Callable[[ConversationEngine, Any], None]
E = ConversationEngine

_FRAME_HANDLERS: dict[type, _Handler] = {
    AudioFrame: E._on_audio_in,
    TurnCommitted: E._on_committed,
    TextInput: E._on_text,
    Say: E._on_say,
    SpeechStarted: E._on_speech_started,
    SpeechConfirmed: E._on_speech_confirmed,
    SpeechStopped: E._on_speech_stopped,
    Interrupt: E._on_interrupt,
    ToolResult: E._on_result,
    PlayoutPosition: E._on_played,
    EndOfStream: E._on_end,
}
"""Frame type -> handler; other frames pass through."""

_EVENT_HANDLERS: dict[type, _Handler] = {
    AudioOut: E._on_audio_out,
    TextOut: E._on_text_out,
    UserTranscript: E._on_user_transcript,
    ResponseBegan: E._on_began,
    ResponseEnded: E._on_ended,
    ToolCalled: E._on_call,
    SpeechBegan: E._on_model_speech_started,
    SpeechEnded: E._on_model_speech_stopped,
    InputCommitted: E._on_input_committed,
    ModelError: E._on_error,
    ModelNotice: E._on_notice,
    Reconnected: E._on_reconnected,
    ConnectionLost: E._on_lost,
    TimerFired: E._on_timer,
}
"""Model input type -> handler (every ``ModelInput`` has one)."""
del E
