"""The reference library's names, and pipeflow's for each: one table.

pipeflow is the Python counterpart of a LiveKit-Agents-style voice-agent
library. Code and config files written for that library keep working: its
keyword arguments, config-file keys and CLI flags are read here, mapped to
pipeflow's own names, and nowhere else. ``WorkerOptions(...)``, worker config
files, ``Agent(...)`` and the worker commands all look names up in
``SEED_NAMES``; ``docs/migrating.md`` prints the same table (a test keeps the
two equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from pipeflow.errors import ConfigError

__all__ = ["SEED_NAMES", "SeedName", "aliases", "entry_ref", "markdown_table", "rename"]


class SeedName(NamedTuple):
    """One name of the reference library and what it is in pipeflow."""

    where: str
    """What takes it: 'WorkerOptions', 'Agent', 'JobContext' or a CLI command."""
    seed: str
    """The reference library's spelling."""
    ours: str
    """pipeflow's spelling ('' for a flag that changes nothing here)."""
    scale: float = 1.0
    """Multiply the value by this (milliseconds there, seconds here)."""
    note: str = ""
    """What differs, for the docs."""


SEED_NAMES: tuple[SeedName, ...] = (
    SeedName("WorkerOptions", "entry_point", "entry",
             note="a function is kept as its 'module:function' reference"),
    SeedName("WorkerOptions", "max_concurrent_jobs", "max_jobs"),
    SeedName("WorkerOptions", "timeout", "job_timeout", 0.001, "milliseconds there"),
    SeedName("WorkerOptions", "graceful_shutdown_timeout", "drain_timeout", 0.001,
             "milliseconds there"),
    SeedName("WorkerOptions", "port", "health_port"),
    SeedName("WorkerOptions", "host", "health_host"),
    SeedName("Agent", "agent_id", "name", note="also the agent section's key in YAML"),
    SeedName("JobContext", "get_info()", "info, job_id, params, participants",
             note="one dict of them"),
    SeedName("dev", "--hot-reload", "",
             note="dev always reloads edited code (--watch DIR picks the folders)"),
    SeedName("start", "--production", "", note="start always runs the production setup"),
    SeedName("worker, dev, start", "--server-url", "server_url",
             note="also a pipeflow flag; jobs read it as ctx.info['server_url']"),
    SeedName("worker, dev, start, submit, status, cancel, health", "--config-file", "--config"),
)
"""Every reference-library name pipeflow reads, with its pipeflow name."""


def aliases(where: str) -> dict[str, SeedName]:
    """The table's rows for one place, by their reference spelling."""
    return {row.seed: row for row in SEED_NAMES if row.where == where}


def rename(
    values: Mapping[str, Any],
    where: str,
    ours: set[str] | frozenset[str],
    convert: Callable[[str, Any], Any] | None = None,
) -> dict[str, Any]:
    """``values`` with the reference library's keys for ``where`` renamed to ours.

    Args:
        values: keyword arguments or config keys as given.
        where: which row set applies ('WorkerOptions', 'Agent').
        ours: pipeflow's own names there (a name that is ours is never renamed).
        convert: ``convert(name, value)`` applied to renamed values before scaling.

    Raises:
        ConfigError: a key given under both spellings.
    """
    table = aliases(where)
    out: dict[str, Any] = {}
    for key, value in values.items():
        row = table.get(key) if key not in ours else None
        if row is None:
            name = key
        else:
            name = row.ours
            if convert is not None:
                value = convert(name, value)
            if row.scale != 1.0 and isinstance(value, int | float) and not isinstance(value, bool):
                value = value * row.scale
        if name in out:
            raise ConfigError(f"{where}: {name!r} is given twice (as {key!r} and {name!r})")
        out[name] = value
    return out


def entry_ref(entry: Any) -> Any:
    """A job entry point as a reference string: a module-level function becomes
    ``'module:function'``; anything else is returned as it is.

    Raises:
        ConfigError: a function that cannot be imported by name (a lambda or
            one defined inside another function).
    """
    if not callable(entry) or isinstance(entry, str):
        return entry
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise ConfigError(
            f"entry point {entry!r} cannot be named as 'module:function' (a lambda or a "
            "nested function); define it at module level, or pass it as Worker(entry=...)"
        )
    return f"{module}:{qualname}"


def markdown_table() -> str:
    """``SEED_NAMES`` as the markdown table of ``docs/migrating.md``."""
    lines = ["| where | reference name | pipeflow name | note |", "|---|---|---|---|"]
    for row in SEED_NAMES:
        ours = ", ".join(f"`{name}`" for name in row.ours.split(", ")) if row.ours else "(none)"
        note = row.note + (f" (times {row.scale:g})" if row.scale != 1.0 else "")
        lines.append(f"| {row.where} | `{row.seed}` | {ours} | {note} |")
    return "\n".join(lines) + "\n"
