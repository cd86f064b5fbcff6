"""The ``transcript`` sink: the conversation as readable text.

Writes one line per final transcript (``[mm:ss.s] caller: ...``), marks
interrupted agent turns, and lists tool calls, so a person can read a call
without replaying it. Every frame is passed on.
"""

from __future__ import annotations

import time
from typing import TextIO

import msgspec

from pipeflow.errors import ConfigError
from pipeflow.frames import EndOfStream, Frame, Interrupt, ToolCall, ToolResult, Transcript
from pipeflow.stage import Frames, Stage

__all__ = ["TranscriptOptions", "TranscriptSink"]


class TranscriptOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``transcript`` sink."""

    path: str = "transcript.txt"
    """Text file to write; relative paths are under the pipeline's output_dir."""
    tools: bool = True
    """Also write tool calls and their results."""
    caller_label: str = "caller"
    """How the caller is named in the file."""
    agent_label: str = "agent"
    """How the agent is named in the file."""


class TranscriptSink(Stage):
    """Writes the conversation's final transcripts (and tool calls) to a text file."""

    name = "transcript"
    role = "sink"
    writes = ("path",)
    Options = TranscriptOptions
    consumes = (Transcript, ToolCall, ToolResult, Interrupt)
    produces = (Frame,)

    async def process(self, frames: Frames) -> Frames:
        path = self.ctx.output_path(self.options.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"transcript sink cannot write {path}: {exc}") from exc
        self.ctx.pipeline.outputs["transcript"] = str(path)
        started = time.monotonic()
        try:
            async for frame in frames:
                self._write(out, frame, time.monotonic() - started)
                if isinstance(frame, EndOfStream):
                    out.flush()
                yield frame
        finally:
            out.close()

    def _write(self, out: TextIO, frame: Frame, at: float) -> None:
        stamp = f"[{int(at // 60):02d}:{at % 60:04.1f}]"
        opts = self.options
        match frame:
            case Transcript(final=True, role=role, text=text) if text.strip():
                label = opts.caller_label if role == "user" else opts.agent_label
                out.write(f"{stamp} {label}: {text.strip()}\n")
            case Interrupt():
                out.write(f"{stamp} ({opts.agent_label} interrupted)\n")
            case ToolCall(name=name, arguments=arguments) if opts.tools:
                out.write(f"{stamp} tool call {name}({arguments})\n")
            case ToolResult(output=output, is_error=is_error) if opts.tools:
                kind = "tool error" if is_error else "tool result"
                out.write(f"{stamp} {kind}: {' '.join(output.split())}\n")
            case _:
                return
        out.flush()
