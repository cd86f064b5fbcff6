"""``pipeflow tools MODULE``: print the OpenAI schemas of a module's tools.

MODULE is a dotted module (``pipelines.example_tools``), one tool
(``pipelines.example_tools:get_weather``) or a ``.py`` file. Importing it
runs every ``@tool``, so a tool the model could not call is reported here,
before any session starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from pipeflow.errors import ConfigError

__all__ = ["cmd_tools", "module_ref", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``tools`` command."""
    p = subparsers.add_parser(
        "tools",
        help="print the OpenAI schemas of a module's tools",
        description="Print the OpenAI function schemas of the @tool functions in a module.",
    )
    p.add_argument(
        "module",
        nargs="+",
        metavar="MODULE",
        help="'package.module', 'package.module:function' or path/to/file.py",
    )
    p.add_argument(
        "--format",
        choices=("realtime", "chat"),
        default="realtime",
        help="Realtime session.tools shape (default) or Chat Completions tools shape",
    )
    p.set_defaults(func=cmd_tools)


def cmd_tools(args: argparse.Namespace) -> int:
    """Print the JSON schemas of every tool the references name.

    Raises:
        ConfigError: a module does not import, defines no tools, or has a
            tool that cannot be described.
    """
    from pipeflow.tools import ToolSet

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    tools = ToolSet.from_refs([module_ref(m) for m in args.module])
    text = msgspec.json.format(msgspec.json.encode(tools.to_openai_format(args.format)), indent=2)
    sys.stdout.write(text.decode() + "\n")
    return 0


def module_ref(value: str) -> str:
    """A tool reference for a dotted name or a file path.

    A file under the current folder becomes its dotted module name; a file
    elsewhere is imported by its name with its folder put on ``sys.path``.

    Raises:
        ConfigError: the path names a file that does not exist.
    """
    module, sep, attr = value.partition(":")
    if not module.endswith(".py") and "/" not in module and "\\" not in module:
        return value
    path = Path(module)
    if not path.is_file():
        raise ConfigError(f"tool module file not found: {module}")
    path = path.resolve()
    try:
        dotted = ".".join(path.with_suffix("").relative_to(Path.cwd().resolve()).parts)
    except ValueError:
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        dotted = path.stem
    return f"{dotted}{sep}{attr}"
