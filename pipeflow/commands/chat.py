"""``pipeflow chat FILE``: talk to a pipeline's agent by text in the terminal.

The pipeline file's source is replaced by a push source and its sinks by a
null sink, so the same agent, tools and storage answer typed lines instead of
a recording. Tool calls and results are shown as they happen.

``FILE`` may also be a Realtime script (``turns``, no ``stages``): the local
server plays it, always (a key in the environment does not send a script's
words to the API), with the tools its ``tools`` names or ``--tools`` gives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeflow.errors import ConfigError, LocalError, PipeflowError
from pipeflow.frames import Frame, ToolCall, ToolResult, Transcript

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``chat`` command."""
    p = subparsers.add_parser(
        "chat", help="talk to a pipeline's agent by text in the terminal",
        description="Run a pipeline's agent as a text conversation.",
    )
    p.add_argument("file", help="pipeline YAML file, or a Realtime script YAML file")
    p.add_argument("--tools", action="append", default=[], metavar="MODULE",
                   help="a script's tools (module or module:name; default: its 'tools')")
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
    async with contextlib.AsyncExitStack() as stack:
        if _is_script(args.file):
            session = await _script_session(args, stack)
        else:
            if args.tools:
                raise ConfigError("--tools is for a Realtime script; a pipeline file's tools "
                                  "are its agent.tools", args.file)
            session = AgentSession.from_file(
                args.file, overrides=args.overrides, output_dir=args.output,
                replace_sinks=[registry.resolve("null")(realtime=False)],
            )
        return await _chat(console, session, args.timeout)


def _is_script(file: str) -> bool:
    """Whether ``file`` is a Realtime script (``turns`` and no ``stages``)."""
    from pathlib import Path

    from pipeflow.yamlsource import load_yaml

    try:
        data = load_yaml(Path(file).read_text(encoding="utf-8"), file).data
    except (OSError, UnicodeDecodeError, PipeflowError):
        return False  # the pipeline loader says what is wrong with it
    return isinstance(data, dict) and "turns" in data and "stages" not in data


async def _script_session(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Any:
    """A session whose local server plays the script, with the script's tools.

    Raises:
        ConfigError: the script is invalid, or calls functions no tool module has.
    """
    from pipeflow.config import parse_config
    from pipeflow.realtime.script import load_script
    from pipeflow.realtime.server import LocalRealtimeServer
    from pipeflow.registry import registry
    from pipeflow.session import AgentSession
    from pipeflow.tools import ToolSet

    if args.overrides:
        raise ConfigError("--set is for a pipeline file; a script has no stages", args.file)
    script = load_script(args.file)
    refs = args.tools or script.tools
    tools = ToolSet.from_refs(refs)
    missing = [name for name in script.calls() if name not in tools.names()]
    if missing:
        given = f"the tools of {', '.join(refs)} have none of" if refs else "no tools are given for"
        raise ConfigError(
            f"the script calls {', '.join(missing)}, and {given} them: name the module that "
            f"defines them with --tools MODULE (or in the script's 'tools'), or chat with a "
            "pipeline file whose realtime stage plays this script", args.file)
    server = await stack.enter_async_context(
        LocalRealtimeServer(script=args.file, port=0, speed=0, first_audio_delay_ms=0))
    pipeline = {  # JSON is YAML: the pipeline a script plays in, as a file would say it
        "name": "chat",
        "agent": {"instructions": f"Plays the script {args.file}.", "tools": refs},
        "stages": [{"type": "realtime", "url": server.url,
                    "response_on_start": script.greeting is not None},
                   {"type": "tools"}, {"type": "callbacks"}],
    }
    config = parse_config(json.dumps(pipeline), args.file)
    return AgentSession.from_config(config, output_dir=args.output or "out",
                                    replace_sinks=[registry.resolve("null")(realtime=False)])


async def _chat(console: Console, session: Any, timeout: float) -> int:
    """The chat loop over a built session."""
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
                await answer(session, line.strip(), timeout)
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
