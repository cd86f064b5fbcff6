"""What goes into and comes out of ``ConversationEngine``, in no model's words.

Three vocabularies, each a small set of frozen structs:

- model inputs (``ModelInput``): what a model transport heard from its
  model, already decoded (a response began, audio or text of an item, a
  tool call, the model's own VAD, an error, the connection restored or lost)
  plus ``TimerFired`` for the timers the engine asked for;
- commands (``Command``): what the transport must tell its model (append
  and commit caller audio, add a message, start / cancel a response,
  truncate an item at the played position, send a tool result);
- timers (``TimerCommand``): arm or cancel a named deadline, in the same
  time base as the ``now`` the transport passes in.

A transport translates its wire protocol to and from these (the Realtime one
is ``pipeflow.realtime.adapter``); the engine never sees an event name.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "AddMessage",
    "AppendAudio",
    "AudioOut",
    "CancelResponse",
    "CancelTimer",
    "Command",
    "CommitAudio",
    "ConnectionLost",
    "InputCommitted",
    "ModelError",
    "ModelInput",
    "ModelNotice",
    "Reconnected",
    "ResponseBegan",
    "ResponseEnded",
    "SendToolResult",
    "SetTimer",
    "SpeechBegan",
    "SpeechEnded",
    "StartResponse",
    "TextOut",
    "TimerCommand",
    "TimerFired",
    "ToolCalled",
    "TruncateItem",
    "UserTranscript",
]


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every engine input and output."""


# -- model inputs -------------------------------------------------------------------


class ResponseBegan(_Struct):
    """The model started a response (asked for, or started by its own VAD)."""

    response_id: str = ""


class ResponseEnded(_Struct):
    """The response in progress ended (``completed``, ``cancelled``, ``failed``...)."""

    response_id: str = ""
    status: str = "completed"
    usage: dict[str, int] = msgspec.field(default_factory=dict)


class AudioOut(_Struct):
    """Agent audio of an output item: PCM16 mono at ``sample_rate``."""

    item_id: str
    pcm: bytes
    sample_rate: int


class TextOut(_Struct):
    """Agent words of an output item: a delta (``final=False``) or the whole text."""

    item_id: str
    text: str
    final: bool = False


class UserTranscript(_Struct):
    """The caller's words of a committed input item (the model's transcription)."""

    item_id: str
    text: str


class ToolCalled(_Struct):
    """The model asked for a tool call (the same ``call_id`` may come twice)."""

    call_id: str
    name: str
    arguments: str = ""


class SpeechBegan(_Struct):
    """The model's VAD heard the caller start (``at``: seconds of input audio)."""

    at: float = 0.0
    item_id: str = ""


class SpeechEnded(_Struct):
    """The model's VAD heard the caller stop."""

    at: float = 0.0
    item_id: str = ""


class InputCommitted(_Struct):
    """The model ended the caller's turn itself (its VAD committed the input)."""

    item_id: str = ""


class ModelError(_Struct):
    """The model reported an error.

    Attributes:
        message: the full sentence for the ``ErrorFrame``.
        code: a short machine-readable code.
        error_type: the model's error class (``invalid_request_error``...).
        event_id: the id reported with the error (for the ``ErrorFrame``).
        request_id: the id of the command it answers, when known: a refused
            ``StartResponse`` frees the request.
        no_active_response: the error says a cancel found no response in
            progress (a cancel that raced the response's end is no error).
    """

    message: str
    code: str = ""
    error_type: str = ""
    event_id: str = ""
    request_id: str = ""
    no_active_response: bool = False


class ModelNotice(_Struct):
    """A model event with no meaning to the engine, passed on as a ``ModelEvent``."""

    event: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Reconnected(_Struct):
    """The connection dropped and was restored: the model forgot the conversation."""

    attempt: int = 1
    reason: str = ""


class ConnectionLost(_Struct):
    """The connection is gone for good."""

    message: str


class TimerFired(_Struct):
    """A timer set with ``SetTimer`` fell due."""

    name: str


ModelInput = (
    ResponseBegan | ResponseEnded | AudioOut | TextOut | UserTranscript | ToolCalled
    | SpeechBegan | SpeechEnded | InputCommitted | ModelError | ModelNotice | Reconnected
    | ConnectionLost | TimerFired
)
"""Everything ``ConversationEngine.receive_event`` takes."""


# -- commands -------------------------------------------------------------------------


class AppendAudio(_Struct):
    """Add caller audio (PCM16 mono at ``sample_rate``) to the model's input."""

    pcm: bytes
    sample_rate: int


class CommitAudio(_Struct):
    """End the caller's turn: the audio appended so far is one input item."""


class AddMessage(_Struct):
    """Add a text message to the conversation."""

    text: str
    role: str = "user"


class StartResponse(_Struct):
    """Ask for a response.

    Attributes:
        request_id: names this request; a ``ModelError`` with it as
            ``request_id`` means the response will never come.
        say: speak exactly this text instead of answering.
    """

    request_id: str
    say: str | None = None


class CancelResponse(_Struct):
    """Cancel the response in progress (sent only while one is)."""

    response_id: str = ""


class TruncateItem(_Struct):
    """The caller heard ``item_id`` only up to ``audio_end_ms``: forget the rest."""

    item_id: str
    audio_end_ms: int


class SendToolResult(_Struct):
    """The output of a tool call, for the model's next response."""

    call_id: str
    output: str


Command = (
    AppendAudio | CommitAudio | AddMessage | StartResponse | CancelResponse | TruncateItem
    | SendToolResult
)
"""Everything ``ConversationEngine.commands_to_send`` returns."""


# -- timers -----------------------------------------------------------------------------


class SetTimer(_Struct):
    """Call ``receive_event(TimerFired(name), now)`` once ``now >= at``.

    Setting a name again moves its deadline.
    """

    name: str
    at: float


class CancelTimer(_Struct):
    """Forget the timer ``name`` (nothing happens if it is not set)."""

    name: str


TimerCommand = SetTimer | CancelTimer
"""Everything ``ConversationEngine.timers_to_set`` returns."""
