"""Options of a Realtime connection (client, transport stage), and where defaults come from.

The URL comes from the options, else ``OAI_REALTIME_URL``; the key from the
options, else ``OPENAI_API_KEY``, else ``OAI_API_KEY``. With no URL and no
key, the transport stage starts the local Realtime server in-process, so a
pipeline runs offline by default. The key is never part of a repr or a log.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from pipeflow.errors import ConfigError

__all__ = [
    "API_URL",
    "AudioFormat",
    "EventNames",
    "RealtimeOptions",
    "ReconnectOptions",
    "connect_url",
    "resolve_api_key",
    "resolve_url",
]

API_URL = "wss://api.openai.com/v1/realtime"
"""The OpenAI Realtime endpoint used when a key is set and no URL is given."""

DEFAULT_MODEL = {"ga": "gpt-realtime", "beta": "gpt-4o-realtime-preview"}

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
"""Audio formats, by their beta names (GA: audio/pcm 24 kHz, audio/pcmu, audio/pcma)."""

FORMAT_RATES: dict[str, int] = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}
"""Sample rate of each audio format."""


class EventNames(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Names of the client events pipeflow sends (for servers that rename them)."""

    append: str = "input_audio_buffer.append"
    """Event that appends input audio."""
    commit: str = "input_audio_buffer.commit"
    """Event that commits the input audio buffer."""
    item_create: str = "conversation.item.create"
    """Event that adds a conversation item (text, function call output)."""
    response_create: str = "response.create"
    """Event that asks for a response."""
    response_cancel: str = "response.cancel"
    """Event that cancels the response in progress."""
    item_truncate: str = "conversation.item.truncate"
    """Event that truncates an assistant audio item at the played position."""
    text: Literal["conversation.item.create", "input_text.append"] = "conversation.item.create"
    """How user text is sent: conversation.item.create (a message item, the OpenAI
    API) or input_text.append (one flat {"text": ...} event, for servers that take
    that alias, the local one included)."""


class ReconnectOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What to do when the connection drops."""

    attempts: Annotated[int, msgspec.Meta(ge=0)] = 3
    """Reconnect attempts after a lost connection (0: end the session with an error)."""
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    """Wait before the first attempt; doubles after each failure."""
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    """Longest wait between two attempts."""


class RealtimeOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``realtime`` transport stage and of ``RealtimeClient``."""

    url: str | None = None
    """WebSocket URL of the Realtime API; empty: OAI_REALTIME_URL, else the OpenAI
    API when a key is set, else a local Realtime server started in-process."""
    model: str | None = None
    """Model name (query parameter 'model'); empty: the agent's model, else
    gpt-realtime (GA) or gpt-4o-realtime-preview (beta)."""
    api_key: str | None = None
    """API key; empty: OPENAI_API_KEY, else OAI_API_KEY. Never logged."""
    shape: Literal["ga", "beta"] = "ga"
    """Protocol shape: ga (session.type realtime, nested audio formats) or beta."""
    input_format: AudioFormat = "pcm16"
    """Audio sent to the model: pcm16 (24 kHz), g711_ulaw or g711_alaw (8 kHz)."""
    output_format: AudioFormat = "pcm16"
    """Audio the model sends back: pcm16 (24 kHz), g711_ulaw or g711_alaw (8 kHz)."""
    turn_detection: Literal["none", "server_vad", "semantic_vad"] = "none"
    """Who ends the caller's turn: none (the pipeline's vad stage commits) or the
    server's server_vad / semantic_vad."""
    voice: str | None = None
    """The model's voice; empty: the agent's voice, else the server's default."""
    instructions: str | None = None
    """System instructions; empty: the agent's instructions."""
    tool_choice: str = "auto"
    """auto, none, required, or a function name."""
    transcription_model: str | None = None
    """Model that transcribes the caller's audio (e.g. gpt-4o-mini-transcribe);
    empty: no transcription is asked for (the local server transcribes anyway)."""
    response_on_start: bool = False
    """Ask for a first response (a greeting) as soon as the session is set up."""
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """At end of stream, how long to wait for the answer in progress and
    pending tool calls before closing."""
    tool_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = 60.0
    """A tool call with no result after this many seconds gets an error result
    (null: wait forever)."""
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds to open the connection and set up the session."""
    keepalive_s: Annotated[float, msgspec.Meta(gt=0)] | None = 20.0
    """WebSocket ping interval; a peer that misses a pong for as long is gone
    (null: no pings)."""
    reconnect: ReconnectOptions = msgspec.field(default_factory=ReconnectOptions)
    """Reconnection after a lost connection (the session is set up again)."""
    max_send_buffer: Annotated[int, msgspec.Meta(ge=1024)] = 262144
    """Bytes queued for the socket before sending waits (back-pressure)."""
    events: EventNames = msgspec.field(default_factory=EventNames)
    """Client event names, for servers that rename them."""
    log_events: bool = False
    """Log every event at debug level (keys and audio payloads redacted)."""
    script: str | None = None
    """Local server only: the YAML script it plays, a path or pipeflow:NAME for one
    shipped with pipeflow (pipeflow:demo); empty: its built-in script."""
    first_audio_delay_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Local server only: delay before the first audio of each response."""
    speed: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """Local server only: audio pacing factor (1 real time, 0 no pacing)."""

    def __post_init__(self) -> None:
        from pipeflow.realtime.slots import check_provider

        try:
            if self.model:
                check_provider("option 'model'", self.model, "llm")
            if self.voice:
                check_provider("option 'voice'", self.voice, "tts")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None  # msgspec reports it at the option

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name == 'api_key' and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"RealtimeOptions({fields})"

    @property
    def input_rate(self) -> int:
        """Sample rate of the audio sent to the model."""
        return FORMAT_RATES[self.input_format]

    @property
    def output_rate(self) -> int:
        """Sample rate of the audio the model sends."""
        return FORMAT_RATES[self.output_format]

    def model_name(self, fallback: str | None = None) -> str:
        """The model: this option, else ``fallback`` (the agent's), else the shape's default."""
        return self.model or fallback or DEFAULT_MODEL[self.shape]


def resolve_api_key(options: RealtimeOptions) -> str | None:
    """The API key from the options, else ``OPENAI_API_KEY``, else ``OAI_API_KEY``."""
    return (
        options.api_key
        or os.environ.get("OPENAI_API_KEY")
        or os.environ.get("OAI_API_KEY")
        or None
    )


def resolve_url(options: RealtimeOptions) -> str | None:
    """The URL to connect to; ``None`` means: start the local server.

    Raises:
        ConfigError: the URL is not a ws:// or wss:// URL.
    """
    url = options.url or os.environ.get("OAI_REALTIME_URL") or None
    if url is None:
        return API_URL if resolve_api_key(options) else None
    scheme = urlsplit(url).scheme
    if scheme not in ("ws", "wss"):
        raise ConfigError(
            f"realtime option 'url' must be a ws:// or wss:// URL, got {url!r}"
        )
    return url


def connect_url(url: str, model: str) -> str:
    """``url`` with a ``model`` query parameter (kept when the URL already has one)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "model" for key, _ in query):
        query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))
