"""Write benchmark tables into benchmarks/results.md (and results.json).

Each benchmark owns one section, delimited by HTML comments, so benchmarks
can run alone and update only their own table. Every section records the
command that produced it and when; the header records the machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SCRATCH_DIR", "machine_info", "markdown_table", "results_dir", "write_section"]

HERE = Path(__file__).resolve().parent
RESULTS_DIR_ENV = "PIPEFLOW_RESULTS_DIR"
SCRATCH_DIR = HERE.parent / "out" / "bench"
"""Where smoke runs (``--quick``) and partial runs write, so the tracked results only
ever hold one full run's figures."""
PACKAGES = ("pipeflow", "numpy", "soxr", "msgspec", "websockets", "aiostream", "pipecat-ai")


def results_dir(command: str = "") -> Path:
    """Where results.md, results.json and plots go.

    ``PIPEFLOW_RESULTS_DIR`` when set (tests and partial suite runs use
    one); else ``out/bench/`` for a ``--quick`` command, whose short-run
    figures must never mix with a full run's; else ``benchmarks/`` itself.
    """
    override = os.environ.get(RESULTS_DIR_ENV)
    if override:
        path = Path(override)
    elif "--quick" in command.split():
        path = SCRATCH_DIR
    else:
        path = HERE
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, Python and package versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _header(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return (
        "# pipeflow benchmark results\n\n"
        "Every figure below is measured side by side in one run (ratios, not absolute\n"
        "timings, are what carry over between machines). Regenerate everything with\n"
        "`make bench`, or one section with the command shown under it.\n\n"
        f"Machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}.\n\nPackages: {packages}.\n"
    )


def write_section(key: str, title: str, body: str, command: str, data: Any = None) -> None:
    """Replace (or add) one section of results.md and its entry in results.json.

    Args:
        key: stable id of the section (e.g. "pipeline").
        title: heading shown in results.md.
        body: markdown (tables, notes) for the section.
        command: the shell command that reproduces it.
        data: raw numbers stored under ``key`` in results.json.
    """
    info = machine_info()
    out = results_dir(command)
    results_md = out / "results.md"
    results_json = out / "results.json"
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- begin {key} -->\n## {title}\n\n"
        f"Command: `{command}` ({when})\n\n{body.strip()}\n<!-- end {key} -->"
    )
    text = results_md.read_text() if results_md.exists() else ""
    header_end = text.find("<!-- begin ")
    sections = text[header_end:] if header_end >= 0 else ""
    pattern = re.compile(rf"<!-- begin {re.escape(key)} -->.*?<!-- end {re.escape(key)} -->", re.S)
    if pattern.search(sections):
        sections = pattern.sub(lambda _: section, sections)
    else:
        sections = (sections.rstrip() + "\n\n" + section).strip()
    results_md.write_text(_header(info) + "\n" + sections + "\n")
    store: dict[str, Any] = {}
    if results_json.exists():
        try:
            store = json.loads(results_json.read_text())
        except ValueError:
            store = {}
    store["machine"] = info
    store[key] = {"when": when, "command": command, "data": data}
    results_json.write_text(json.dumps(store, indent=2, sort_keys=True) + "\n")
