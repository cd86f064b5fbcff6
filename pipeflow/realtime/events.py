"""Realtime API events, typed with msgspec (GA and beta names).

One struct per event, tagged by its ``type`` field, so a whole event
decodes in one pass and audio is plain ``bytes`` (msgspec does the base64
both ways). The beta names of the events whose name changed in GA
(``response.audio.delta`` -> ``response.output_audio.delta``...) are
subclasses of their GA struct: code checks ``isinstance(e, OutputAudioDelta)``
and handles both.

Decoding never raises anything but ``ProtocolError``: a server event whose
``type`` is not known becomes ``UnknownEvent`` (passed on, not dropped); a
known event with wrong fields, or anything that is not a JSON object with a
string ``type``, is a ``ProtocolError``.

Wire format reference: the OpenAI Realtime API (client events
``session.update`` ... ``conversation.item.truncate``; server events
``session.created`` ... ``rate_limits.updated``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeflow.errors import ProtocolError

__all__ = [
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "ClientEvent",
    "ContentPart",
    "ConversationItemAdded",
    "ConversationItemCreate",
    "ConversationItemCreated",
    "ConversationItemDelete",
    "ConversationItemDeleted",
    "ConversationItemDone",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorDetail",
    "ErrorEvent",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputAudioBufferSpeechStarted",
    "InputAudioBufferSpeechStopped",
    "InputTextAppend",
    "InputTranscriptionCompleted",
    "InputTranscriptionDelta",
    "InputTranscriptionFailed",
    "Item",
    "OutputAudioDelta",
    "OutputAudioDeltaBeta",
    "OutputAudioDone",
    "OutputAudioDoneBeta",
    "OutputAudioTranscriptDelta",
    "OutputAudioTranscriptDeltaBeta",
    "OutputAudioTranscriptDone",
    "OutputAudioTranscriptDoneBeta",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputTextDelta",
    "OutputTextDeltaBeta",
    "OutputTextDone",
    "OutputTextDoneBeta",
    "RateLimitsUpdated",
    "Response",
    "ResponseCancel",
    "ResponseContentPartAdded",
    "ResponseContentPartDone",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ResponseFunctionCallArgumentsDelta",
    "ResponseFunctionCallArgumentsDone",
    "ServerEvent",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "TranscriptionSessionUpdate",
    "TranscriptionSessionUpdated",
    "UnknownEvent",
    "decode_client_event",
    "decode_server_event",
    "encode_event",
]


# --- shared parts --------------------------------------------------------------


class ContentPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One part of an item's content (input_text, input_audio, output_text, audio...)."""

    type: str
    text: str | None = None
    transcript: str | None = None
    audio: bytes | None = None


class Item(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A conversation item: a message, a function call or a function call's output."""

    type: str = ""
    id: str | None = None
    object: str | None = None
    status: str | None = None
    role: str | None = None
    content: list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class Response(msgspec.Struct, kw_only=True):
    """The response object of ``response.created`` / ``response.done``.

    The fields after ``metadata`` are each in one shape only (GA:
    ``output_modalities``, ``audio``; beta: ``modalities``, ``voice``,
    ``output_audio_format``, ``temperature``): left unset, they are not sent.
    """

    id: str = ""
    object: str = "realtime.response"
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[Item] = msgspec.field(default_factory=list)
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    conversation_id: str | msgspec.UnsetType = msgspec.UNSET
    max_output_tokens: int | str | msgspec.UnsetType = msgspec.UNSET
    output_modalities: list[str] | msgspec.UnsetType = msgspec.UNSET
    audio: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    modalities: list[str] | msgspec.UnsetType = msgspec.UNSET
    voice: str | msgspec.UnsetType = msgspec.UNSET
    output_audio_format: str | msgspec.UnsetType = msgspec.UNSET
    temperature: float | msgspec.UnsetType = msgspec.UNSET


class ErrorDetail(msgspec.Struct, kw_only=True):
    """The ``error`` object of an error event."""

    type: str = "error"
    message: str = ""
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


# --- client events (what a client sends) -----------------------------------------


class ClientEvent(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of events a client sends; ``event_id`` is optional on the wire."""

    event_id: str | None = None


class SessionUpdate(ClientEvent, tag="session.update"):
    """Set the session's instructions, voice, audio formats, turn detection, tools.

    ``session`` is a plain mapping because its shape differs between GA
    (nested ``audio.input.format``) and beta (flat ``input_audio_format``);
    ``pipeflow.realtime.protocol`` builds both.
    """

    session: dict[str, Any] = msgspec.field(default_factory=dict)


class TranscriptionSessionUpdate(ClientEvent, tag="transcription_session.update"):
    """Beta: set a transcription session (``?intent=transcription``) up; GA sends
    ``session.update`` with ``session.type: "transcription"`` instead."""

    session: dict[str, Any] = msgspec.field(default_factory=dict)


class InputAudioBufferAppend(ClientEvent, tag="input_audio_buffer.append"):
    """Append audio (already in the session's input format) to the input buffer."""

    audio: bytes


class InputAudioBufferCommit(ClientEvent, tag="input_audio_buffer.commit"):
    """Commit the input buffer as a user message (when server VAD is off)."""


class InputAudioBufferClear(ClientEvent, tag="input_audio_buffer.clear"):
    """Drop the audio buffered so far."""


class InputTextAppend(ClientEvent, tag="input_text.append"):
    """A user text message in one flat event (an alias, not an OpenAI event).

    Servers that speak it (the local one) treat it exactly as
    ``conversation.item.create`` with a user message of one ``input_text``
    part; the OpenAI API does not know it.
    """

    text: str


class ConversationItemCreate(ClientEvent, tag="conversation.item.create"):
    """Add an item: a user text message or a function call's output."""

    item: Item
    previous_item_id: str | None = None


class ConversationItemTruncate(ClientEvent, tag="conversation.item.truncate"):
    """Cut an assistant audio item at what the user actually heard."""

    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDelete(ClientEvent, tag="conversation.item.delete"):
    """Remove an item from the conversation."""

    item_id: str


class ResponseCreate(ClientEvent, tag="response.create"):
    """Ask the model to respond; ``response`` may override instructions, tools..."""

    response: dict[str, Any] | None = None


class ResponseCancel(ClientEvent, tag="response.cancel"):
    """Cancel the response in progress (barge-in)."""

    response_id: str | None = None


# --- server events (what a server sends) -----------------------------------------


class ServerEvent(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of events a server sends."""

    event_id: str = ""


class ErrorEvent(ServerEvent, tag="error"):
    """The server rejected a client event or failed; the connection stays open."""

    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)


class SessionCreated(ServerEvent, tag="session.created"):
    """The first event of a connection: the session's initial configuration."""

    session: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionUpdated(ServerEvent, tag="session.updated"):
    """The answer to ``session.update``: the configuration now in force."""

    session: dict[str, Any] = msgspec.field(default_factory=dict)


class TranscriptionSessionUpdated(ServerEvent, tag="transcription_session.updated"):
    """Beta: the answer to ``transcription_session.update``."""

    session: dict[str, Any] = msgspec.field(default_factory=dict)


class ConversationItemAdded(ServerEvent, tag="conversation.item.added"):
    """GA: an item was added to the conversation."""

    item: Item = msgspec.field(default_factory=Item)
    previous_item_id: str | None = None


class ConversationItemCreated(ServerEvent, tag="conversation.item.created"):
    """Beta (and GA for compatibility): an item was created."""

    item: Item = msgspec.field(default_factory=Item)
    previous_item_id: str | None = None


class ConversationItemDone(ServerEvent, tag="conversation.item.done"):
    """GA: an item is complete."""

    item: Item = msgspec.field(default_factory=Item)
    previous_item_id: str | None = None


class ConversationItemTruncated(ServerEvent, tag="conversation.item.truncated"):
    """The server cut an assistant audio item as asked."""

    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


class ConversationItemDeleted(ServerEvent, tag="conversation.item.deleted"):
    """An item was removed."""

    item_id: str = ""


class InputAudioBufferCommitted(ServerEvent, tag="input_audio_buffer.committed"):
    """The input buffer became a user message item."""

    item_id: str = ""
    previous_item_id: str | None = None


class InputAudioBufferCleared(ServerEvent, tag="input_audio_buffer.cleared"):
    """The input buffer was emptied."""


class InputAudioBufferSpeechStarted(ServerEvent, tag="input_audio_buffer.speech_started"):
    """Server VAD heard the user start speaking."""

    audio_start_ms: int = 0
    item_id: str = ""


class InputAudioBufferSpeechStopped(ServerEvent, tag="input_audio_buffer.speech_stopped"):
    """Server VAD heard the user stop speaking."""

    audio_end_ms: int = 0
    item_id: str = ""


class InputTranscriptionCompleted(
    ServerEvent, tag="conversation.item.input_audio_transcription.completed"
):
    """The transcript of a committed user audio item.

    ``usage`` is what transcribing it cost: ``{"type": "tokens", ...}`` or
    ``{"type": "duration", "seconds": ...}`` (required on the wire).
    """

    item_id: str = ""
    content_index: int = 0
    transcript: str = ""
    usage: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class InputTranscriptionDelta(
    ServerEvent, tag="conversation.item.input_audio_transcription.delta"
):
    """Part of the transcript of a user audio item."""

    item_id: str = ""
    content_index: int = 0
    delta: str = ""


class InputTranscriptionFailed(
    ServerEvent, tag="conversation.item.input_audio_transcription.failed"
):
    """Transcribing a user audio item failed."""

    item_id: str = ""
    content_index: int = 0
    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)


class ResponseCreated(ServerEvent, tag="response.created"):
    """A response started."""

    response: Response = msgspec.field(default_factory=Response)


class ResponseDone(ServerEvent, tag="response.done"):
    """A response ended: completed, cancelled, failed or incomplete."""

    response: Response = msgspec.field(default_factory=Response)


class OutputItemAdded(ServerEvent, tag="response.output_item.added"):
    """A response started an output item (a message or a function call)."""

    response_id: str = ""
    output_index: int = 0
    item: Item = msgspec.field(default_factory=Item)


class OutputItemDone(ServerEvent, tag="response.output_item.done"):
    """A response finished an output item."""

    response_id: str = ""
    output_index: int = 0
    item: Item = msgspec.field(default_factory=Item)


class ResponseContentPartAdded(ServerEvent, tag="response.content_part.added"):
    """A content part of an output item started."""

    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    part: ContentPart | None = None


class ResponseContentPartDone(ServerEvent, tag="response.content_part.done"):
    """A content part of an output item ended."""

    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    part: ContentPart | None = None


class _Delta(ServerEvent):
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0


class OutputAudioDelta(_Delta, tag="response.output_audio.delta"):
    """A chunk of the model's audio, in the session's output format."""

    delta: bytes = b""


class OutputAudioDeltaBeta(OutputAudioDelta, tag="response.audio.delta"):
    """Beta name of ``response.output_audio.delta``."""


class OutputAudioDone(_Delta, tag="response.output_audio.done"):
    """The model's audio for one item is complete."""


class OutputAudioDoneBeta(OutputAudioDone, tag="response.audio.done"):
    """Beta name of ``response.output_audio.done``."""


class OutputAudioTranscriptDelta(_Delta, tag="response.output_audio_transcript.delta"):
    """Part of the transcript of the model's audio."""

    delta: str = ""


class OutputAudioTranscriptDeltaBeta(
    OutputAudioTranscriptDelta, tag="response.audio_transcript.delta"
):
    """Beta name of ``response.output_audio_transcript.delta``."""


class OutputAudioTranscriptDone(_Delta, tag="response.output_audio_transcript.done"):
    """The whole transcript of the model's audio for one item."""

    transcript: str = ""


class OutputAudioTranscriptDoneBeta(
    OutputAudioTranscriptDone, tag="response.audio_transcript.done"
):
    """Beta name of ``response.output_audio_transcript.done``."""


class OutputTextDelta(_Delta, tag="response.output_text.delta"):
    """Part of a text-only answer."""

    delta: str = ""


class OutputTextDeltaBeta(OutputTextDelta, tag="response.text.delta"):
    """Beta name of ``response.output_text.delta``."""


class OutputTextDone(_Delta, tag="response.output_text.done"):
    """A text-only answer is complete."""

    text: str = ""


class OutputTextDoneBeta(OutputTextDone, tag="response.text.done"):
    """Beta name of ``response.output_text.done``."""


class ResponseFunctionCallArgumentsDelta(
    ServerEvent, tag="response.function_call_arguments.delta"
):
    """Part of a function call's JSON arguments."""

    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    call_id: str = ""
    delta: str = ""


class ResponseFunctionCallArgumentsDone(
    ServerEvent, tag="response.function_call_arguments.done"
):
    """A function call's arguments are complete.

    GA also names the function; beta does not (``name`` is then unset and
    the name comes from the ``response.output_item.added`` item).
    """

    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    call_id: str = ""
    name: str | msgspec.UnsetType = msgspec.UNSET
    arguments: str = ""


class RateLimitsUpdated(ServerEvent, tag="rate_limits.updated"):
    """Current rate limits (sent after each response)."""

    rate_limits: list[dict[str, Any]] = msgspec.field(default_factory=list)


class UnknownEvent(msgspec.Struct, kw_only=True):
    """A server event this module has no struct for, kept whole."""

    type: str
    data: dict[str, Any]


# --- codecs ----------------------------------------------------------------------


def _leaves(base: type) -> list[type]:
    """The event structs under ``base``; private bases (``_Delta``) are not events,
    though msgspec gives them their class name as a tag."""
    found: list[type] = []
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if not cls.__name__.startswith("_") and cls not in found:
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


_CLIENT_CLASSES = _leaves(ClientEvent)
_SERVER_CLASSES = _leaves(ServerEvent)

CLIENT_EVENT_TYPES: dict[str, type[ClientEvent]] = {
    c.__struct_config__.tag: c for c in _CLIENT_CLASSES
}
"""Client event name -> struct."""
SERVER_EVENT_TYPES: dict[str, type[ServerEvent]] = {
    c.__struct_config__.tag: c for c in _SERVER_CLASSES
}
"""Server event name (GA and beta) -> struct."""

_encoder = msgspec.json.Encoder()
# What bad input can raise besides a validation error: malformed JSON, text
# that is not UTF-8 (lone surrogates in a str), nesting deeper than the stack.
_BAD_INPUT = (msgspec.DecodeError, UnicodeError, RecursionError)


def _make_union(classes: list[type]) -> Any:
    union: Any = classes[0]
    for cls in classes[1:]:
        union = union | cls
    return union


_server_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    _make_union(_SERVER_CLASSES)
)
_client_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    _make_union(_CLIENT_CLASSES)
)
_object_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(dict[str, Any])


def encode_event(event: ClientEvent | ServerEvent) -> bytes:
    """Encode an event as one JSON object (UTF-8 bytes, audio as base64)."""
    return _encoder.encode(event)


def _envelope(data: bytes | str, side: str) -> dict[str, Any]:
    """The event as a mapping, for events the typed decoder refused."""
    try:
        obj = _object_decoder.decode(data)
    except _BAD_INPUT as exc:
        raise ProtocolError(f"a {side} event is not a JSON object: {exc}") from None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"a {side} event has no string 'type' field")
    return obj


def decode_server_event(data: bytes | str) -> ServerEvent | UnknownEvent:
    """Decode one server event (GA or beta name).

    Returns:
        The typed event, or ``UnknownEvent`` when its type has no struct here.

    Raises:
        ProtocolError: not a JSON object with a string ``type``, or a known
            event whose fields have the wrong types.
    """
    try:
        return _server_decoder.decode(data)
    except msgspec.ValidationError as exc:
        error: Exception = exc
    except _BAD_INPUT as exc:
        raise ProtocolError(f"a server event is not valid JSON: {exc}") from None
    obj = _envelope(data, "server")
    kind = obj["type"]
    if kind in SERVER_EVENT_TYPES:
        raise ProtocolError(f"server event {kind!r} is malformed: {error}") from None
    return UnknownEvent(type=kind, data=obj)


def decode_client_event(data: bytes | str) -> ClientEvent:
    """Decode one client event (what a server receives).

    Raises:
        ProtocolError: not a JSON object, an unknown event type, or wrong fields;
            the message names the event type (servers put it in an ``error`` event).
    """
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        error: Exception = exc
    except _BAD_INPUT as exc:
        raise ProtocolError(f"a client event is not valid JSON: {exc}") from None
    kind = _envelope(data, "client")["type"]
    if kind not in CLIENT_EVENT_TYPES:
        raise ProtocolError(f"unknown client event type {kind!r}")
    raise ProtocolError(f"client event {kind!r} is malformed: {error}") from None
