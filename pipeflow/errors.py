"""The error tree, split by who is at fault.

- ``ConfigError``: the user's configuration or input is wrong; the message
  names the file, line, stage and field. The CLI prints it without a traceback.
- ``LocalError``: pipeflow or a stage failed on its own side.
- ``RemoteError``: the peer (a model server, a queue, a webhook) misbehaved.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigErrors",
    "LocalError",
    "PipeflowError",
    "ProtocolError",
    "RemoteError",
    "StageError",
]


class PipeflowError(Exception):
    """Base of every error pipeflow raises on purpose."""


class ConfigError(PipeflowError, ValueError):
    """A configuration or user input is invalid.

    Attributes:
        location: ``file:line:column`` (or a shorter prefix) when known.
    """

    def __init__(self, message: str, location: str = "") -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class ConfigErrors(ConfigError):
    """Every mistake found in one file, each a ``ConfigError`` with its location.

    Attributes:
        errors: the mistakes, in the order they appear in the file.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class LocalError(PipeflowError):
    """Something failed on our side."""


class StageError(LocalError):
    """A stage raised; ``stage`` names it and ``__cause__`` holds the original."""

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(f"stage {stage!r} failed: {message}")


class RemoteError(PipeflowError):
    """The other side (model server, queue, webhook) failed or misbehaved."""


class ProtocolError(RemoteError):
    """A peer sent something the protocol does not allow."""
