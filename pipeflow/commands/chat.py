"""``pipeflow chat FILE``: talk to a pipeline's agent by text in the terminal.

The pipeline file's source is replaced by a push source and its sinks by a
null sink, so the same agent, tools and storage answer typed lines instead of
a recording. Tool calls and results are shown as they happen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeflow.errors import LocalError
from pipeflow.frames import Frame, ToolCall, ToolResult, Transcript

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``chat`` command."""
    p = subparsers.add_parser(
        "chat", help="talk to a pipeline's agent by text in the terminal",
        description="Run a pipeline's agent as a text conversation.",
    )
    p.add_argument("file", help="pipeline YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="STAGE.OPTION=VALUE", help="override a stage option")
    p.add_argument("--output", "-o", help="output folder (default: the file's output_dir)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for each answer (default 60)")
    p.set_defaults(func=cmd_chat)


async def answer(session: Any, text: str, timeout: float) -> list[Frame]:
    """Send one line; the frames from it to the end of the agent's whole answer."""
    start = session.frames_seen
    await session.ask(text, timeout)
    return session.frames_since(start)


async def cmd_chat(args: argparse.Namespace) -> int:
    """The chat loop: read a line, print the agent's answer, until EOF or 'quit'."""
    from pipeflow.registry import registry
    from pipeflow.session import AgentSession

    console = Console(highlight=False)
    session = AgentSession.from_file(
        args.file, overrides=args.overrides, output_dir=args.output,
        replace_sinks=[registry.resolve("null")(realtime=False)],
    )
    await session.start()
    console.print("[bold]pipeflow chat[/]: type to talk to the agent; 'quit' or Ctrl-D to end.")
    shown = 0
    try:
        with contextlib.suppress(TimeoutError, LocalError):  # a greeting, if the agent has one
            await session.wait_for("agent_transcript", 3.0, after=0)
        shown = _show(console, session, shown)
        while True:
            line = await asyncio.to_thread(_read_line, console)
            if line is None or line.strip().lower() in ("quit", "exit", "bye!"):
                break
            if not line.strip():
                continue
            try:
                await answer(session, line.strip(), args.timeout)
            except TimeoutError:
                console.print("[red]no answer in time[/]")
            shown = _show(console, session, shown)
    finally:
        await session.close()
        _show(console, session, shown)
    agent = session.context.agent
    summary = agent.summary if agent is not None else None
    if summary is not None:
        for key, value in (summary(session.userdata) or {}).items():
            console.print(f"[bold]{escape(str(key))}[/]: {escape(str(value))}")
    return 0


def _read_line(console: Console) -> str | None:
    try:
        return console.input("[bold cyan]you[/] > ")
    except EOFError:
        return None
    finally:
        sys.stdout.flush()


def _show(console: Console, session: Any, shown: int) -> int:
    """Print the logged frames numbered ``shown`` on; the number of the next one."""
    for frame in session.frames_since(shown):
        match frame:
            case Transcript(role="agent", final=True, text=text) if text.strip():
                console.print(f"[bold green]agent[/] {escape(text.strip())}")
            case ToolCall(name=name, arguments=arguments):
                console.print(f"[yellow]  tool {escape(f'{name}({arguments})')}[/]")
            case ToolResult(output=output, is_error=is_error):
                colour = "red" if is_error else "yellow"
                console.print(f"[{colour}]  -> {escape(output[:200])}[/]")
    return int(session.frames_seen)
