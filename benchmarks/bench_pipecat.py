"""Side by side with Pipecat: the same pass-through pipeline, measured in one run.

The pipeline is a source of 20 ms PCM16 frames, N = 1, 5 or 10 processors
that pass every frame on, and a sink. Both frameworks run it in child
processes of this one, alternating, on the same machine and core:

- latency: one session at real-time pace; time from the source emitting a
  frame to the sink receiving it (p50, p99);
- flood: frames pushed as fast as they are taken; µs per frame per processor;
- sessions per core: the step search of ``bench_scale`` (5 processors, one
  pinned process, p99 lateness under 20 ms, no missing frame), with RSS per
  session. Pipecat runs once with its defaults and once lean (RTVI, turn
  tracking and the idle observer off).

Pipecat lives in its own virtual environment (``.venv-bench``, made on first
use with ``pip install -e '.[bench]'``) so it never touches pipeflow's.

    python -m benchmarks.bench_pipecat [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import bench_scale
from benchmarks.report import markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
FRAME_S = 0.020
PCM = bytes(640)  # 20 ms of 16 kHz PCM16 silence
COUNTS = (1, 5, 10)
PUSH = "pipeflow, fed like a live call (pacer per session -> PushSource)"
NATIVE = "pipeflow, native source (shared pacing clock)"
DEFAULTS = "Pipecat 1.x defaults (pacer per session -> queue_frame)"
LEAN = "Pipecat lean: RTVI, turn tracking, idle observer off (same pacer)"


def cpu_ratio_text(steps: dict[str, list[dict[str, Any]]], found_cpu: dict[str, Any]) -> str:
    """CPU per frame of each side at the largest N both passed: a ratio that a busy
    machine (which makes the p99 limits noisy) moves far less."""
    text = ""
    for label, name in ((LEAN, "lean"), (DEFAULTS, "defaults")):
        n = bench_scale._common_n(steps, PUSH, label)
        if not n:
            continue

        def cpu(chain: str, n: int = n) -> float:
            return min(s["cpu_us_per_frame"] for s in steps[chain]
                       if s["ok"] and s["sessions"] == n)

        ours, theirs = cpu(PUSH), cpu(label)
        found_cpu[name] = {
            "sessions": n, "pipeflow_us": ours, "pipecat_us": theirs, "ratio": theirs / ours}
        text += (f" CPU per frame at N = {n}, both fed like a live call: pipeflow {ours:.1f} µs, "
                 f"Pipecat {name} {theirs:.0f} µs ({theirs / ours:.1f}x).")
    return text


def scale_ratio_text(limits: dict[str, Any]) -> str:
    """pipeflow's sessions per core over Pipecat's, both fed like a live call."""
    ours = limits[PUSH]
    parts = []
    for label, name in ((DEFAULTS, "defaults"), (LEAN, "lean configuration")):
        theirs = limits[label]
        if theirs["sessions"]:
            bound = "" if ours["refined"] and theirs["refined"] else " (a cap is involved)"
            parts.append(f"{ours['sessions'] / theirs['sessions']:.1f}x Pipecat's {name}{bound}")
    if not parts:
        return "Pipecat held no step."
    return ("Fed the same way (a pacer per session into each live entry), pipeflow holds "
            + " and ".join(parts) + ".")


def bench_python() -> Path:
    """The interpreter of the bench venv, created (with pipecat-ai) on first use.

    Raises:
        RuntimeError: the venv cannot be created or pipecat cannot be installed.
    """
    python = BENCH_VENV / "bin" / "python"
    if python.exists() and _has_pipecat(python):
        return python
    print(f"creating {BENCH_VENV} with pipecat-ai (first use)...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(BENCH_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[bench]"],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"setting up {BENCH_VENV} failed ({' '.join(command[:4])}...): "
                f"{done.stderr.strip()[-400:]}"
            )
    return python


def _has_pipecat(python: Path) -> bool:
    done = subprocess.run(
        [str(python), "-c", "import pipecat, uvloop"], capture_output=True, check=False
    )
    return done.returncode == 0


# --- the pipecat side (runs inside .venv-bench) ---------------------------------------


def _pipecat_parts(processors: int, lean: bool, on_audio: Any) -> Any:
    """A PipelineWorker of ``processors`` pass-through processors and a recording sink."""
    from pipecat.frames.frames import InputAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class PassThrough(FrameProcessor):
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class Sink(FrameProcessor):
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                on_audio(frame)
            await self.push_frame(frame, direction)

    pipeline = Pipeline([*(PassThrough() for _ in range(processors)), Sink()])
    options: dict[str, Any] = {"cancel_on_idle_timeout": False}
    if lean:
        options.update(enable_rtvi=False, enable_turn_tracking=False, idle_timeout_secs=None)
    return PipelineWorker(pipeline, **options)


async def pipecat_session(
    processors: int, frames: int, paced: bool, lean: bool, record: Any, schedule: bool = False,
    rec: Any = None,
) -> float:
    """Run one Pipecat session; ``record(seconds)`` gets each frame's source-to-sink time.

    With ``schedule`` the time is counted from when the frame was due (its
    session's real-time schedule) rather than from when it was emitted; with
    ``rec`` (a ``bench_scale.Record``) each frame's due time and arrival go
    there instead. The paced loop below is the same pacer every chain's live
    entry gets in ``bench_scale``: one ``asyncio.sleep`` per frame into
    ``queue_frame``, Pipecat's way in for a transport's audio.
    Returns the seconds from the first frame queued to the last frame received.
    """
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame
    from pipecat.workers.runner import WorkerRunner

    loop = asyncio.get_running_loop()
    emitted: dict[int, float] = {}
    last = [0.0]

    def on_audio(frame: Any) -> None:
        now = loop.time()
        sent = emitted.pop(id(frame), now)
        if rec is not None:
            rec.add(sent, now)
        else:
            record(now - sent)
        last[0] = now

    worker = _pipecat_parts(processors, lean, on_audio)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: Any, _frame: Any) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    run = asyncio.ensure_future(runner.run())
    await started.wait()
    begin = loop.time()
    for i in range(frames):
        if paced:
            delay = begin + i * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = InputAudioRawFrame(audio=PCM, sample_rate=16000, num_channels=1)
        emitted[id(frame)] = begin + i * FRAME_S if schedule else loop.time()
        await worker.queue_frame(frame)
    await worker.queue_frame(EndFrame())
    await run
    return last[0] - begin


# --- the pipeflow side ------------------------------------------------------------------


async def pipeflow_session(
    processors: int, frames: int, paced: bool, record: Any, schedule: bool = False
) -> float:
    """Run one pipeflow session of ``processors`` PassThrough stages; as above."""
    from pipeflow import Pipeline
    from pipeflow.audio.clock import get_clock
    from pipeflow.frames import AudioFrame
    from pipeflow.stages.basic import PassThrough

    clock = get_clock()
    emitted: dict[int, float] = {}

    async def source() -> Any:
        begin = clock.now()
        for i in range(frames):
            if paced:
                await clock.sleep_until(begin + i * FRAME_S)
            frame = AudioFrame(pcm=PCM, sample_rate=16000, pts=i * FRAME_S)
            emitted[id(frame)] = begin + i * FRAME_S if schedule else clock.now()
            yield frame

    pipeline = Pipeline([PassThrough() for _ in range(processors)])
    begin = clock.now()
    last = begin
    async for frame in pipeline.stream(source()):
        if type(frame) is AudioFrame:
            last = clock.now()
            record(last - emitted.pop(id(frame), last))
    return last - begin


# --- one measurement, in a child process ----------------------------------------------


async def _measure(side: str, what: str, processors: int, frames: int, lean: bool) -> dict:
    samples: list[float] = []
    if side == "pipecat":
        took = await pipecat_session(processors, frames, what == "latency", lean, samples.append)
    else:
        took = await pipeflow_session(processors, frames, what == "latency", samples.append)
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6 if ordered else 0.0

    return {
        "side": side, "what": what, "processors": processors, "frames": len(samples),
        "p50_us": pct(0.50), "p99_us": pct(0.99), "seconds": took,
    }


async def _scale_step(n: int, lean: bool) -> dict[str, Any]:
    """N Pipecat sessions of 5 pass-through processors, with ``bench_scale``'s harness."""
    frames = bench_scale.session_frames()

    async def session(record: bench_scale.Record) -> None:
        await pipecat_session(5, frames, True, lean, None, schedule=True, rec=record)
        record.missing = frames - record.n

    async def warm_up() -> None:  # lazy imports are not counted per session
        await pipecat_session(5, 3, False, lean, lambda _: None)

    result = await bench_scale.measure(n, session, warm_up)
    result["scenario"] = f"pipecat{'-lean' if lean else ''}"
    return result


def child(args: argparse.Namespace) -> None:
    """Entry of one measurement: pin to one core, run, print a JSON line."""
    import logging

    logging.disable(logging.WARNING)
    try:
        from loguru import logger  # pipecat logs every session start at DEBUG

        logger.remove()
    except ImportError:
        pass
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.core if args.core in cpus else cpus[-1]})
    if args.what == "scale":
        bench_scale.RAMP_S, bench_scale.WARMUP_S, bench_scale.MEASURE_S = args.timing
        result = asyncio.run(_scale_step(args.sessions, args.lean))
    else:
        result = asyncio.run(
            _measure(args.side, args.what, args.processors, args.frames, args.lean)
        )
    print(json.dumps(result))


# --- the parent --------------------------------------------------------------------------


def _run_child(python: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    command = [str(python), "-m", "benchmarks.bench_pipecat", "--child", *extra]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def scale_step(python: Path, n: int, lean: bool, core: int) -> dict[str, Any]:
    """One sessions-per-core step of Pipecat (5 pass-through processors) in a pinned child
    of ``python`` (the bench venv's), judged by ``bench_scale``'s pass rule."""
    extra = ["--what", "scale", "--sessions", str(n), "--core", str(core),
             "--timing", *bench_scale.timing_args()[1:]]
    if lean:
        extra.append("--lean")
    result = _run_child(python, extra, 60 + bench_scale.session_frames() * FRAME_S + n / 20)
    result.setdefault("sessions", n)
    result["ok"] = bench_scale.passes(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--no-scale", action="store_true", help="skip sessions per core")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="pipeflow", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="latency", help=argparse.SUPPRESS)
    parser.add_argument("--processors", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=250, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--timing", type=float, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--lean", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    try:
        pipecat_python = bench_python()
    except RuntimeError as exc:
        print(f"Pipecat side skipped: {exc}", file=sys.stderr)
        body = f"Not measured: {exc}"
        command = "python -m benchmarks.bench_pipecat"
        write_section("pipecat", "Side by side with Pipecat", body, command)
        return
    ours = Path(sys.executable)
    core = sorted(os.sched_getaffinity(0))[-1]
    paced_frames, flood_frames, rounds = (50, 500, 1) if args.quick else (150, 3000, 2)
    sides = (("pipeflow", ours, False), ("pipecat", pipecat_python, False))
    latency: dict[tuple[str, int], list[dict]] = {}
    flood: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for n in COUNTS:
            for side, python, lean in sides:
                common = ["--side", side, "--processors", str(n), "--core", str(core)]
                if lean:
                    common.append("--lean")
                latency.setdefault((side, n), []).append(_run_child(
                    python, [*common, "--what", "latency", "--frames", str(paced_frames)], 120
                ))
                flood.setdefault((side, n), []).append(_run_child(
                    python, [*common, "--what", "flood", "--frames", str(flood_frames)], 120
                ))
                print(f"  {side:<8} N={n:<2} latency p50 "
                      f"{latency[(side, n)][-1].get('p50_us', float('nan')):8.1f} µs  flood "
                      f"{flood[(side, n)][-1].get('seconds', float('nan')):.3f} s", flush=True)
    rows, data_rows = [], []
    for n in COUNTS:
        row: dict[str, Any] = {"processors": n}
        for side, _python, _lean in sides:
            runs = [r for r in latency[(side, n)] if "p50_us" in r]
            floods = [r for r in flood[(side, n)] if "seconds" in r and r["frames"]]
            row[f"{side}_p50_us"] = statistics.median(r["p50_us"] for r in runs) if runs else None
            row[f"{side}_p99_us"] = statistics.median(r["p99_us"] for r in runs) if runs else None
            row[f"{side}_flood_us"] = (
                statistics.median(r["seconds"] / r["frames"] * 1e6 for r in floods)
                if floods else None
            )
        data_rows.append(row)

        def fmt(value: Any) -> Any:
            return "-" if value is None else value

        ratio = (row["pipecat_flood_us"] / row["pipeflow_flood_us"]
                 if row["pipecat_flood_us"] and row["pipeflow_flood_us"] else None)
        rows.append([
            n, fmt(row["pipeflow_p50_us"]), fmt(row["pipeflow_p99_us"]),
            fmt(row["pipecat_p50_us"]), fmt(row["pipecat_p99_us"]),
            fmt(row["pipeflow_flood_us"]), fmt(row["pipecat_flood_us"]),
            f"{ratio:.0f}x" if ratio else "-",
        ])
    table = markdown_table(
        ["processors", "pipeflow p50 µs", "pipeflow p99 µs", "Pipecat p50 µs", "Pipecat p99 µs",
         "pipeflow flood µs/frame", "Pipecat flood µs/frame", "flood ratio"],
        rows,
    )
    slopes = {}
    for side, _python, _lean in sides:
        first, last = data_rows[0][f"{side}_flood_us"], data_rows[-1][f"{side}_flood_us"]
        if first is not None and last is not None:
            slopes[side] = (last - first) / (COUNTS[-1] - COUNTS[0])
    slope_text = (
        f"Cost of each extra processor in the flood (slope from N={COUNTS[0]} to "
        f"N={COUNTS[-1]}): pipeflow {slopes['pipeflow']:.2f} µs, Pipecat "
        f"{slopes['pipecat']:.1f} µs per frame."
        if len(slopes) == 2 else ""
    )
    scale_rows: list[list[Any]] = []
    limits: dict[str, Any] = {}
    cpu_at_n: dict[str, Any] = {}
    if not args.no_scale:
        if args.quick:
            bench_scale.RAMP_S, bench_scale.WARMUP_S, bench_scale.MEASURE_S = 0.5, 0.5, 1.0
        budget = 40.0 if args.quick else 900.0

        def pipecat_step(n: int, lean: bool) -> dict[str, Any]:
            return scale_step(pipecat_python, n, lean, core)

        configs: dict[str, Any] = {
            PUSH: lambda n: bench_scale.step("passthrough-push", n, Path("-"), core),
            NATIVE: lambda n: bench_scale.step("passthrough", n, Path("-"), core),
            DEFAULTS: lambda n: pipecat_step(n, False),
            LEAN: lambda n: pipecat_step(n, True),
        }
        print("sessions per core, 5 pass-through processors:", flush=True)
        found, all_steps = bench_scale.search_all(
            configs, budget, start=10, growth=5 if args.quick else 2.0,
            precision=1.0 if args.quick else bench_scale.PRECISION,
            retries=0 if args.quick else 1,
        )
        for label in configs:
            steps = all_steps[label]
            best = bench_scale.at_limit(steps, found[label])
            limits[label] = {**found[label], "steps": steps}
            scale_rows.append([
                label, bench_scale.limit_text(found[label]), best.get("p99_ms", "-"),
                best.get("startup_p99_ms", "-"), best.get("cpu_us_per_frame", "-"),
                best.get("rss_per_session_kib", "-"),
            ])
        scale_table = markdown_table(
            ["5 pass-through processors", "sessions per core", "steady p99 (ms)",
             "start-up p99 (ms)", "CPU per frame (µs)", "RSS per session (KiB)"],
            scale_rows,
        )
        ratio_text = (scale_ratio_text(limits) + cpu_ratio_text(all_steps, cpu_at_n)
                      + "\n\n" + bench_scale.load_text(all_steps))
    else:
        scale_table, ratio_text = "", "Sessions per core not run (--no-scale)."
    show = "import importlib.metadata as m; print(m.version('pipecat-ai'))"
    versions = subprocess.run(
        [str(pipecat_python), "-c", show],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    body = (
        f"Pipecat {versions} in .venv-bench, pipeflow from this tree; each measurement is a "
        f"child process pinned to one core, the two frameworks alternating, {rounds} round(s), "
        "medians. Frames are 20 ms of 16 kHz PCM16 (pipeflow `AudioFrame`, Pipecat "
        f"`InputAudioRawFrame`, what an input transport emits). Latency: one session paced in "
        f"real time ({paced_frames} frames), source to sink. Flood: {flood_frames} frames "
        "pushed as fast as taken.\n\n"
        f"{table}\n\n{slope_text}\n\nSessions per core, measured exactly as in the scale "
        f"section: {bench_scale.method_text()} Pipecat's live entry is `queue_frame` on its "
        "pipeline worker, fed by the same pacer. Pipecat is measured only fed like a live "
        "call: it has no native-source row (the native row is pipeflow's own).\n\n"
        f"{scale_table}\n\n{bench_scale.pass_rule_text()}\n\n{ratio_text}\n"
        "Goal: 5 pass-through stages fed like a live call "
        "hold at least 10x Pipecat's lean configuration."
    )
    command = "python -m benchmarks.bench_pipecat" + (" --quick" if args.quick else "")
    data = {"latency_flood": data_rows, "flood_slope_us": slopes, "scale": limits,
            "cpu_at_common_n": cpu_at_n,
            "pipecat_version": versions}
    write_section("pipecat", "Side by side with Pipecat", body, command, data)
    print(table)
    print(scale_table)


if __name__ == "__main__":
    main()
