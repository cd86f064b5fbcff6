"""The ``pipeflow`` command line.

Built-in commands live here (``run``, ``validate``, ``stages``); every module
of ``pipeflow.commands`` adds more through ``register(subparsers)``. User
mistakes (``PipeflowError``) are printed as one clear message, never as a
traceback; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

import pipeflow
from pipeflow.errors import ConfigError, PipeflowError

__all__ = ["main"]

err = Console(stderr=True, highlight=False)


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run a pipeline file", description="Run a pipeline file.")
    p.add_argument("file", help="pipeline YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.OPTION=VALUE",
        help="override a stage option (STAGE is its id, type or 0-based index); repeatable",
    )
    p.add_argument("--output", "-o", help="output folder (default: the file's output_dir)")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check pipeline files without running them")
    v.add_argument("files", nargs="+", help="pipeline YAML files")
    v.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.OPTION=VALUE",
        help="check the file with this override applied; repeatable",
    )
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("stages", help="list every registered stage with its options")
    s.add_argument("name", nargs="?", help="show one stage only")
    s.add_argument("--markdown", action="store_true", help="print the markdown reference")
    s.set_defaults(func=cmd_stages)


async def cmd_run(args: argparse.Namespace) -> int:
    """Run one pipeline with live progress and print its summary."""
    from pipeflow.build import Changes
    from pipeflow.config import load_config
    from pipeflow.console import RunReporter
    from pipeflow.pipeline import Pipeline, RunResult

    config = load_config(args.file, args.overrides)
    _check_fed(config, args.file)
    pipeline = Pipeline.from_config(config, Changes(output_dir=args.output or None),
                                    count_frames=True)
    reporter = RunReporter(live=not args.quiet and not args.json)
    if not args.json:
        reporter.console.print(
            f"[bold]pipeflow[/] running [cyan]{escape(config.name)}[/] "
            f"({len(pipeline.stages)} stages) from {escape(str(args.file))}"
        )
    task = asyncio.current_task()
    assert task is not None  # asyncio.run runs us as a task
    loop = asyncio.get_running_loop()
    stopped = ""  # "SIGTERM" or "interrupted" once the run was stopped

    def terminate() -> None:
        nonlocal stopped
        stopped = "SIGTERM"
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        result = await pipeline.run(on_frame=reporter.on_frame)
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels us) or SIGTERM: the stages have shut
        # down; report what ran instead of a traceback.
        result = pipeline.result or RunResult(name=config.name, cancelled=True)
        result.cancelled = True
        stopped = stopped or "interrupted"
    if args.json:
        import msgspec

        s = reporter.stats
        payload = {
            "name": result.name,
            "ok": result.ok,
            "duration_s": result.duration,
            "turns": s.turns,
            "tool_calls": s.tool_calls,
            "interruptions": s.interruptions,
            "latencies_s": s.latencies,
            "frames_by_stage": result.frames_by_stage,
            "errors": [e.message for e in result.errors],
            "cancelled": result.cancelled,
        }
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
    else:
        reporter.console.print(reporter.summary(pipeline, result))
    if stopped:
        err.print(f"stopped: {stopped}")
        return 143 if stopped == "SIGTERM" else 130
    return 0 if result.ok else 1


def _check_fed(config: Any, file: str) -> None:
    """Refuse a run that could only end at once: no stage makes frames and the
    first one waits for some (a transport-only agent file, made for ``chat``).

    Raises:
        ConfigError: saying how to talk to it or what to add.
    """
    from pipeflow.registry import registry

    first = config.stages[0]
    if not first.cls.consumes or any(spec.cls.is_source() for spec in config.stages):
        return
    sources = sorted(name for name, cls in registry.all([]).items() if cls.is_source())
    raise ConfigError(
        f"nothing feeds this pipeline: its first stage, {first.id or first.type!r}, waits "
        "for frames and no stage is a source, so a run would end at once with no turns. "
        f"To talk to its agent, run: pipeflow chat {file}. To run it as a call, put a "
        f"source stage first ({', '.join(sources)}).",
        file,
    )


def script_warnings(config: Any) -> list[str]:
    """What a pipeline's local-server scripts call that nothing would answer.

    A ``realtime`` stage whose script calls functions needs a ``tools`` stage
    after it (else each call waits until the tool timeout), and the agent's
    tools should have every function called.
    """
    from pipeflow.realtime.script import load_script
    from pipeflow.tools import ToolSet

    out: list[str] = []
    has_tools = any(spec.type == "tools" for spec in config.stages)
    for index, spec in enumerate(config.stages):
        script_ref = getattr(spec.options, "script", None)
        if spec.type != "realtime" or not script_ref:
            continue
        label = f"{spec.where}: stage {index + 1} (realtime)"
        try:
            called = load_script(_near(script_ref, config.folder)).calls()
        except ConfigError as exc:
            out.append(f"{label}: its script cannot be loaded: {exc}")
            continue
        if called and not has_tools:
            out.append(f"{label} plays {script_ref}, which calls {', '.join(called)}, but the "
                       "pipeline has no tools stage, so no call would be answered: add "
                       "'- type: tools' after the realtime stage")
        elif called and config.agent is not None:
            try:
                names = set(ToolSet.from_refs(config.agent.tools).names())
            except ConfigError:
                continue  # reported with the agent
            missing = [name for name in called if name not in names]
            if missing:
                out.append(f"{label} plays {script_ref}, which calls {', '.join(missing)}; the "
                           "agent's tools have none of them (add them to agent.tools)")
    return out


def _near(ref: str, folder: str) -> str:
    """A script path as the local server will open it: as given, else next to the file."""
    from pathlib import Path

    if ref.startswith("pipeflow:") or Path(ref).exists() or not folder:
        return ref
    near = Path(folder) / ref
    return str(near) if near.exists() else ref


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate files; print every error of each (one per line, file:line:column
    first) or one ok line per good file. Exit 1 if any is invalid."""
    from pipeflow.agent import Agent
    from pipeflow.config import load_config
    from pipeflow.errors import ConfigErrors
    from pipeflow.registry import importable

    out = Console(highlight=False)
    failed = 0
    for file in args.files:
        try:
            config = load_config(file, args.overrides)
        except ConfigError as exc:
            failed += 1
            for error in exc.errors if isinstance(exc, ConfigErrors) else [exc]:
                out.print(f"[red]error[/] {escape(str(error))}", soft_wrap=True)
            continue
        if config.agent is not None:
            try:
                with importable(config.folder):
                    Agent.from_config(config.agent)
            except PipeflowError as exc:
                failed += 1
                out.print(f"[red]error[/] {escape(f'{file}: {exc}')}", soft_wrap=True)
                continue
        for warning in script_warnings(config):
            out.print(f"[yellow]warning[/] {escape(warning)}", soft_wrap=True)
        chain = " -> ".join(s.id or s.type for s in config.stages)
        out.print(f"[green]ok[/] {escape(f'{file}: {config.name}: {chain}')}", soft_wrap=True)
    return 1 if failed else 0


def cmd_stages(args: argparse.Namespace) -> int:
    """List stages with their options, types, defaults and docs."""
    from pipeflow.docgen import stage_reference, stages_table
    from pipeflow.registry import registry

    if args.markdown:
        sys.stdout.write(stage_reference())
        return 0
    out = Console(highlight=False)
    if args.name:
        cls = registry.resolve(args.name)
        out.print(stages_table({args.name: cls}))
        return 0
    broken: list[ConfigError] = []
    out.print(stages_table(registry.all(broken)))
    for exc in broken:
        err.print(f"[red]error[/] {escape(str(exc))}", soft_wrap=True)
    return 1 if broken else 0


def _load_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    import pipeflow.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="pipeflow",
        description="Real-time voice agents as YAML pipelines of async stages.",
    )
    parser.add_argument("--version", action="version", version=f"pipeflow {pipeflow.__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PIPEFLOW_LOG_LEVEL", "warning"),
        help="debug, info, warning (default), error",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _load_commands(sub)
    return parser


def _call(func: Any, args: argparse.Namespace) -> int:
    if inspect.iscoroutinefunction(func):
        return int(asyncio.run(func(args)) or 0)
    return int(func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeflow`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    level = "DEBUG" if args.debug else str(args.log_level).upper()
    if not isinstance(logging.getLevelName(level), int):
        err.print(escape(f"error: unknown log level {args.log_level!r}"))
        return 2
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path.cwd()))
    try:
        return _call(args.func, args)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except PipeflowError as exc:
        if args.debug:
            raise
        from pipeflow.errors import ConfigErrors

        for error in exc.errors if isinstance(exc, ConfigErrors) else [exc]:
            err.print(f"[red]error[/] {escape(str(error))}", soft_wrap=True)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
