"""Session configuration on the server side: ``session.update`` in, session objects out.

The local Realtime server keeps one ``ServerConfig`` per connection. A
``session.update`` is read in the shape it is written in (GA: ``type:
"realtime"`` and nested ``audio.input`` / ``audio.output``; beta: flat
``input_audio_format``, ``modalities``, ``voice``...) and the session object
of ``session.created`` / ``session.updated`` is written back in the
connection's shape, like the OpenAI Realtime API does.

Mistakes become ``ClientError`` (code, message, ``param``), which the
server sends as an ``error`` event; the session stays as it was.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["MAX_INSTRUCTIONS_CHARS", "MAX_SPOKEN_CHARS", "ClientError", "ServerConfig",
           "apply_update", "audio_format", "check_spoken", "detect_shape", "session_object"]

MAX_SPOKEN_CHARS = 2000
"""Longest text a client may have the server speak in one message (about two
minutes of speech): synthesis runs on the server's event loop, and a 120 KB
text held it 10 s and took 700 MB."""
MAX_INSTRUCTIONS_CHARS = 65536
"""Longest ``session.instructions`` accepted."""

Shape = Literal["ga", "beta"]

_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_GA_NAMES = {v: k for k, v in _GA_FORMATS.items()}
_BETA_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
_TURN_TYPES = ("server_vad", "semantic_vad")
_BETA_KEYS = {"modalities", "input_audio_format", "output_audio_format", "voice",
              "turn_detection", "input_audio_transcription", "input_audio_noise_reduction",
              "temperature", "max_response_output_tokens"}
# Accepted and echoed, with no effect on a scripted model.
_IGNORED = {"tracing", "truncation", "prompt", "include", "max_output_tokens", "temperature",
            "max_response_output_tokens", "input_audio_noise_reduction", "speed",
            "client_secret", "expires_at", "id", "object"}


class ClientError(Exception):
    """A client event the server refuses; becomes an ``error`` event.

    Args:
        message: what is wrong, in a sentence.
        code: the error code (``invalid_value``, ``unknown_parameter``...).
        param: the offending field, dotted (``session.audio.input.format``).
    """

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def _check_length(text: str, limit: int, param: str) -> None:
    if len(text) > limit:
        raise ClientError(f"Invalid '{param}': string too long. Expected a string with maximum "
                          f"length {limit}, but got a string with length {len(text)} instead.",
                          "string_above_max_length", param)


def check_spoken(text: str, param: str) -> str:
    """``text`` when it is short enough to speak (``MAX_SPOKEN_CHARS``).

    Raises:
        ClientError: (``string_above_max_length``) it is longer.
    """
    _check_length(text, MAX_SPOKEN_CHARS, param)
    return text


class ServerConfig(msgspec.Struct, kw_only=True):
    """What a session is set to, whatever shape the client speaks."""

    model: str = "gpt-realtime"
    instructions: str = ""
    voice: str = "marin"
    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tool_choice: Any = "auto"
    text_only: bool = False
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    turn_detection: dict[str, Any] | None = msgspec.field(
        default_factory=lambda: {"type": "server_vad"}
    )
    transcription: dict[str, Any] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    transcription_session: bool = False
    """A transcription session (``?intent=transcription``): committed audio is
    transcribed, word deltas then the whole transcript, and no response is made."""

    @property
    def server_vad(self) -> bool:
        """Whether the server ends the caller's turns (server_vad or semantic_vad)."""
        return self.turn_detection is not None

    def turn_option(self, name: str, default: Any) -> Any:
        """A turn-detection setting (``create_response``, ``silence_duration_ms``...)."""
        value = (self.turn_detection or {}).get(name)
        return default if value is None else value


def detect_shape(session: dict[str, Any], current: Shape) -> Shape:
    """The shape a ``session.update`` is written in (``current`` when it cannot tell)."""
    if (session.get("type") in ("realtime", "transcription") or "audio" in session
            or "output_modalities" in session):
        return "ga"
    if _BETA_KEYS & session.keys():
        return "beta"
    return current


def _expect(value: Any, kind: type | tuple[type, ...], param: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ClientError(f"Invalid type for '{param}': expected {what}, got {value!r}.",
                          "invalid_type", param)
    return value


def _choice(value: Any, allowed: tuple[str, ...] | list[str], param: str) -> str:
    if value not in allowed:
        supported = ", ".join(f"'{a}'" for a in allowed)
        raise ClientError(f"Invalid value: {value!r}. Supported values are: {supported}.",
                          "invalid_value", param)
    return str(value)


def _turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    _expect(value, dict, param, "an object or null")
    _choice(value.get("type"), _TURN_TYPES, f"{param}.type")
    for key in ("silence_duration_ms", "prefix_padding_ms"):
        if key in value and value[key] is not None:
            _expect(value[key], int, f"{param}.{key}", "an integer")
            if value[key] < 0:
                raise ClientError(f"'{param}.{key}' must be 0 or more.", "invalid_value",
                                  f"{param}.{key}")
    return dict(value)


def _ga_format(value: Any, param: str) -> str:
    _expect(value, dict, param, "an object like {\"type\": \"audio/pcm\", \"rate\": 24000}")
    fmt = _choice(value.get("type"), list(_GA_FORMATS), f"{param}.type")
    if fmt == "audio/pcm" and value.get("rate", 24000) != 24000:
        raise ClientError(f"Invalid value: {value.get('rate')!r}. Supported values are: 24000.",
                          "invalid_value", f"{param}.rate")
    return _GA_FORMATS[fmt]


def _apply_common(config: ServerConfig, session: dict[str, Any]) -> set[str]:
    done = {"instructions", "tools", "tool_choice", "model"}
    if "instructions" in session:
        config.instructions = _expect(session["instructions"], str, "session.instructions",
                                      "a string")
        _check_length(config.instructions, MAX_INSTRUCTIONS_CHARS, "session.instructions")
    if "tools" in session:
        tools = _expect(session["tools"], list, "session.tools", "an array")
        for i, spec in enumerate(tools):
            _expect(spec, dict, f"session.tools[{i}]", "an object")
            if spec.get("type", "function") == "function":
                _expect(spec.get("name"), str, f"session.tools[{i}].name", "a string")
        config.tools = list(tools)
    if "tool_choice" in session:
        config.tool_choice = session["tool_choice"]
    if "model" in session:
        config.model = _expect(session["model"], str, "session.model", "a string")
    return done


def _apply_ga(config: ServerConfig, session: dict[str, Any]) -> set[str]:
    done = _apply_common(config, session) | {"type", "output_modalities", "audio"}
    kind = session.get("type", "transcription" if config.transcription_session else "realtime")
    if kind != ("transcription" if config.transcription_session else "realtime"):
        _choice(kind, ["realtime", "transcription"], "session.type")
        raise ClientError(
            f"Invalid value: {kind!r}: this connection is a "
            f"{'transcription' if config.transcription_session else 'conversation'} session; "
            "a transcription session is opened by connecting with ?intent=transcription.",
            "invalid_value", "session.type")
    if "output_modalities" in session:
        modes = _expect(session["output_modalities"], list, "session.output_modalities",
                        "an array")
        for mode in modes:
            _choice(mode, ["audio", "text"], "session.output_modalities")
        config.text_only = modes == ["text"]
    audio = _expect(session.get("audio", {}), dict, "session.audio", "an object")
    audio_in = _expect(audio.get("input", {}), dict, "session.audio.input", "an object")
    audio_out = _expect(audio.get("output", {}), dict, "session.audio.output", "an object")
    if "format" in audio_in:
        config.input_format = _ga_format(audio_in["format"], "session.audio.input.format")
    if "turn_detection" in audio_in:
        config.turn_detection = _turn_detection(audio_in["turn_detection"],
                                                "session.audio.input.turn_detection")
    if "transcription" in audio_in:
        config.transcription = audio_in["transcription"]
    if "format" in audio_out:
        config.output_format = _ga_format(audio_out["format"], "session.audio.output.format")
    if "voice" in audio_out:
        config.voice = _expect(audio_out["voice"], str, "session.audio.output.voice", "a string")
    return done


def _apply_beta(config: ServerConfig, session: dict[str, Any]) -> set[str]:
    done = _apply_common(config, session) | _BETA_KEYS
    if "modalities" in session:
        modes = _expect(session["modalities"], list, "session.modalities", "an array")
        for mode in modes:
            _choice(mode, ["audio", "text"], "session.modalities")
        config.text_only = "audio" not in modes
    if "input_audio_format" in session:
        config.input_format = _choice(session["input_audio_format"], _BETA_FORMATS,
                                      "session.input_audio_format")
    if "output_audio_format" in session:
        config.output_format = _choice(session["output_audio_format"], _BETA_FORMATS,
                                       "session.output_audio_format")
    if "turn_detection" in session:
        config.turn_detection = _turn_detection(session["turn_detection"],
                                                "session.turn_detection")
    if "input_audio_transcription" in session:
        config.transcription = session["input_audio_transcription"]
    if "voice" in session:
        config.voice = _expect(session["voice"], str, "session.voice", "a string")
    return done


def apply_update(config: ServerConfig, session: Any, shape: Shape) -> ServerConfig:
    """A copy of ``config`` with a ``session.update``'s ``session`` applied.

    Raises:
        ClientError: an unknown parameter or a bad value (``config`` is unchanged).
    """
    _expect(session, dict, "session", "an object")
    updated = msgspec.structs.replace(config, tools=list(config.tools), extra=dict(config.extra))
    known = _apply_ga(updated, session) if shape == "ga" else _apply_beta(updated, session)
    for key, value in session.items():
        if key in _IGNORED:
            updated.extra[key] = value
        elif key not in known:
            raise ClientError(f"Unknown parameter: 'session.{key}'.", "unknown_parameter",
                              f"session.{key}")
    return updated


def audio_format(name: str) -> dict[str, Any]:
    """The GA audio format object of a beta format name (``pcm16`` -> audio/pcm at 24 kHz)."""
    out: dict[str, Any] = {"type": _GA_NAMES[name]}
    if name == "pcm16":
        out["rate"] = 24000
    return out


def session_object(config: ServerConfig, shape: Shape, session_id: str) -> dict[str, Any]:
    """The session as ``session.created`` / ``session.updated`` report it."""
    common = {
        "id": session_id,
        "object": "realtime.session",
        "model": config.model,
        "instructions": config.instructions,
        "tools": config.tools,
        "tool_choice": config.tool_choice,
    }
    if config.transcription_session:
        return _transcription_object(config, shape, session_id)
    if shape == "beta":
        return {
            **common,
            "modalities": ["text"] if config.text_only else ["audio", "text"],
            "voice": config.voice,
            "input_audio_format": config.input_format,
            "output_audio_format": config.output_format,
            "input_audio_transcription": config.transcription,
            "turn_detection": config.turn_detection,
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            **{k: v for k, v in config.extra.items() if k in _BETA_KEYS},
        }

    return {
        "type": "realtime",
        **common,
        "output_modalities": ["text"] if config.text_only else ["audio"],
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": audio_format(config.input_format),
                "transcription": config.transcription,
                "noise_reduction": None,
                "turn_detection": config.turn_detection,
            },
            "output": {"format": audio_format(config.output_format), "voice": config.voice,
                       "speed": 1.0},
        },
        **{k: v for k, v in config.extra.items() if k not in _BETA_KEYS},
    }


def _transcription_object(config: ServerConfig, shape: Shape, session_id: str) -> dict[str, Any]:
    """A transcription session as ``session.created`` / ``session.updated`` report it
    (beta: as ``transcription_session.updated`` does)."""
    if shape == "beta":
        return {"id": session_id, "object": "realtime.transcription_session",
                "modalities": ["text"], "input_audio_format": config.input_format,
                "input_audio_transcription": config.transcription,
                "turn_detection": config.turn_detection}
    return {
        "type": "transcription", "id": session_id, "object": "realtime.transcription_session",
        "audio": {"input": {"format": audio_format(config.input_format),
                            "transcription": config.transcription, "noise_reduction": None,
                            "turn_detection": config.turn_detection}},
    }
