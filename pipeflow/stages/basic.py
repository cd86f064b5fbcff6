"""General-purpose stages: pass-through, filtering and logging."""

from __future__ import annotations

import logging

import msgspec

from pipeflow.frames import Frame
from pipeflow.stage import Frames, Stage

__all__ = ["LogFrames", "PassThrough"]


class PassThrough(Stage):
    """Passes every frame on unchanged (a no-op hop, for tests and benchmarks)."""

    name = "passthrough"


class LogOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``log`` stage."""

    level: str = "info"
    """Logging level name: debug, info, warning."""
    skip: list[str] = msgspec.field(default_factory=lambda: ["audio"])
    """Frame tags not to log (audio is skipped by default: too many)."""


class LogFrames(Stage):
    """Logs each frame (except skipped kinds) and passes it on."""

    name = "log"
    Options = LogOptions

    async def process(self, frames: Frames) -> Frames:
        level = logging.getLevelName(self.options.level.upper())
        skip = set(self.options.skip)
        log = self.ctx.log
        async for frame in frames:
            tag = type(frame).__struct_config__.tag
            if tag not in skip:
                log.log(level, "%s", _short(frame))
            yield frame


def _short(frame: Frame) -> str:
    text = repr(frame)
    return text if len(text) <= 200 else text[:197] + "..."
