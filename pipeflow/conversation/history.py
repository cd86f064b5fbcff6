"""Conversation record: ordered turns and tool calls, built from frames.

``Conversation.observe(frame)`` is fed every frame leaving a session's
pipeline. It needs no other input, so the same record can be rebuilt from a
``jsonl`` recording.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from pipeflow.frames import (
    AudioFrame,
    Frame,
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

__all__ = ["Conversation", "ToolCallRecord", "Turn"]


class Turn(msgspec.Struct, kw_only=True):
    """One turn of the caller or the agent."""

    role: Literal["user", "agent"]
    text: str = ""
    audio_duration: float = 0.0
    """Seconds of speech (caller: VAD span; agent: audio received)."""
    started_at: float = 0.0
    """Wall-clock time (seconds since the epoch)."""
    ended_at: float | None = None
    interrupted: bool = False
    heard_ms: int | None = None
    """Agent turns cut short: how many ms of the item the caller heard (the sink's
    played position); None when it played to the end or nothing said how far."""
    source: Literal["audio", "text"] = "audio"


class ToolCallRecord(msgspec.Struct, kw_only=True):
    """A tool call and, once known, its result."""

    call_id: str
    name: str
    arguments: str
    output: str | None = None
    is_error: bool = False
    started_at: float = 0.0
    ended_at: float | None = None


_ITEMS_KEPT = 16
"""Items whose turn a late playout report can still find (a call's recent answers)."""


class Conversation:
    """Turns and tool calls of one session, in order."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.tool_calls: list[ToolCallRecord] = []
        self._user: Turn | None = None
        self._user_at: float | None = None
        self._agent: Turn | None = None
        self._items: dict[str, Turn] = {}  # agent turns of the last few items, by item id

    def observe(self, frame: Frame, now: float | None = None) -> None:
        """Update the record with one frame."""
        now = time.time() if now is None else now
        match frame:
            case SpeechStarted(at=at):
                if self._user is None:
                    self._user = self._add(Turn(role="user", started_at=now))
                self._user_at = at
            case SpeechStopped(at=at):
                if self._user is not None:
                    if self._user_at is not None:
                        self._user.audio_duration += max(0.0, at - self._user_at)
                    self._user.ended_at = now
                self._user_at = None
            case TextInput(text=text, role="user"):
                self._add(Turn(role="user", text=text, started_at=now, ended_at=now,
                               source="text"))
            case Transcript(role="user", final=True, text=text):
                turn = self._user
                if turn is None or turn.text:
                    turn = self._add(Turn(role="user", started_at=now, ended_at=now))
                turn.text = text.strip()
                self._user = None
            case ResponseStarted():
                self._close_agent(now)
                self._agent = self._add(Turn(role="agent", started_at=now))
            case AudioFrame(item_id=item_id) if item_id:
                turn = self._agent_turn(now)
                turn.audio_duration += frame.duration
                if item_id not in self._items:
                    self._items[item_id] = turn
                    if len(self._items) > _ITEMS_KEPT:
                        del self._items[next(iter(self._items))]
            case PlayoutPosition(item_id=item_id, played_ms=played_ms, interrupted=True):
                # The caller stopped hearing the item here: often after the model had
                # sent all of it (ResponseDone), so the turn may be closed already.
                turn = self._items.get(item_id)
                if turn is not None:
                    turn.interrupted = True
                    turn.heard_ms = max(0, played_ms)
            case Transcript(role="agent", final=True, text=text):
                turn = self._agent_turn(now)
                turn.text = f"{turn.text} {text.strip()}".strip()
            case Interrupt():
                if self._agent is not None:
                    self._agent.interrupted = True
            case ResponseDone(status=status):
                if self._agent is not None and status == "cancelled":
                    self._agent.interrupted = True
                self._close_agent(now)
            case ToolCall(call_id=call_id, name=name, arguments=arguments):
                self.tool_calls.append(
                    ToolCallRecord(call_id=call_id, name=name, arguments=arguments,
                                   started_at=now)
                )
            case ToolResult(call_id=call_id, output=output, is_error=is_error):
                for record in reversed(self.tool_calls):
                    if record.call_id == call_id:
                        record.output, record.is_error, record.ended_at = output, is_error, now
                        break

    def _add(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        return turn

    def _agent_turn(self, now: float) -> Turn:
        if self._agent is None:
            self._agent = self._add(Turn(role="agent", started_at=now))
        return self._agent

    def _close_agent(self, now: float) -> None:
        turn, self._agent = self._agent, None
        if turn is None:
            return
        turn.ended_at = now
        if not turn.text and turn.audio_duration == 0 and not turn.interrupted:
            self.turns.remove(turn)  # a response that only called tools

    def transcript(self) -> str:
        """The conversation as text, one line per turn."""
        lines = []
        for turn in self.turns:
            if turn.text:
                mark = ""
                if turn.interrupted:
                    heard = turn.heard_ms
                    mark = (" [interrupted]" if heard is None
                            else f" [interrupted after {heard / 1000:.1f} s]")
                lines.append(f"{turn.role}: {turn.text}{mark}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """Turns and tool calls as plain data (for JSON APIs)."""
        return {
            "turns": msgspec.to_builtins(self.turns),
            "tool_calls": msgspec.to_builtins(self.tool_calls),
        }
