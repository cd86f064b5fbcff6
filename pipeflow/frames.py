"""The frame vocabulary: every value that flows through a pipeline.

Frames are frozen, keyword-only msgspec Structs in one tagged union, so any
stream of them encodes to JSON or msgpack for logs, recordings, replays and
the wire with no extra code. Internal audio has one canonical form: PCM16
little-endian mono bytes plus a sample rate; numpy views are for stages, not
for the frame.

Two ClassVars steer the runtime:

- ``urgent``: the frame overtakes queued data in a stage's inbox (interrupts,
  a requested stop). Urgent frames are never dropped and never wait behind
  audio.
- ``kind``: "data", "control" or "system", for logs and docs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "FRAME_TYPES",
    "AudioFrame",
    "Dtmf",
    "EndOfStream",
    "ErrorFrame",
    "Frame",
    "FrameUnion",
    "Interrupt",
    "Metric",
    "ModelEvent",
    "PausePlayout",
    "PlayoutPosition",
    "ResponseDone",
    "ResponseStarted",
    "ResumePlayout",
    "Say",
    "SessionEnded",
    "SessionStarted",
    "SpeechConfirmed",
    "SpeechStarted",
    "SpeechStopped",
    "TextInput",
    "ToolCall",
    "ToolResult",
    "Transcript",
    "TurnCommitted",
    "decode_json",
    "decode_msgpack",
    "encode_json",
    "encode_msgpack",
]


class Frame(msgspec.Struct, tag=True, frozen=True, kw_only=True, gc=False):
    """Base of every frame. The tag is the frame's snake-case type name."""

    urgent: ClassVar[bool] = False
    kind: ClassVar[str] = "data"


# --- media -----------------------------------------------------------------


class AudioFrame(Frame, tag="audio"):
    """PCM16 little-endian audio.

    ``pts`` is the stream time of the first sample in seconds; ``item_id``
    names the model output item the audio belongs to (empty for caller audio),
    so a sink can report how much of that item was played.
    """

    pcm: bytes
    sample_rate: int
    channels: int = 1
    pts: float = 0.0
    item_id: str = ""

    @property
    def samples(self) -> int:
        """Number of samples per channel."""
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.samples / self.sample_rate if self.sample_rate > 0 else 0.0


# --- text ------------------------------------------------------------------


class TextInput(Frame, tag="text_input"):
    """Text typed or sent by the caller (chat, DTMF menus, IVR)."""

    text: str
    role: Literal["user", "system"] = "user"


class Say(Frame, tag="say"):
    """Ask the agent to speak this text verbatim."""

    text: str


class Dtmf(Frame, tag="dtmf"):
    """A telephone keypad digit pressed by the caller."""

    digit: str


class Transcript(Frame, tag="transcript"):
    """Words of the caller (``user``) or the agent (``agent``)."""

    role: Literal["user", "agent"]
    text: str
    final: bool = True
    item_id: str = ""


# --- turns -----------------------------------------------------------------


class SpeechStarted(Frame, tag="speech_started"):
    """The caller started speaking at stream time ``at`` (seconds).

    ``tentative``: a ``SpeechConfirmed`` or a ``SpeechStopped`` follows, so
    an agent that is talking only pauses until the speech proves meant (a
    backchannel or a cough must not cut it off).
    """

    at: float = 0.0
    item_id: str = ""
    tentative: bool = False


class SpeechConfirmed(Frame, tag="speech_confirmed"):
    """The tentative speech that began at ``at`` is meant: the caller takes the floor."""

    at: float = 0.0
    words: str = ""


class SpeechStopped(Frame, tag="speech_stopped"):
    """The caller stopped speaking at stream time ``at`` (seconds)."""

    at: float = 0.0
    item_id: str = ""


class TurnCommitted(Frame, tag="turn_committed"):
    """The caller's turn is over: the buffered audio should be answered."""

    at: float = 0.0


# --- responses -------------------------------------------------------------


class ResponseStarted(Frame, tag="response_started"):
    """The model began a response."""

    response_id: str = ""


class ResponseDone(Frame, tag="response_done"):
    """The model finished a response (completed, cancelled, failed...)."""

    response_id: str = ""
    status: str = "completed"
    usage: dict[str, int] = msgspec.field(default_factory=dict)


class Interrupt(Frame, tag="interrupt"):
    """Stop the agent now (barge-in or cancel): overtakes queued audio."""

    urgent: ClassVar[bool] = True
    kind: ClassVar[str] = "system"
    reason: str = "barge_in"


class PausePlayout(Frame, tag="pause_playout"):
    """Hold the agent's audio where it is (the caller may be barging in)."""

    urgent: ClassVar[bool] = True
    kind: ClassVar[str] = "system"


class ResumePlayout(Frame, tag="resume_playout"):
    """Play the held audio on from where it was paused (it was not an interruption)."""

    urgent: ClassVar[bool] = True
    kind: ClassVar[str] = "system"


class PlayoutPosition(Frame, tag="playout_position"):
    """How much of a model item a sink actually played (sent upstream)."""

    kind: ClassVar[str] = "control"
    item_id: str
    played_ms: int
    interrupted: bool = False


# --- tools -----------------------------------------------------------------


class ToolCall(Frame, tag="tool_call"):
    """The model asks for a function call; ``arguments`` is raw JSON text."""

    call_id: str
    name: str
    arguments: str = "{}"


class ToolResult(Frame, tag="tool_result"):
    """The outcome of a tool call, going back to the model."""

    call_id: str
    name: str = ""
    output: str = ""
    is_error: bool = False


# --- lifecycle, errors, telemetry ------------------------------------------


class SessionStarted(Frame, tag="session_started"):
    """The conversation is live."""

    kind: ClassVar[str] = "control"
    session_id: str = ""


class SessionEnded(Frame, tag="session_ended"):
    """The conversation is over."""

    kind: ClassVar[str] = "control"
    session_id: str = ""
    reason: str = ""


class EndOfStream(Frame, tag="end_of_stream"):
    """No more frames follow. Stages flush what they hold when they see it."""

    kind: ClassVar[str] = "control"


class ErrorFrame(Frame, tag="error"):
    """Something went wrong in ``stage``; ``fatal`` errors end the pipeline."""

    kind: ClassVar[str] = "system"
    stage: str
    message: str
    fatal: bool = False
    code: str = ""
    event_id: str = ""
    error_type: str = ""
    """The model server's error type (``invalid_request_error``...), when it sent one."""


class Metric(Frame, tag="metric"):
    """A measurement taken by a stage (latency, counts, sizes)."""

    kind: ClassVar[str] = "system"
    stage: str
    name: str
    value: float
    unit: str = ""


class ModelEvent(Frame, tag="model_event"):
    """A Realtime server event with no frame of its own, passed through as is."""

    event: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def _all_frame_types() -> tuple[type[Frame], ...]:
    seen: list[type[Frame]] = []
    stack = list(Frame.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return tuple(seen)


FRAME_TYPES: tuple[type[Frame], ...] = _all_frame_types()

FrameUnion: Any = FRAME_TYPES[0]
for _cls in FRAME_TYPES[1:]:
    FrameUnion = FrameUnion | _cls

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(FrameUnion)
_msgpack_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(FrameUnion)


def encode_json(frame: Frame) -> bytes:
    """Encode a frame as one JSON object (audio bytes as base64)."""
    return _json_encoder.encode(frame)


def encode_msgpack(frame: Frame) -> bytes:
    """Encode a frame as msgpack."""
    return _msgpack_encoder.encode(frame)


def decode_json(data: bytes | str) -> Frame:
    """Decode one JSON-encoded frame; raises msgspec.ValidationError on bad input."""
    return _json_decoder.decode(data)


def decode_msgpack(data: bytes) -> Frame:
    """Decode one msgpack-encoded frame; raises msgspec.ValidationError on bad input."""
    return _msgpack_decoder.decode(data)
