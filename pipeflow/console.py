"""Terminal output of a run: live progress and the closing summary.

``RunReporter`` watches the frames leaving a pipeline. It prints who speaks
and which tools are called as it happens, and keeps the figures of the
summary: turns, tool calls, interruptions, and turn-end to first-audio
latency (from the caller's committed turn to the sink's ``first_audio_out``
metric). Text from frames, files and errors is escaped before it is printed:
rich markup would otherwise eat anything in square brackets (the install hint
``pip install 'pipeflow[sounddevice]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeflow.frames import (
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
    SpeechStopped,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.pipeline import Pipeline, RunResult

__all__ = ["ConversationStats", "RunReporter", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class ConversationStats:
    """Figures of one conversation, filled from its frames."""

    user_turns: int = 0
    agent_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    interruptions: int = 0
    latencies: list[float] = field(default_factory=list)
    transcript: list[tuple[str, str]] = field(default_factory=list)
    _turn_end: float | None = None

    def observe(self, frame: Frame, now: float | None = None) -> None:
        """Update the figures with one frame."""
        now = time.monotonic() if now is None else now
        match frame:
            case Transcript(final=True, role=role, text=text) if text.strip():
                if role == "user":
                    self.user_turns += 1
                else:
                    self.agent_turns += 1
                self.transcript.append((role, text.strip()))
            case TurnCommitted() | SpeechStopped():
                if self._turn_end is None or isinstance(frame, TurnCommitted):
                    self._turn_end = now
            case Metric(name="first_audio_out", value=value):
                if self._turn_end is not None:
                    self.latencies.append(max(0.0, value - self._turn_end))
                    self._turn_end = None
            case ToolCall():
                self.tool_calls += 1
            case ToolResult(is_error=True):
                self.tool_errors += 1
            case Interrupt():
                self.interruptions += 1
                self._turn_end = None

    @property
    def turns(self) -> int:
        """Caller and agent turns together."""
        return self.user_turns + self.agent_turns


class RunReporter:
    """Prints progress while a pipeline runs and a summary at the end."""

    def __init__(self, console: Console | None = None, live: bool = True) -> None:
        self.console = console or Console(highlight=False)
        self.live = live
        self.stats = ConversationStats()
        self.started = time.monotonic()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.started:6.1f}s[/dim]"

    def on_frame(self, frame: Frame) -> None:
        """Feed every frame that leaves the pipeline."""
        self.stats.observe(frame)
        if not self.live:
            return
        out = self.console.print
        match frame:
            case Transcript(final=True, role="user", text=text) if text.strip():
                out(f"{self._stamp()} [bold cyan]caller[/]  {escape(text.strip())}")
            case Transcript(final=True, role="agent", text=text) if text.strip():
                out(f"{self._stamp()} [bold green]agent[/]   {escape(text.strip())}")
            case ToolCall(name=name, arguments=args):
                out(f"{self._stamp()} [yellow]tool[/]    {escape(f'{name}({_clip(args, 120)})')}")
            case ToolResult(name=name, output=output, is_error=is_error):
                colour = "red" if is_error else "yellow"
                shown = escape(f"{name}: {_clip(output, 120)}")
                out(f"{self._stamp()} [{colour}]result[/]  {shown}")
            case Interrupt(reason=reason):
                out(f"{self._stamp()} [magenta]interrupted[/] ({escape(str(reason))})")
            case ErrorFrame(stage=stage, message=message, fatal=fatal):
                label = "error" if fatal else "warning"
                out(f"{self._stamp()} [red]{label}[/]   {escape(f'{stage}: {message}')}")

    def summary(self, pipeline: Pipeline, result: RunResult) -> Table:
        """The end-of-run table."""
        s = self.stats
        table = Table(
            title=f"pipeflow run: {escape(result.name)}", show_header=False, title_justify="left"
        )
        table.add_column("what", style="bold")
        table.add_column("value")
        if result.cancelled:
            status = "[yellow]stopped[/] (interrupted before the end)"
        else:
            status = "[green]ok[/]" if result.ok else "[red]failed[/]"
        table.add_row("status", status)
        table.add_row("duration", f"{result.duration:.2f} s")
        table.add_row(
            "turns", f"{s.turns} (caller {s.user_turns}, agent {s.agent_turns})"
        )
        tools = f"{s.tool_calls}" + (f" ({s.tool_errors} errors)" if s.tool_errors else "")
        table.add_row("tool calls", tools)
        table.add_row("interruptions", str(s.interruptions))
        if s.latencies:
            p50 = percentile(s.latencies, 50) * 1000
            p99 = percentile(s.latencies, 99) * 1000
            table.add_row(
                "turn end -> first audio",
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(s.latencies)} turns)",
            )
        for key, value in _agent_summary(pipeline).items():
            table.add_row(escape(str(key)), escape(str(value)))
        for label, path in _outputs(pipeline).items():
            table.add_row(escape(label), escape(path))
        if result.frames_by_stage:
            frames = ", ".join(f"{k} {v}" for k, v in result.frames_by_stage.items())
            table.add_row("frames per stage", escape(frames))
        table.add_row("frames out", str(result.frames_out))
        for error in result.errors:
            table.add_row("[red]error[/]", escape(f"{error.stage}: {error.message}"))
        return table


def _agent_summary(pipeline: Pipeline) -> dict[str, Any]:
    agent = pipeline.context.agent
    hook = agent.summary if agent is not None else None
    if hook is None:
        return {}
    try:
        return dict(hook(pipeline.context.userdata) or {})
    except Exception as exc:
        return {"summary error": f"{type(exc).__name__}: {exc}"}


def _outputs(pipeline: Pipeline) -> dict[str, str]:
    found = dict(pipeline.context.outputs)
    if found:
        return found
    for st in pipeline.stages:  # stages that do not say what they wrote
        for option in st.writes:
            path = getattr(st.options, option, None)
            if path:
                found[f"{st.ctx.name} output"] = str(st.ctx.output_path(path))
    return found


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
