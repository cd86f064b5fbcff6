"""Who holds the floor: the turn and interruption state machine.

The conversation engine (``pipeflow.conversation.engine``) feeds it what
happens (the caller starts speaking, a turn is committed, a response starts
or ends, a tool call is pending...) and gets back the next state and what to
do about it (cancel the response, interrupt playback). Transitions are a
data table, as in h11, not a chain of ifs: every live state has an entry
for every input, which a test checks. An exception in a caller's handling
moves the machine to ERROR with ``fail()``.

States:

- ``idle``: nobody speaks; nothing is asked of the model.
- ``listening``: the caller speaks (or barged in and the floor is theirs).
- ``thinking``: an answer was asked for and has not started.
- ``speaking``: a response is in progress.
- ``tools``: a response ended with tool calls whose results are awaited.
- ``closed`` / ``error``: final.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["TRANSITIONS", "Action", "Input", "Transition", "Turn", "TurnMachine"]


class Turn(enum.Enum):
    """Turn states (their values are what ``AgentSession.state`` reports)."""

    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    TOOLS = "tools"
    CLOSED = "closed"
    ERROR = "error"


class Input(enum.Enum):
    """What can happen to a conversation."""

    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    COMMITTED = "committed"
    REQUESTED = "requested"
    RESPONSE_STARTED = "response_started"
    RESPONSE_DONE = "response_done"
    TOOL_PENDING = "tool_pending"
    INTERRUPT = "interrupt"
    CLOSE = "close"
    FAIL = "fail"


class Action(enum.Enum):
    """What the transport must do on a transition."""

    CANCEL = "cancel"
    """Cancel the response in progress (``response.cancel``), if there is one."""
    INTERRUPT = "interrupt"
    """Stop playback downstream (yield ``Interrupt``), if agent audio may be playing."""


_S, _I, _A = Turn, Input, Action
_BARGE_IN = (_A.CANCEL, _A.INTERRUPT)
_NONE: tuple[Action, ...] = ()

TRANSITIONS: dict[Turn, dict[Input, tuple[Turn, tuple[Action, ...]]]] = {
    _S.IDLE: {
        _I.SPEECH_STARTED: (_S.LISTENING, _BARGE_IN),  # audio of a done response may still play
        _I.SPEECH_STOPPED: (_S.IDLE, _NONE),
        _I.COMMITTED: (_S.THINKING, _NONE),
        _I.REQUESTED: (_S.THINKING, _NONE),
        _I.RESPONSE_STARTED: (_S.SPEAKING, _NONE),  # server VAD or a greeting
        _I.RESPONSE_DONE: (_S.IDLE, _NONE),
        _I.TOOL_PENDING: (_S.TOOLS, _NONE),
        _I.INTERRUPT: (_S.IDLE, _BARGE_IN),
    },
    _S.LISTENING: {
        _I.SPEECH_STARTED: (_S.LISTENING, _NONE),
        _I.SPEECH_STOPPED: (_S.LISTENING, _NONE),  # the turn ends at its commit
        _I.COMMITTED: (_S.THINKING, _NONE),
        _I.REQUESTED: (_S.THINKING, _NONE),
        # A response that starts while the caller still holds the floor is unwanted.
        _I.RESPONSE_STARTED: (_S.LISTENING, (_A.CANCEL,)),
        _I.RESPONSE_DONE: (_S.LISTENING, _NONE),
        _I.TOOL_PENDING: (_S.LISTENING, _NONE),
        _I.INTERRUPT: (_S.LISTENING, _BARGE_IN),
    },
    _S.THINKING: {
        _I.SPEECH_STARTED: (_S.LISTENING, _BARGE_IN),
        _I.SPEECH_STOPPED: (_S.THINKING, _NONE),
        _I.COMMITTED: (_S.THINKING, _NONE),
        _I.REQUESTED: (_S.THINKING, _NONE),
        _I.RESPONSE_STARTED: (_S.SPEAKING, _NONE),
        _I.RESPONSE_DONE: (_S.IDLE, _NONE),
        _I.TOOL_PENDING: (_S.TOOLS, _NONE),
        _I.INTERRUPT: (_S.IDLE, _BARGE_IN),
    },
    _S.SPEAKING: {
        _I.SPEECH_STARTED: (_S.LISTENING, _BARGE_IN),
        _I.SPEECH_STOPPED: (_S.SPEAKING, _NONE),
        _I.COMMITTED: (_S.THINKING, _NONE),
        _I.REQUESTED: (_S.SPEAKING, _NONE),  # asked again: answered after this one
        _I.RESPONSE_STARTED: (_S.SPEAKING, _NONE),
        _I.RESPONSE_DONE: (_S.IDLE, _NONE),
        _I.TOOL_PENDING: (_S.TOOLS, _NONE),
        _I.INTERRUPT: (_S.IDLE, _BARGE_IN),
    },
    _S.TOOLS: {
        _I.SPEECH_STARTED: (_S.LISTENING, _BARGE_IN),
        _I.SPEECH_STOPPED: (_S.TOOLS, _NONE),
        _I.COMMITTED: (_S.THINKING, _NONE),
        _I.REQUESTED: (_S.THINKING, _NONE),  # the results went back with response.create
        _I.RESPONSE_STARTED: (_S.SPEAKING, _NONE),
        _I.RESPONSE_DONE: (_S.TOOLS, _NONE),
        _I.TOOL_PENDING: (_S.TOOLS, _NONE),
        _I.INTERRUPT: (_S.IDLE, _BARGE_IN),
    },
}
"""state -> input -> (next state, actions). CLOSE and FAIL apply to every state."""

FINAL = frozenset({Turn.CLOSED, Turn.ERROR})


class Transition(NamedTuple):
    """One step of the machine."""

    before: Turn
    after: Turn
    input: Input
    actions: tuple[Action, ...]


class TurnMachine:
    """The turn state of one conversation.

    Args:
        on_change: called with each ``Transition`` that changes the state
            (for logs and callbacks).

    Attributes:
        state: the current ``Turn``.
        history: the states taken, in order (the first is ``idle``).
    """

    def __init__(self, on_change: Callable[[Transition], None] | None = None) -> None:
        self.state = Turn.IDLE
        self.history: list[Turn] = [Turn.IDLE]
        self.on_change = on_change

    @property
    def busy(self) -> bool:
        """Whether an answer is asked for, in progress or waiting on tools."""
        return self.state in (Turn.THINKING, Turn.SPEAKING, Turn.TOOLS)

    def feed(self, event: Input) -> tuple[Action, ...]:
        """Apply one input; returns the actions the transition asks for.

        In a final state every input is ignored (no actions).
        """
        before = self.state
        if before in FINAL:
            return _NONE
        if event is Input.CLOSE:
            after, actions = Turn.CLOSED, _NONE
        elif event is Input.FAIL:
            after, actions = Turn.ERROR, _NONE
        else:
            after, actions = TRANSITIONS[before][event]
        if after is not before:
            self.state = after
            self.history.append(after)
            if self.on_change is not None:
                self.on_change(Transition(before, after, event, actions))
        return actions

    def fail(self) -> None:
        """Move to ERROR (the caller hit an exception while handling a transition)."""
        self.feed(Input.FAIL)

    def close(self) -> None:
        """Move to CLOSED (the conversation ended)."""
        self.feed(Input.CLOSE)
