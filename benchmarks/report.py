"""Write benchmark tables into benchmarks/results.md (and results.json).

Each benchmark owns one section, delimited by HTML comments, so benchmarks
can run alone and update only their own table. Every section records the
command that produced it and when; the header records the machine.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "SCRATCH_DIR", "SUITE", "machine_info", "markdown_table", "results_dir", "suite_bound_s",
    "write_section",
]

HERE = Path(__file__).resolve().parent
RESULTS_DIR_ENV = "PIPEFLOW_RESULTS_DIR"
SCRATCH_DIR = HERE.parent / "out" / "bench"
"""Where smoke runs (``--quick``) and partial runs write, so the tracked results only
ever hold one full run's figures."""
# name -> (module, seconds allowed for a full run, for a --quick run): what `make bench` runs.
SUITE: dict[str, tuple[str, int, int]] = {
    "pipeline": ("benchmarks.bench_pipeline", 90, 30),
    "micro": ("benchmarks.bench_micro", 90, 30),
    "audio": ("benchmarks.bench_audio", 120, 40),
    "realtime": ("benchmarks.bench_realtime", 90, 40),
    "latency": ("benchmarks.bench_latency", 90, 40),
    "cascade": ("benchmarks.bench_cascade", 120, 40),
    "worker": ("benchmarks.bench_worker", 300, 90),
    # Both searches stop starting steps after 900 s; the rest is the last round's steps.
    "scale": ("benchmarks.bench_scale", 1500, 120),
    "pipecat": ("benchmarks.bench_pipecat", 1500, 150),
    "turns": ("benchmarks.bench_turns", 600, 90),
}
ON_THEIR_OWN = {
    "bench_streams": "prints its table and writes nothing here",
    "bench_asr": "writes its own section here when run",
    "bench_cost": "needs valgrind; writes its own section here when run",
}
"""Benchmarks outside the suite's list: `make bench` does not run them."""
SECTION_RE = re.compile(r"<!-- begin ([\w.-]+) -->.*?<!-- end \1 -->", re.S)
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


def suite_bound_s(quick: bool = False) -> int:
    """The most a suite run may take: the sum of its benchmarks' time budgets."""
    return sum(quick_s if quick else full_s for _, full_s, quick_s in SUITE.values())


def _header(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    bound = suite_bound_s()
    alone = "; ".join(f"`python -m benchmarks.{name}` ({what})"
                      for name, what in ON_THEIR_OWN.items())
    return (
        "# pipeflow benchmark results\n\n"
        "The sections below come from separate runs, possibly on different days: each one\n"
        "names the command and the time (UTC) that produced it. Ratios and side-by-sides are\n"
        "measured together within one section's run (ratios, not absolute timings, are what\n"
        "carry over between machines); figures from different sections were taken in\n"
        "separate runs. Regenerate everything with `make bench`, or one section with the\n"
        "command shown under it.\n\n"
        f"`make bench` runs {len(SUITE)} benchmarks ({', '.join(SUITE)}), each stopped at its\n"
        f"time budget: at most {bound:,} s (about {bound / 60:.0f} min) in all, plus installing\n"
        "Pipecat into `.venv-bench` on first use. Not in the suite, run on their own: "
        f"{alone}.\n\n"
        f"Machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}.\n\nPackages: {packages}.\n"
    )


def sections_of(text: str) -> list[tuple[str, str]]:
    """Each ``(key, section)`` of a results.md, in order; anything outside them is dropped.

    Only whole begin/end blocks survive a rewrite, so blank lines or stray rows left
    between or after sections (an interrupted or overlapping write) never carry over.
    """
    return [(m.group(1), m.group(0).strip()) for m in SECTION_RE.finditer(text)]


def render(info: dict[str, Any], sections: list[tuple[str, str]]) -> str:
    """A whole results.md: the header, then the sections one blank line apart."""
    return _header(info) + "\n" + "\n\n".join(body for _, body in sections) + "\n"


@contextlib.contextmanager
def _locked(folder: Path):  # type: ignore[no-untyped-def]
    """Hold the results folder's lock: one read-modify-write of the files at a time."""
    with open(folder / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    with _locked(out):
        text = results_md.read_text() if results_md.exists() else ""
        sections = sections_of(text)
        if any(k == key for k, _ in sections):
            sections = [(k, section if k == key else v) for k, v in sections]
        else:
            sections.append((key, section))
        _replace(results_md, render(info, sections))
        store: dict[str, Any] = {}
        if results_json.exists():
            try:
                store = json.loads(results_json.read_text())
            except ValueError:
                store = {}
        store["machine"] = info
        store[key] = {"when": when, "command": command, "data": data}
        _replace(results_json, json.dumps(store, indent=2, sort_keys=True) + "\n")


def move_first(folder: Path, key: str) -> None:
    """Put section ``key`` first in ``folder``'s results.md, the header kept as it is."""
    results_md = folder / "results.md"
    with _locked(folder):
        text = results_md.read_text()
        sections = sections_of(text)
        first = [s for s in sections if s[0] == key]
        rest = [s for s in sections if s[0] != key]
        header = text[: text.find("<!-- begin ")] if "<!-- begin " in text else text
        _replace(results_md, header.rstrip("\n") + "\n\n"
                 + "\n\n".join(v for _, v in first + rest) + "\n")
