"""Run the whole benchmark suite: ``python -m benchmarks [--quick] [--only NAME,...]``.

Each benchmark module runs alone in a subprocess with its own time budget
(so one that hangs or crashes cannot take the rest down) and writes its own
section of ``results.md``/``results.json``. Pipecat, for the side-by-side,
is installed on first use into its own venv (``.venv-bench``), never into
pipeflow's. At the end a "Headline figures"
section is put at the top of ``results.md``: each goal of the suite with the
measured value and whether it was met.

Only a full run (no ``--quick``, no ``--only``) writes the tracked
``benchmarks/results.md``; a smoke or partial run writes to ``out/bench/``
(or ``PIPEFLOW_RESULTS_DIR``) so its figures never mix with a full run's.
``--only ... --write-results`` updates the tracked sections it reran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import (
    RESULTS_DIR_ENV,
    SCRATCH_DIR,
    SUITE,
    markdown_table,
    move_first,
    results_dir,
    suite_bound_s,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS = SUITE  # name -> (module, full-run budget s, --quick budget s)


def run_one(name: str, quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one benchmark module in a subprocess within its time budget."""
    module, full_s, quick_s = BENCHMARKS[name]
    if importlib.util.find_spec(module) is None:
        log(f"[{name}] skipped: {module} is not there yet")
        return {"name": name, "status": "missing", "seconds": 0.0}
    budget = quick_s if quick else full_s
    command = [sys.executable, "-m", module, *(["--quick"] if quick else [])]
    log(f"[{name}] {' '.join(command[1:])} (at most {budget} s)")
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, timeout=budget, check=False)
    except subprocess.TimeoutExpired:
        log(f"[{name}] stopped after its {budget} s budget")
        return {"name": name, "status": "timeout", "seconds": time.monotonic() - started}
    took = time.monotonic() - started
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    log(f"[{name}] {status} in {took:.1f} s")
    return {"name": name, "status": status, "seconds": took}


def _prepare_pipecat() -> None:
    """Make the bench venv (.venv-bench, with pipecat-ai) now, outside the time budget."""
    from benchmarks.bench_pipecat import bench_python

    try:
        bench_python()
    except RuntimeError as exc:  # the Pipecat benchmark reports it in its section
        print(f"[pipecat] {exc}", file=sys.stderr)


# --- headline figures ------------------------------------------------------------------


def _data(store: dict[str, Any], key: str) -> Any:
    entry = store.get(key)
    return entry.get("data") if isinstance(entry, dict) else None


def _find(data: Any, *names: str) -> Any:
    """The first value under any of ``names``, searched depth first."""
    if isinstance(data, dict):
        for name in names:
            if name in data:
                return data[name]
        for value in data.values():
            found = _find(value, *names)
            if found is not None:
                return found
    elif isinstance(data, list):
        for value in data:
            found = _find(value, *names)
            if found is not None:
                return found
    return None


def headline_rows(store: dict[str, Any]) -> list[list[str]]:
    """One row per goal: goal, measured value, met or not, section."""
    rows: list[list[str]] = []

    def add(goal: str, value: str, met: bool | None, where: str) -> None:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        rows.append([goal, value, verdict, f"[{where}](#{_anchor(where)})"])

    pipeline = _data(store, "pipeline")
    if isinstance(pipeline, list) and pipeline:
        ratios = [r["ratio"] for r in pipeline]
        value = ", ".join(f"{r['ratio']:.2f}x at N={r['stages']}" for r in pipeline)
        if len(ratios) > 1:  # the range first: no single best figure stands for all
            value = f"{min(ratios):.2f}x-{max(ratios):.2f}x ({value})"
        add("pass-through stage within 1.5x a bare async generator", value,
            max(ratios) <= 1.5, "Pipeline runtime: pass-through stage vs bare async generator")
    else:
        add("pass-through stage within 1.5x a bare async generator", "-", None,
            "Pipeline runtime: pass-through stage vs bare async generator")

    ratio = _find(_data(store, "audio_resample"), "ratio")  # 16 -> 24 kHz comes first
    add("resample stage within 1.2x raw soxr (16 -> 24 kHz)",
        f"{ratio:.2f}x" if ratio is not None else "-", None if ratio is None else ratio <= 1.2,
        "Audio: resample stage vs raw soxr")

    added = _find(_data(store, "latency"), "added_p99_ms")
    add("pipeflow adds under 1 ms p99 from end of speech to first audio (beyond VAD)",
        f"{added:.3f} ms (difference of p99s, not a p99 of differences)"
        if added is not None else "-",
        None if added is None else added < 1.0, "Latency: end of speech to first agent audio")

    pipecat = _data(store, "pipecat") or {}
    scale = pipecat.get("scale") or {}
    ours = _limit(scale, "pipeflow, fed like a live call")
    lean = _limit(scale, "Pipecat lean")
    defaults = _limit(scale, "Pipecat 1.x defaults")
    goal = "5 pass-through stages fed like a live call: at least 10x Pipecat lean's sessions"
    if ours and lean and lean["sessions"]:
        ratio = ours["sessions"] / lean["sessions"]
        value = f"{_text(ours)} vs {_text(lean)} ({ratio:.1f}x)"
        if defaults and defaults["sessions"]:
            value += f"; Pipecat defaults {_text(defaults)}"
        add(goal, value, ratio >= 10, "Side by side with Pipecat")
    else:
        add(goal, "-", None, "Side by side with Pipecat")

    found = (_data(store, "scale") or {}).get("goals") or {}
    limits = (_data(store, "scale") or {}).get("limits") or {}
    cost = _data(store, "cost") or {}
    counted = cost.get("instructions") or {}
    ratios = cost.get("ratios") or {}
    where = "Sessions per core"
    live = found.get("live_vs_hand")
    goal = "live-call audio chain: at least 1.25x the hand-written chain's sessions per core"
    if live:
        hand = max((limits[c] for c in ("bare", "bare-push") if c in limits),
                   key=lambda lim: lim["sessions"])
        value = f"{_text(limits['audio-push'])} vs {_text(hand)} ({live['ratio']:.2f}x)"
        if "hand_vs_live" in ratios:
            value += (f"; in instructions per frame the hand-written chain fed the same way "
                      f"costs {ratios['hand_vs_live']:.2f}x pipeflow's")
        add(goal, value, live["met"], where)
    else:
        add(goal, "-", None, where)
    share = found.get("audio_floor_share")
    goal = "file-fed audio chain: at least 75% of the floor's sessions (plain loop, same N)"
    if share:
        value = f"{share['share']:.0%} ({share['at']:,} of {share['floor']:,})"
        if "floor_share" in ratios:
            value += (f"; in instructions per frame the floor's work is "
                      f"{ratios['floor_share']:.0%} of the chain's (not the verdict: cache "
                      "misses and lateness headroom are not counted)")
        add(goal, value, share["met"], where)
    else:
        add(goal, "-", None, where)
    push = found.get("push_vs_file_cpu")
    goal = ("live-call entry: the chain behind PushSource costs no more CPU per frame than the "
            "file-fed chain (same N)")
    if {"audio", "audio-push", "pacer"} <= counted.keys():
        # Counted instructions are exact, so the pacer (the stand-in for the network, not
        # part of the chain) can be taken out; two noisy timings could not be subtracted.
        entry = counted["audio-push"] - counted["pacer"]
        value = (f"{entry:,.0f} vs {counted['audio']:,.0f} instructions per frame "
                 f"({entry / counted['audio']:.2f}x): the live-fed chain's "
                 f"{counted['audio-push']:,.0f} less the pacer alone's {counted['pacer']:,.0f}; "
                 f"with the pacer {counted['audio-push'] / counted['audio']:.2f}x")
        if push:
            value += (f". Timed on the busy machine at N = {push['at']:,}: {push['push_us']:.1f} "
                      f"µs with the pacer vs {push['file_us']:.1f} µs (not the verdict)")
        add(goal, value, entry <= counted["audio"], "CPU per frame in instructions")
    elif push:
        value = (f"{push['push_us']:.1f} µs with the pacer vs {push['file_us']:.1f} µs at "
                 f"N = {push['at']:,}")
        met = push["push_us"] <= push["file_us"]  # as measured, pacer included
        if "entry_us" in push:
            value += (f" (note, not the verdict: {push['push_us']:.1f} - pacer "
                      f"{push['pacer_us']:.1f} = {push['entry_us']:.1f} µs)")
        add(goal, value, met, where)
    else:
        add(goal, "-", None, where)
    kib = found.get("kib_per_session")
    goal = "memory per session on the audio chain under 100 KiB"
    if kib:
        add(goal, f"{kib['kib']:.0f} KiB", kib["met"], where)
    else:
        add(goal, "-", None, where)
    return rows


def _limit(scale: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """The limit of the Pipecat section's chain whose label starts with ``prefix``."""
    return next((v for k, v in scale.items() if k.startswith(prefix)), None)


def _text(limit: dict[str, Any]) -> str:
    """A limit as a figure; a cap says so."""
    if limit.get("refined", True):
        return f"{limit['sessions']:,}"
    return f">= {limit['sessions']:,} (cap)"


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return slug.replace(" ", "-")


def write_headline(command: str, seconds: float | None = None) -> str:
    """Write the "Headline figures" section and move it to the top of results.md."""
    out = results_dir(command)
    try:
        store = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        store = {}
    rows = headline_rows(store)
    table = markdown_table(["goal", "measured", "verdict", "details"], rows)
    sources = sorted({f"`{e['command']}` ({e['when']})" for k, e in store.items()
                      if isinstance(e, dict) and "command" in e and k != "headline"})
    took = f" The run that wrote this table took {seconds:,.0f} s." if seconds else ""
    body = (
        "Each goal of the suite with its latest figure. Each figure is a ratio or a "
        "side-by-side taken within one section's run; the rows come from the sections' own "
        "runs (the command and time under each section), not all from one run: "
        + ", ".join(sources) + "." + took + "\n\n" + table
    )
    write_section("headline", "Headline figures", body, command,
                  {"rows": rows, "seconds": seconds})
    move_first(out, "headline")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (CI)")
    bound = suite_bound_s()
    parser.epilog = f"A full run takes at most {bound:,} s (the sum of the time budgets)."
    parser.add_argument(
        "--only", default="", help=f"comma-separated benchmarks among: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--write-results", action="store_true",
        help="with --only: update the tracked benchmarks/results.md (default: out/bench/)",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    if args.write_results and args.quick:
        parser.error("--write-results is for full runs; a --quick run never updates them")
    scratch = args.quick or (bool(args.only) and not args.write_results)
    if scratch and not os.environ.get(RESULTS_DIR_ENV):
        # The children inherit it: every section of this run lands in the scratch folder.
        os.environ[RESULTS_DIR_ENV] = str(SCRATCH_DIR)
        for name in ("results.md", "results.json"):
            (SCRATCH_DIR / name).unlink(missing_ok=True)
        print(f"{'quick' if args.quick else 'partial'} run: results go to {SCRATCH_DIR} "
              "(benchmarks/results.md is only written by a full run)")
    started = time.monotonic()
    if "pipecat" in names:
        _prepare_pipecat()
    results = [run_one(name, args.quick) for name in names]
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    print(write_headline(command, time.monotonic() - started))
    print(f"results: {results_dir(command) / 'results.md'} "
          f"({time.monotonic() - started:.0f} s)")
    failed = [r for r in results if r["status"] not in ("ok", "missing")]
    for result in failed:
        print(f"{result['name']}: {result['status']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
