"""Loggers for ``websockets`` connections that never show keys or audio.

At debug level ``websockets`` logs every handshake header (``> Authorization:
Bearer sk-...``) and the start of every frame (the base64 of an
``input_audio_buffer.append``). The Realtime client and the local server hand
``websockets`` a ``RedactingLogger`` instead of its default logger: header
values that carry credentials become ``***`` and text frames are shown
through ``redact`` (audio payloads by their length only). Nothing is
computed unless debug logging is on: ``websockets`` checks the level first.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from websockets.frames import Frame, Opcode

from pipeflow.realtime.protocol import redact

__all__ = ["SECRET_HEADERS", "RedactingLogger", "redacting_logger"]

SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "api-key", "x-api-key",
    "openai-insecure-api-key",
})
"""Header names (lower case) whose values are never logged."""

_HEADER_FORMATS = ("> %s: %s", "< %s: %s")
_KEY_PROTOCOL = "openai-insecure-api-key."  # a browser's key, sent as a subprotocol
_MAX_FRAME_LOG = 300


def _header(name: str, value: Any) -> Any:
    lowered = name.lower()
    if lowered in SECRET_HEADERS:
        return "***"
    if lowered == "sec-websocket-protocol" and _KEY_PROTOCOL in str(value).lower():
        return ", ".join(
            _KEY_PROTOCOL + "***" if part.strip().lower().startswith(_KEY_PROTOCOL)
            else part.strip()
            for part in str(value).split(",")
        )
    return value


def _frame(frame: Frame) -> str:
    size = f"{len(frame.data)} byte{'' if len(frame.data) == 1 else 's'}"
    if frame.opcode is Opcode.TEXT or (frame.opcode is Opcode.CONT and frame.data[:1] == b"{"):
        shown = redact(frame.data)
        if len(shown) > _MAX_FRAME_LOG:
            shown = shown[:_MAX_FRAME_LOG] + "..."
        return f"{frame.opcode.name} {shown} [{size}{'' if frame.fin else ', continued'}]"
    if frame.opcode in (Opcode.BINARY, Opcode.CONT):
        return f"{frame.opcode.name} <payload not shown> [{size}]"
    return str(frame)  # ping, pong, close: no payload worth hiding


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that hides credential headers and frame payloads.

    Args:
        logger: the logger records go to (``websockets.client``...).
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Leave the message alone (the arguments are redacted in ``log``)."""
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log with secret header values and frame payloads replaced."""
        if not self.isEnabledFor(level):
            return
        if len(args) == 2 and msg in _HEADER_FORMATS and isinstance(args[0], str):
            args = (args[0], _header(args[0], args[1]))
        elif args:
            args = tuple(_frame(a) if isinstance(a, Frame) else a for a in args)
        self.logger.log(level, msg, *args, **kwargs)


def redacting_logger(name: str) -> RedactingLogger:
    """A ``RedactingLogger`` around ``logging.getLogger(name)``."""
    return RedactingLogger(logging.getLogger(name))
