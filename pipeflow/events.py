"""Conversation events: the names callbacks subscribe to, made from frames.

Events are a view on the frame stream: ``event_for(frame)`` names the event a
frame stands for (or None for audio and telemetry). ``EventBus`` calls the
callbacks of an event in registration order; a callback that raises is
logged with the event name and never stops the session.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from pipeflow.errors import ConfigError
from pipeflow.frames import (
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
)

__all__ = ["EVENT_NAMES", "Event", "EventBus", "check_event_name", "event_for"]

log = logging.getLogger("pipeflow.events")

EVENT_NAMES: tuple[str, ...] = (
    "session_started",
    "text_received",
    "user_speech_started",
    "user_speech_stopped",
    "user_transcript",
    "agent_transcript",
    "response_started",
    "response_done",
    "tool_called",
    "tool_result",
    "interrupted",
    "error",
    "session_closed",
)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation event as callbacks and webhooks receive it."""

    name: str
    session_id: str
    time: float
    """Wall-clock time (seconds since the epoch)."""
    frame: Any
    """The frame the event was made from."""


def check_event_name(name: str) -> None:
    """Raise ConfigError for an unknown event name, with a suggestion."""
    if name not in EVENT_NAMES:
        import difflib

        close = difflib.get_close_matches(name, EVENT_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown event {name!r}{hint}; events: {', '.join(EVENT_NAMES)}"
        )


def event_for(frame: Frame) -> str | None:
    """The event name a frame stands for, or None."""
    match frame:
        case Transcript(role="user", final=True):
            return "user_transcript"
        case Transcript(role="agent", final=True):
            return "agent_transcript"
        case Transcript():
            return None
        case _:
            return _SIMPLE.get(type(frame))


_SIMPLE: dict[type[Frame], str] = {
    SessionStarted: "session_started",
    TextInput: "text_received",
    SpeechStarted: "user_speech_started",
    SpeechStopped: "user_speech_stopped",
    ResponseStarted: "response_started",
    ResponseDone: "response_done",
    ToolCall: "tool_called",
    ToolResult: "tool_result",
    Interrupt: "interrupted",
    ErrorFrame: "error",
    SessionEnded: "session_closed",
    EndOfStream: "session_closed",
}


class EventBus:
    """Callbacks by event name; dispatch never raises."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[..., Any]]] = {}

    def on(self, name: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``callback(event)`` for ``name``; returns it (decorator use)."""
        check_event_name(name)
        self._callbacks.setdefault(name, []).append(callback)
        return callback

    def extend(self, callbacks: dict[str, list[Callable[..., Any]]]) -> None:
        """Register many callbacks at once."""
        for name, fns in callbacks.items():
            for fn in fns:
                self.on(name, fn)

    def wants(self, name: str) -> bool:
        """Whether anything listens to ``name``."""
        return bool(self._callbacks.get(name))

    async def dispatch(self, event: Event) -> int:
        """Call every callback of the event; returns how many raised."""
        failures = 0
        for callback in self._callbacks.get(event.name, ()):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failures += 1
                log.exception(
                    "callback %s for event %r raised; the session goes on",
                    getattr(callback, "__qualname__", repr(callback)),
                    event.name,
                )
        return failures


def make_event(name: str, frame: Frame, session_id: str) -> Event:
    """Wrap a frame as an event stamped with the current time."""
    return Event(name=name, session_id=session_id, time=time.time(), frame=frame)
