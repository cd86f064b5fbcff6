"""The client side of the Realtime protocol, with no I/O.

Like ``websockets``' protocol objects, ``RealtimeProtocol`` only buffers:
text from the socket goes in through ``receive_data()``, typed server
events come out of ``events_received()``, and encoded client events come
out of ``data_to_send()``; each call hands its buffer over and resets it.
Builders (``append_audio``, ``commit``, ``create_response``...) queue one
client event each and also return its encoding. The I/O shell
(``pipeflow.realtime.client``) only writes what it is given, so everything
here is testable with no sockets.

Session configuration has two shapes, built by ``session_payload``:

- GA: ``session.type = "realtime"``, ``audio.input.format`` /
  ``audio.output.format`` (``audio/pcm`` at 24 kHz, ``audio/pcmu``,
  ``audio/pcma``), ``audio.input.turn_detection``, ``audio.output.voice``;
- beta: flat ``input_audio_format`` / ``output_audio_format`` (``pcm16``,
  ``g711_ulaw``, ``g711_alaw``), ``turn_detection``, ``voice``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pipeflow.realtime.events import (
    ClientEvent,
    ContentPart,
    ConversationItemCreate,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    InputTextAppend,
    Item,
    ResponseCancel,
    ResponseCreate,
    ServerEvent,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    UnknownEvent,
    decode_server_event,
    encode_event,
)
from pipeflow.realtime.options import EventNames

__all__ = ["RealtimeProtocol", "SessionConfig", "redact", "session_payload"]

_GA_FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


class SessionConfig(msgspec.Struct, kw_only=True):
    """What ``session.update`` sets, independent of the wire shape."""

    instructions: str | None = None
    voice: str | None = None
    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tool_choice: str = "auto"
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    turn_detection: str = "none"
    transcription_model: str | None = None
    model: str | None = None


def _turn_detection(kind: str) -> dict[str, Any] | None:
    return None if kind == "none" else {"type": kind}


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}


def session_payload(config: SessionConfig, shape: Literal["ga", "beta"]) -> dict[str, Any]:
    """The ``session`` object of ``session.update`` in the GA or the beta shape."""
    if shape == "ga":
        audio_in: dict[str, Any] = {
            "format": dict(_GA_FORMATS[config.input_format]),
            "turn_detection": _turn_detection(config.turn_detection),
        }
        if config.transcription_model:
            audio_in["transcription"] = {"model": config.transcription_model}
        audio_out: dict[str, Any] = {"format": dict(_GA_FORMATS[config.output_format])}
        if config.voice:
            audio_out["voice"] = config.voice
        session: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": audio_out},
        }
        if config.model:
            session["model"] = config.model
    else:
        session = {
            "modalities": ["audio", "text"],
            "input_audio_format": config.input_format,
            "output_audio_format": config.output_format,
            "turn_detection": _turn_detection(config.turn_detection),
        }
        if config.voice:
            session["voice"] = config.voice
        if config.transcription_model:
            session["input_audio_transcription"] = {"model": config.transcription_model}
    if config.instructions is not None:
        session["instructions"] = config.instructions
    if config.tools:
        session["tools"] = config.tools
        session["tool_choice"] = _tool_choice(config.tool_choice)
    return session


class RealtimeProtocol:
    """Client-side Realtime protocol state: bytes and events in, bytes and events out.

    Args:
        shape: ``"ga"`` or ``"beta"`` (how ``session.update`` is built).
        names: client event names, for servers that rename them.

    Attributes:
        session: the configuration the server last reported (``session.updated``).
        session_ready: whether the server confirmed a session.
    """

    def __init__(
        self, shape: Literal["ga", "beta"] = "ga", names: EventNames | None = None
    ) -> None:
        self.shape = shape
        self.names = names or EventNames()
        self._renamed = self.names != EventNames()
        self.session: dict[str, Any] = {}
        self.session_ready = False
        self._events: list[ServerEvent | UnknownEvent] = []
        self._out: list[bytes] = []

    # -- receiving ------------------------------------------------------------

    def receive_data(self, data: str | bytes) -> None:
        """Decode one message from the server and queue its event.

        Raises:
            ProtocolError: the message is not a valid event (nothing is queued;
                the protocol stays usable).
        """
        event = decode_server_event(data)
        kind = type(event)
        if kind is SessionUpdated or kind is SessionCreated:
            self.session = event.session  # type: ignore[union-attr]
            self.session_ready = self.session_ready or kind is SessionUpdated
        self._events.append(event)

    def events_received(self) -> list[ServerEvent | UnknownEvent]:
        """Events decoded since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    @property
    def pending(self) -> int:
        """How many encoded events wait for ``data_to_send``."""
        return len(self._out)

    def data_to_send(self) -> list[bytes]:
        """Encoded client events queued since the last call, in order."""
        out, self._out = self._out, []
        return out

    def connection_lost(self) -> None:
        """Forget per-connection state (a new connection starts with no session)."""
        self.session_ready = False
        self.session = {}

    # -- sending ----------------------------------------------------------------

    def _queue(self, event: ClientEvent, name: str, default: str) -> bytes:
        if name == default:
            data = encode_event(event)
        else:
            obj = msgspec.to_builtins(event)
            obj["type"] = name
            data = msgspec.json.encode(obj)
        self._out.append(data)
        return data

    def update_session(self, config: SessionConfig) -> bytes:
        """Queue ``session.update`` in this protocol's shape."""
        event = SessionUpdate(session=session_payload(config, self.shape))
        return self._queue(event, "session.update", "session.update")

    def append_audio(self, audio: bytes) -> bytes:
        """Queue ``input_audio_buffer.append`` (audio already in the input format)."""
        if not self._renamed:  # the hot path: one encode, no name checks
            data = encode_event(InputAudioBufferAppend(audio=audio))
            self._out.append(data)
            return data
        return self._queue(
            InputAudioBufferAppend(audio=audio), self.names.append, "input_audio_buffer.append"
        )

    def commit(self) -> bytes:
        """Queue ``input_audio_buffer.commit``."""
        return self._queue(InputAudioBufferCommit(), self.names.commit, "input_audio_buffer.commit")

    def clear_audio(self) -> bytes:
        """Queue ``input_audio_buffer.clear``."""
        return self._queue(InputAudioBufferClear(), "input_audio_buffer.clear",
                           "input_audio_buffer.clear")

    def create_text_item(self, text: str, role: str = "user") -> bytes:
        """Queue ``conversation.item.create`` with a text message.

        With ``names.text`` set to ``input_text.append``, user text goes as that
        alias instead (other roles have no alias and stay message items).
        """
        if self.names.text == "input_text.append" and role == "user":
            data = encode_event(InputTextAppend(text=text))
            self._out.append(data)
            return data
        item = Item(type="message", role=role, content=[ContentPart(type="input_text", text=text)])
        return self._queue(
            ConversationItemCreate(item=item), self.names.item_create, "conversation.item.create"
        )

    def create_function_output(self, call_id: str, output: str) -> bytes:
        """Queue ``conversation.item.create`` with a ``function_call_output`` item."""
        item = Item(type="function_call_output", call_id=call_id, output=output)
        return self._queue(
            ConversationItemCreate(item=item), self.names.item_create, "conversation.item.create"
        )

    def create_response(
        self, response: dict[str, Any] | None = None, event_id: str | None = None
    ) -> bytes:
        """Queue ``response.create`` (``response`` overrides instructions, tools...).

        ``event_id`` lets an ``error`` event be matched to this request.
        """
        return self._queue(
            ResponseCreate(response=response, event_id=event_id),
            self.names.response_create,
            "response.create",
        )

    def cancel_response(self, response_id: str | None = None) -> bytes:
        """Queue ``response.cancel``."""
        return self._queue(
            ResponseCancel(response_id=response_id), self.names.response_cancel, "response.cancel"
        )

    def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> bytes:
        """Queue ``conversation.item.truncate``: the item was heard up to ``audio_end_ms``."""
        event = ConversationItemTruncate(
            item_id=item_id, content_index=content_index, audio_end_ms=max(0, int(audio_end_ms))
        )
        return self._queue(event, self.names.item_truncate, "conversation.item.truncate")


_SECRET_KEYS = ("api_key", "key", "authorization", "token", "client_secret")


def _redact_value(key: str, value: Any, audio: bool, secret: bool = False) -> Any:
    lowered = key.lower()
    # Everything under a secret key is secret: {"client_secret": {"value": "ek_..."}}.
    secret = secret or any(s in lowered for s in _SECRET_KEYS)
    if isinstance(value, dict):
        return {k: _redact_value(k, v, audio, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(key, v, audio, secret) for v in value]
    if isinstance(value, str) and secret:
        return "***"
    if isinstance(value, str) and (lowered == "audio" or (audio and lowered == "delta")):
        return f"<{len(value)} base64 chars>"
    return value


def redact(data: str | bytes) -> str:
    """A loggable form of one event: secrets and audio payloads replaced.

    Never raises: text that is not a JSON object is shown by its length only.
    """
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return f"<{len(data)} bytes, not JSON>"
    if not isinstance(obj, dict):
        return f"<{len(data)} bytes, not an event>"
    kind = str(obj.get("type", ""))
    audio = "audio.delta" in kind or "output_audio.delta" in kind
    return msgspec.json.encode(
        {k: _redact_value(k, v, audio) for k, v in obj.items()}
    ).decode()
