"""Logging set-ups for workers: JSON lines in production, readable text in development.

``pipeflow start`` writes one JSON object per line (what log shippers
expect): time, level, logger, message, and the job id, worker id or any
other ``extra`` field a record carries. Exceptions go in ``exc_info`` as
text, never across several lines.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from typing import Any, TextIO

import msgspec

__all__ = ["JsonFormatter", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        entry: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(entry).decode()
        except (TypeError, msgspec.EncodeError):
            return _encoder.encode({k: str(v) for k, v in entry.items()}).decode()


def setup_logging(level: str = "info", json: bool = False, stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (stderr) as text or JSON, at ``level``.

    Replaces the handlers the CLI installed, so the choice here wins.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
