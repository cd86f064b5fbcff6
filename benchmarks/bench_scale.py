"""Sessions per core: how many real-time sessions one process sustains, chain by chain.

Every chain is measured the same way, in a fresh child process pinned to one
core (``os.sched_setaffinity``) per step:

- feeding: each chain runs twice, fed like a live call (a pacer task per
  session, one ``asyncio.sleep`` per 20 ms frame, pushing into the chain's
  live entry: pipeflow's ``PushSource``, the gateway's and the session API's
  way in) and fed by its own best native source (pipeflow's ``wav`` source on
  the shared pacing clock; the hand-written chain's one sleep per session),
  each labelled;
- time line: sessions arrive spread over ``RAMP_S``, then ``WARMUP_S`` of
  warm-up, then ``MEASURE_S`` of steady state in which every session runs.
  Frames due in the steady window decide the step (p99 lateness under 20 ms,
  no frame missing); frames due before it are start-up, reported on their own;
- CPU per frame and RSS per session are taken over the steady window only;
- search: N doubles from 10 until a step fails, then bisects until the gap
  between the last pass and the first failure is within 10% of the pass. A
  failed step is tried once more (it passes if either try does), the same for
  every chain; a search that reaches its top step or its time budget reports
  ">= N (cap)", never a limit.

Chains (``SCENARIOS``): the audio chain wav -> resample 16->24 kHz HQ ->
vad(energy) -> null fed both ways, the same audio work as hand-written async
generators (soxr + the same energy VAD) fed both ways, and 5 pass-through
stages fed both ways (the chain the Pipecat side by side runs). The floor is
the audio work alone in a plain loop (no event loop, no pacing, no frames) at
a chain's session count: 20 ms over its CPU per frame is what no runtime can
beat, and each chain's limit is reported as a share of it.

    python -m benchmarks.bench_scale [--quick] [--only audio,audio-push,bare,bare-push]
    python -m benchmarks.bench_scale --compare   # every goal in one run, under 10 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import markdown_table, results_dir, write_section
from pipeflow import Pipeline
from pipeflow.audio.clock import get_clock
from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.frames import AudioFrame
from pipeflow.stage import Frames, Stage
from pipeflow.stages.basic import PassThrough
from pipeflow.stages.resample import Resample
from pipeflow.stages.sinks import NullSink
from pipeflow.stages.sources import PushSource, WavSource
from pipeflow.stages.vad import Vad

FRAME_S = 0.020
RATE = 16000
OUT_RATE = 24000
LATENESS_LIMIT_MS = 20.0
RAMP_S = 1.0
WARMUP_S = 2.0
MEASURE_S = 3.0
PRECISION = 0.10  # a limit is refined until the first failure is within 10% of it
TOP = 10240  # the largest N tried: passing it is a cap, not a limit
GUESS_SHARE = 0.7  # --compare: first guess at a limit, this share of 20 ms over CPU per frame
SCENARIOS = (
    "audio", "audio-push", "bare", "bare-push", "passthrough", "passthrough-push", "audio+uvloop",
)
DEFAULT = ("audio", "audio-push", "bare", "bare-push")  # the passthrough pair: bench_pipecat
TITLES = {
    "audio": "pipeflow wav -> resample 16k->24k HQ -> vad(energy) -> null; native source "
             "(wav, shared pacing clock)",
    "audio-push": "the same pipeflow chain fed like a live call (pacer per session -> "
                  "PushSource)",
    "audio+uvloop": "pipeflow wav -> resample -> vad(energy) -> null, native source, on uvloop",
    "bare": "hand-written async generators (soxr + the same energy VAD); native: one sleep "
            "per session",
    "bare-push": "the same hand-written chain fed like a live call (pacer per session -> "
                 "asyncio.Queue)",
    "passthrough": "pipeflow, 5 pass-through stages; native source (shared pacing clock)",
    "passthrough-push": "pipeflow, 5 pass-through stages fed like a live call (pacer per "
                        "session -> PushSource)",
}
AUDIO_CHAINS = ("audio", "audio-push", "audio+uvloop", "bare", "bare-push")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def session_frames() -> int:
    """Frames each session plays: through the ramp, the warm-up and the steady window."""
    return round((RAMP_S + WARMUP_S + MEASURE_S) / FRAME_S)


class Record:
    """One session's measurements: each output frame's due time and lateness.

    ``missing`` is set by the session when it ends: source frames that never
    entered the chain plus frames that entered and never left it.
    """

    __slots__ = ("due", "late", "missing", "n")

    def __init__(self, due: np.ndarray, late: np.ndarray) -> None:
        self.due, self.late = due, late
        self.n = 0
        self.missing = -1  # not finished

    def add(self, due: float, now: float) -> None:
        n = self.n
        if n < self.due.size:
            self.due[n] = due
            self.late[n] = now - due
        self.n = n + 1


# --- stages only the benchmark needs ----------------------------------------------


class Meter:
    """Per-session lateness bookkeeping shared by the Stamp and Probe stages.

    ``Stamp`` (right after the source) notes when the source frame in flight
    was due (``start + pts``); ``Probe`` (last) records every audio frame
    leaving the chain against that due time. The chain is synchronous
    generators, so what a source frame causes leaves the chain in the same
    step: the hand-written chain is measured the same way, with the same two
    instruments inline.
    """

    __slots__ = ("due", "record", "source", "stamped", "start")

    def __init__(self, record: Record, source: Any = None) -> None:
        self.record = record
        self.source = source  # a WavSource, whose started_at is the schedule's origin
        self.start = math.nan  # or set by the pacer that feeds a PushSource
        self.due = 0.0
        self.stamped = 0


class Stamp(Stage):
    """Notes the due time of each source frame."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    async def process(self, frames: Frames) -> Frames:
        meter = self.meter
        async for frame in frames:
            if type(frame) is AudioFrame:
                if meter.source is not None:
                    meter.start = meter.source.started_at
                meter.due = meter.start + frame.pts
                meter.stamped += 1
            yield frame


class Probe(Stage):
    """Last stage: records how late each audio frame leaves the chain."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    async def process(self, frames: Frames) -> Frames:
        meter, add, now = self.meter, self.meter.record.add, get_clock().now
        async for frame in frames:
            if type(frame) is AudioFrame:
                add(meter.due, now())
            yield frame


# --- feeding ------------------------------------------------------------------------


async def pacer(
    chunks: list[bytes], push: Callable[[bytes], None], end: Callable[[], None],
    started: Callable[[float], None],
) -> None:
    """A live call's audio arriving: one chunk every 20 ms, one ``asyncio.sleep`` each.

    The same pacer feeds every chain's live entry (and Pipecat's), so the
    feeding costs them all alike; ``started`` gets the schedule's origin.
    """
    loop = asyncio.get_running_loop()
    begin = loop.time()
    started(begin)
    for i, pcm in enumerate(chunks):
        delay = begin + i * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        push(pcm)
    end()


# --- the sessions ---------------------------------------------------------------------


async def pacer_session(chunks: list[bytes], record: Record) -> None:
    """The pacer alone, pushing into nothing: what the feeding itself costs per frame."""
    count = [0]

    def push(_pcm: bytes) -> None:
        count[0] += 1

    await pacer(chunks, push, lambda: None, lambda _t: None)
    record.missing = session_frames() - count[0]


async def audio_session(wav: Path, chunks: list[bytes] | None, record: Record) -> None:
    """The pipeflow audio chain: native wav source, or (``chunks``) a pacer and PushSource."""
    if chunks is None:
        source: Stage = WavSource(path=str(wav))
        meter = Meter(record, source)
    else:
        source = PushSource(sample_rate=RATE)
        meter = Meter(record)
    stages = [
        source, Stamp(meter), Resample(rate=OUT_RATE), Vad(engine="energy"),
        NullSink(realtime=False), Probe(meter),
    ]
    feeding = None
    if chunks is not None:
        assert isinstance(source, PushSource)
        feeding = asyncio.ensure_future(pacer(
            chunks, source.push_audio, source.end, lambda t: setattr(meter, "start", t)
        ))
    await Pipeline(stages).run()
    if feeding is not None:
        await feeding
    record.missing = session_frames() - meter.stamped


async def passthrough_session(chunks: list[bytes] | None, record: Record) -> None:
    """Five PassThrough stages: native shared-clock source, or a pacer and PushSource.

    The very session the Pipecat side by side runs; each frame's lateness is
    taken where it leaves the last stage.
    """
    frames = session_frames()
    clock = get_clock()
    start = [math.nan]
    passes = [PassThrough() for _ in range(5)]
    if chunks is None:
        pcm = bytes(640)

        async def native() -> AsyncIterator[AudioFrame]:
            begin = start[0] = clock.now()
            for i in range(frames):
                await clock.sleep_until(begin + i * FRAME_S)
                yield AudioFrame(pcm=pcm, sample_rate=RATE, pts=i * FRAME_S)

        stream = Pipeline(passes).stream(native())
        feeding = None
    else:
        push = PushSource(sample_rate=RATE)
        stream = Pipeline([push, *passes]).stream()
        feeding = asyncio.ensure_future(
            pacer(chunks, push.push_audio, push.end, lambda t: start.__setitem__(0, t))
        )
    add = record.add
    async for frame in stream:
        if type(frame) is AudioFrame:
            add(start[0] + frame.pts, clock.now())
    if feeding is not None:
        await feeding
    record.missing = frames - record.n


async def _bare_resample(chunks: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    import soxr

    stream = soxr.ResampleStream(RATE, OUT_RATE, 1, dtype="int16", quality="HQ")
    async for samples in chunks:
        out = stream.resample_chunk(samples)
        if out.size:
            yield out


async def _bare_vad(chunks: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    segmenter = Segmenter(VadOptions(), OUT_RATE)
    pts = 0.0
    async for samples in chunks:
        segmenter.feed(samples.tobytes(), pts)
        pts += samples.size / OUT_RATE
        yield samples


async def bare_session(
    audio: np.ndarray, chunks: list[bytes] | None, record: Record
) -> None:
    """The audio work as plain async generators: one sleep per session, or (``chunks``)
    fed by the same pacer through an ``asyncio.Queue``."""
    loop = asyncio.get_running_loop()
    frames = session_frames()
    size = int(RATE * FRAME_S)
    meter = [math.nan, 0.0, 0]  # schedule origin, due of the frame in flight, frames in
    feeding = None

    async def native() -> AsyncIterator[np.ndarray]:
        begin = meter[0] = loop.time()
        for i in range(frames):
            due = begin + i * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            meter[1] = due
            meter[2] += 1
            yield audio[i * size : (i + 1) * size]

    async def queued(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[np.ndarray]:
        index = 0
        while (pcm := await queue.get()) is not None:
            meter[1] = meter[0] + index * FRAME_S
            meter[2] += 1
            index += 1
            yield np.frombuffer(pcm, "<i2")

    if chunks is None:
        source = native()
    else:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        feeding = asyncio.ensure_future(pacer(
            chunks, queue.put_nowait, lambda: queue.put_nowait(None),
            lambda t: meter.__setitem__(0, t),
        ))
        source = queued(queue)
    add = record.add
    async for _samples in _bare_vad(_bare_resample(source)):
        add(meter[1], loop.time())
    if feeding is not None:
        await feeding
    record.missing = frames - int(meter[2])


# --- the CPU floor of the audio work -------------------------------------------------


def audio_floor(sessions: int, seconds: float, wav: Path) -> dict[str, Any]:
    """CPU per frame of the audio work alone: ``sessions`` soxr streams and VAD segmenters
    fed round-robin in a plain loop, no event loop, no pacing, no frames.

    What one core can hold at best with this many sessions is 20 ms over this
    figure, whatever the runtime (it grows with the session count: the
    streams' state stops fitting in the caches).
    """
    from pipeflow.audio.resampler import StreamResampler
    from pipeflow.audio.wav import read_wav

    audio = np.asarray(read_wav(wav).samples)
    size = int(RATE * FRAME_S)
    chunks = [audio[i : i + size] for i in range(0, audio.size - size + 1, size)]
    chunks = chunks[: max(1, round(seconds / FRAME_S))]
    resamplers = [StreamResampler(RATE, OUT_RATE, "HQ") for _ in range(sessions)]
    segmenters = [Segmenter(VadOptions(), OUT_RATE) for _ in range(sessions)]
    pairs = list(zip(resamplers, segmenters, strict=True))
    cpu0 = time.process_time()
    for index, chunk in enumerate(chunks):
        pts = index * FRAME_S
        for resampler, segmenter in pairs:
            out = resampler.process(chunk)
            if out.size:
                segmenter.feed(out.tobytes(), pts)
    cpu = time.process_time() - cpu0
    per_frame = cpu / (sessions * len(chunks)) * 1e6
    return {
        "scenario": "floor", "sessions": sessions, "cpu_us_per_frame": per_frame,
        "ceiling": int(FRAME_S * 1e6 / per_frame),
    }


# --- one step, in the child process --------------------------------------------------


def _speech_wav(directory: Path, seconds: float) -> Path:
    """A WAV of espeak-ng speech with pauses, exactly ``seconds`` long, at 16 kHz."""
    from pipeflow.audio.tts import synthesize
    from pipeflow.audio.wav import write_wav

    speech = synthesize("I would like two large pizzas and a salad, please.", RATE)
    pause = np.zeros(int(0.6 * RATE), dtype=np.int16)
    unit = np.concatenate((speech, pause))
    total = round(seconds / FRAME_S) * int(RATE * FRAME_S)
    path = directory / "speech16k.wav"
    write_wav(path, np.tile(unit, total // unit.size + 1)[:total], RATE)
    return path


def session_factory(scenario: str, wav: Path) -> Callable[[Record], Coroutine[Any, Any, None]]:
    """What one session of ``scenario`` runs, given its Record."""
    from pipeflow.audio.wav import read_wav

    chain, _, feeding = scenario.partition("-")
    if chain == "pacer":
        silence = [bytes(640)] * session_frames()
        return lambda record: pacer_session(silence, record)
    if chain == "passthrough":
        silent = [bytes(640)] * session_frames() if feeding == "push" else None
        return lambda record: passthrough_session(silent, record)
    audio = np.asarray(read_wav(wav).samples)
    size = int(RATE * FRAME_S)
    # A live call's packets: made once, shared by every session (as network buffers are).
    chunks = [audio[i : i + size].tobytes() for i in range(0, audio.size - size + 1, size)]
    pushed = chunks[: session_frames()] if feeding == "push" else None
    if chain == "bare":
        return lambda record: bare_session(audio, pushed, record)
    return lambda record: audio_session(wav, pushed, record)


def _percentiles(values: np.ndarray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{name}": float(np.percentile(values, q)) if values.size else float("nan")
        for name, q in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100))
    }


async def measure(
    n: int, session: Callable[[Record], Coroutine[Any, Any, None]],
    warm_up: Callable[[], Coroutine[Any, Any, None]],
) -> dict[str, Any]:
    """Run ``n`` sessions arriving over the ramp; measure the steady window and start-up.

    The harness every chain shares (Pipecat's too): the same arrival, warm-up,
    window, percentiles, CPU and memory accounting.
    """
    frames = session_frames()
    due = np.full((n, frames), np.nan)  # touched now, so it is not counted per session
    late = np.full((n, frames), np.nan)
    records = [Record(due[i], late[i]) for i in range(n)]
    await warm_up()
    gc.collect()
    rss0 = rss_bytes()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks: list[asyncio.Task[Any]] = []
    for i in range(n):
        delay = t0 + RAMP_S * i / n - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(session(records[i])))
    window = (t0 + RAMP_S + WARMUP_S, t0 + RAMP_S + WARMUP_S + MEASURE_S)
    await asyncio.sleep(max(0.0, window[0] - loop.time()))
    rss_running = rss_bytes()
    cpu0, wall0 = time.process_time(), loop.time()
    await asyncio.sleep(max(0.0, window[1] - loop.time()))
    cpu, wall = time.process_time() - cpu0, loop.time() - wall0
    _done, pending = await asyncio.wait(tasks, timeout=max(0.1, window[1] + 2.0 - loop.time()))
    for task in pending:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)
              and not isinstance(o, asyncio.CancelledError)]
    seen = ~np.isnan(due)
    steady = seen & (due >= window[0]) & (due < window[1])
    start_up = seen & (due < window[0])
    return {
        "sessions": n,
        "frames": int(steady.sum()),
        "missing": int(sum(max(0, r.missing) for r in records)),
        **_percentiles(late[steady] * 1000, ""),
        **_percentiles(late[start_up] * 1000, "startup_"),
        "rss_per_session_kib": (rss_running - rss0) / n / 1024,
        "unfinished": len(pending) + sum(1 for r in records if r.missing < 0),
        "errors": errors[:1],
        # CPU over the steady window, per frame due in it.
        "cpu_us_per_frame": cpu / (n * max(wall, 1e-9) / FRAME_S) * 1e6,
    }


async def _warm_up(scenario: str, wav: Path) -> None:
    """A short session of each part first, so lazy imports and caches are not counted per
    session."""
    if scenario.startswith(("audio", "bare")):
        await Pipeline([
            WavSource(path=str(wav), speed=0), Resample(rate=OUT_RATE), Vad(engine="energy"),
            NullSink(realtime=False),
        ]).run()
    push = PushSource(sample_rate=RATE)
    for _ in range(3):
        push.push_audio(bytes(640))
    push.end()
    await Pipeline([push, *(PassThrough() for _ in range(5))]).run()
    if scenario.startswith("bare"):
        import soxr

        soxr.ResampleStream(RATE, OUT_RATE, 1, dtype="int16", quality="HQ").resample_chunk(
            np.zeros(320, np.int16))


async def run_step(scenario: str, n: int, wav: Path) -> dict[str, Any]:
    """Run ``n`` sessions of ``scenario`` (in this process); measure them."""
    chain = scenario.partition("+")[0]
    result = await measure(n, session_factory(chain, wav), lambda: _warm_up(chain, wav))
    result["scenario"] = scenario
    return result


def child(args: argparse.Namespace) -> None:
    """Entry of one step: pin to one core, run, print a JSON line."""
    global RAMP_S, WARMUP_S, MEASURE_S
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.core if args.core in cpus else cpus[-1]})
    RAMP_S, WARMUP_S, MEASURE_S = args.timing
    if args.scenario == "floor":
        print(json.dumps(audio_floor(args.sessions, MEASURE_S, Path(args.wav))))
        return
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    result = asyncio.run(run_step(args.scenario, args.sessions, Path(args.wav)))
    result["loop"] = args.loop
    print(json.dumps(result))


# --- the parent: step N up to the limit ------------------------------------------------


def uvloop_python() -> str | None:
    """An interpreter with uvloop: this one, else the bench venv's (``.venv-bench``)."""
    if importlib.util.find_spec("uvloop") is not None:
        return sys.executable
    bench = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"
    if bench.exists():
        done = subprocess.run([str(bench), "-c", "import uvloop"], capture_output=True,
                              check=False)
        if done.returncode == 0:
            return str(bench)
    return None


def timing_args() -> list[str]:
    """The time line, passed to every child so they all run the same one."""
    return ["--timing", str(RAMP_S), str(WARMUP_S), str(MEASURE_S)]


def _child(scenario: str, n: int, wav: Path, core: int) -> dict[str, Any] | str:
    """Run ``scenario`` with ``n`` sessions in a fresh pinned child: its JSON, or an error."""
    chain, _, loop = scenario.partition("+")
    python = (uvloop_python() if loop == "uvloop" else sys.executable) or sys.executable
    command = [
        python, "-m", "benchmarks.bench_scale", "--child", chain,
        "--sessions", str(n), "--wav", str(wav), "--loop", loop or "asyncio",
        "--core", str(core), *timing_args(),
    ]
    budget = RAMP_S + WARMUP_S + MEASURE_S + 60 + n / 50
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget, check=False)
    except subprocess.TimeoutExpired:
        return "timed out"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines()[-1:] or ["no output"])[0]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def passes(result: dict[str, Any]) -> bool:
    """The verdict of a step, the same for every chain."""
    return (
        "error" not in result and not result.get("errors")
        and result.get("p99_ms", math.inf) < LATENESS_LIMIT_MS
        and result.get("missing") == 0 and result.get("unfinished") == 0
    )


def step(scenario: str, n: int, wav: Path, core: int) -> dict[str, Any]:
    """Run one step in a fresh pinned child process."""
    result = _child(scenario, n, wav, core)
    if isinstance(result, str):
        return {"scenario": scenario, "sessions": n, "ok": False, "error": result}
    result["scenario"] = scenario
    result["ok"] = passes(result)
    return result


class Plan:
    """The N to try next for one chain: doubling until a failure, then bisecting until the
    first failure is within ``precision`` of the last pass.

    Args:
        start: the first N.
        growth: factor between steps while every step passes.
        precision: stop once ``bad - good <= precision * good``.
        top: the largest N tried; passing it ends the search as a cap.
    """

    def __init__(self, start: int = 10, growth: float = 2.0, precision: float = PRECISION,
                 top: int = TOP, guess: bool = False) -> None:
        self.good, self.bad = 0, 0
        self.growth, self.precision, self.top = growth, precision, top
        self.next: int | None = start
        self.capped = False
        self.guess = guess  # jump from the first step to the N its CPU per frame predicts

    def record(self, n: int, ok: bool, cpu_us: float | None = None) -> None:
        """Take the verdict of the step at ``n`` and choose the next N (or none).

        With ``guess``, until the first failure each passing step's CPU per frame
        (``cpu_us``) names the next N: ``GUESS_SHARE`` of 20 ms over it, at least
        ``growth`` times N; then the search bisects as usual (geometrically while the
        gap is over 2x).
        """
        if ok:
            self.good = max(self.good, n)
        else:
            self.bad = n if not self.bad else min(self.bad, n)
        if self.guess and ok and not self.bad and cpu_us and cpu_us > 0 and n < self.top:
            # Each passing step, until the first failure, names the next N by its CPU per
            # frame (at least ``growth`` times this one, at most 4x: small N overstate it).
            estimate = round(GUESS_SHARE * FRAME_S * 1e6 / cpu_us)
            self.next = min(self.top, 4 * n, max(round(n * self.growth), n + 1, estimate))
            return
        if not self.bad:
            if n >= self.top:
                self.next, self.capped = None, True
                return
            self.next = min(self.top, max(n + 1, round(n * self.growth)))
            return
        if self.bad - self.good <= max(1, math.floor(self.precision * self.good)):
            self.next = None
            return
        if self.growth < 2.0 and self.good and self.bad > 2 * self.good:
            self.next = round(math.sqrt(self.good * self.bad))  # a guess far off: halve the ratio
            return
        self.next = (self.good + self.bad) // 2

    @property
    def refined(self) -> bool:
        """Whether the search ended at a limit within the precision (not at a cap)."""
        return self.next is None and not self.capped and self.bad > 0


def limit_text(limit: dict[str, Any]) -> str:
    """A limit as results.md shows it: a cap is ">= N (cap)", never a plain number."""
    if limit.get("refined"):
        return f"{limit['sessions']:,}"
    why = "top step" if limit.get("capped") else "time budget"
    return f">= {limit['sessions']:,} (cap: {why})"


def search_all(
    step_fns: dict[str, Callable[[int], dict[str, Any]]], budget_s: float, start: int = 10,
    growth: float = 2.0, precision: float = PRECISION, top: int = TOP, retries: int = 1,
    log: Callable[[str], None] = print, guess: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The limit of every chain (``step_fn(n)["ok"]``), chains interleaved.

    Each round runs the next step of every chain still searching, so they all
    see the machine in the same state; a failing step is run again up to
    ``retries`` times (another process may have taken the core for a moment)
    and passes if any try does: the same for every chain, and a retry is
    never cut short by the budget. No new step starts after ``budget_s``; a
    chain still searching then is reported as a cap.

    Returns:
        Per chain: ``sessions`` (the largest passing N), ``refined`` (ended
        within the precision), ``capped`` (passed the top step); and every
        step run, in order.
    """
    plans = {name: Plan(start, growth, precision, top, guess) for name in step_fns}
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in step_fns}
    began = time.monotonic()
    while time.monotonic() - began < budget_s:
        active = [name for name, plan in plans.items() if plan.next is not None]
        if not active:
            break
        for name in active:
            n = plans[name].next
            assert n is not None
            for attempt in range(retries + 1):
                load = os.getloadavg()[0]
                result = step_fns[name](n)
                result["attempt"] = attempt + 1
                result["load1"] = load
                steps[name].append(result)
                log(
                    f"  {name:<26} N={n:<5} p99 {result.get('p99_ms', float('nan')):8.2f} ms"
                    f"  start-up p99 {result.get('startup_p99_ms', float('nan')):8.2f} ms"
                    f"  missing {result.get('missing', '-')}  CPU "
                    f"{result.get('cpu_us_per_frame', float('nan')):6.1f} µs/frame  "
                    f"{'ok' if result['ok'] else 'FAIL ' + str(result.get('error', ''))}"
                )
                if result["ok"]:
                    break
            plans[name].record(n, bool(result["ok"]), result.get("cpu_us_per_frame"))
    limits = {
        name: {"sessions": plan.good, "refined": plan.refined, "capped": plan.capped,
               "first_failure": plan.bad or None}
        for name, plan in plans.items()
    }
    return limits, steps


def search(
    step_fn: Callable[[int], dict[str, Any]], budget_s: float, start: int = 10,
    growth: float = 2.0, precision: float = PRECISION, top: int = TOP, label: str = "",
    retries: int = 0, log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``search_all`` for one chain: its limit and its steps."""
    limits, steps = search_all(
        {label: step_fn}, budget_s, start, growth, precision, top, retries, log
    )
    return limits[label], steps[label]


def at_limit(steps: list[dict[str, Any]], limit: dict[str, Any]) -> dict[str, Any]:
    """The passing step at the limit (the last try that passed there)."""
    passing = [s for s in steps if s["ok"] and s["sessions"] == limit["sessions"]]
    return passing[-1] if passing else {}


def plot(steps: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Steady-state p99 lateness and RSS per session against N, one line per chain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for scenario, rows in steps.items():
        best: dict[int, dict[str, Any]] = {}  # the better try at each N
        for r in rows:
            if "p99_ms" in r and (r["sessions"] not in best
                                  or r["p99_ms"] < best[r["sessions"]]["p99_ms"]):
                best[r["sessions"]] = r
        rows = [best[n] for n in sorted(best)]
        xs = [r["sessions"] for r in rows]
        top.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=scenario)
        bottom.plot(xs, [r["rss_per_session_kib"] for r in rows], marker="o")
    top.axhline(LATENESS_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    top.set_ylabel("steady-state p99 frame lateness (ms)")
    top.set_yscale("log")
    top.legend(fontsize=7)
    bottom.set_ylabel("RSS per session (KiB)")
    bottom.set_xlabel("concurrent real-time sessions on one core")
    for axis in (top, bottom):
        axis.set_xscale("log")
        axis.grid(True, alpha=0.3)
    fig.suptitle("pipeflow: real-time sessions on one core", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pass_rule_text() -> str:
    """The step pass rule, printed next to every limit table so no table is read without it."""
    return (
        f"Pass rule for these limits: a step passes when the steady window's p99 lateness is "
        f"under {LATENESS_LIMIT_MS:g} ms and no frame is missing; a failed step is tried once "
        "more and passes if either of the two tries does, the same for every chain."
    )


def method_text() -> str:
    """How every chain is measured (shared with the Pipecat section)."""
    return (
        f"One process pinned to one core per step. Sessions arrive over {RAMP_S:g} s, then "
        f"{WARMUP_S:g} s of warm-up, then a {MEASURE_S:g} s steady window in which every "
        "session runs. A step passes when the p99 lateness of the frames due in the steady "
        f"window (each against its session's own schedule) is under {LATENESS_LIMIT_MS:g} ms "
        "and no frame is missing; start-up (the frames due before the window) is reported on "
        "its own. CPU per frame is the process's CPU time over the steady window per frame "
        "due in it; RSS per session is the growth of /proc/self/statm by the window's start, "
        f"divided by N. N doubles from 10 until a step fails, then bisects until the first "
        f"failure is within {PRECISION:.0%} of the limit; the chains take turns at each step "
        "so they see the shared machine in the same state, and a failed step is tried once "
        "more (it passes if either try does), the same for every chain. A search that passes "
        f"its top step ({TOP:,}) or runs out of time is shown as \">= N (cap)\". Fed like a "
        "live call: one pacer task per session sleeps until each 20 ms frame is due "
        "(`asyncio.sleep`) and pushes it into the chain's live entry; native: the chain's "
        "own best source."
    )


def load_text(steps: dict[str, list[dict[str, Any]]]) -> str:
    """The machine's load while the steps ran: a busy machine moves the p99 limits most."""
    loads = sorted(s["load1"] for rows in steps.values() for s in rows if "load1" in s)
    if not loads:
        return ""
    return (
        f"Load during this search: the 1-minute load average read before each step was "
        f"{loads[0]:.1f} at least, {loads[len(loads) // 2]:.1f} at the median and "
        f"{loads[-1]:.1f} at most, on {os.cpu_count()} cores (the step's own process adds up "
        "to 1). Other work on the measured core lengthens wake-ups and evicts the sessions' "
        "state from the caches between ticks, so the limits and the CPU per frame here are "
        "a floor for a quiet machine, and ratios of CPU per frame taken at the same N move "
        "less than ratios of limits."
    )


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b.get("sessions"):
        return None
    return a["sessions"] / b["sessions"]


def _common_n(steps: dict[str, list[dict[str, Any]]], a: str, b: str) -> int:
    """The largest N both chains passed (0 if none)."""
    if a not in steps or b not in steps:
        return 0
    both = {s["sessions"] for s in steps[a] if s["ok"]} & {
        s["sessions"] for s in steps[b] if s["ok"]}
    return max(both, default=0)


def _common_n_all(steps: dict[str, list[dict[str, Any]]]) -> int:
    """The largest N every chain passed (0 if none)."""
    sets = [{s["sessions"] for s in rows if s["ok"]} for rows in steps.values()]
    return max(set.intersection(*sets), default=0) if sets else 0


def goals(limits: dict[str, dict[str, Any]], steps: dict[str, list[dict[str, Any]]],
          floors: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The audio goals, each a ratio of figures from this run."""
    out: dict[str, Any] = {}
    hand = [limits[c] for c in ("bare", "bare-push") if c in limits]
    best_hand = max(hand, key=lambda lim: lim["sessions"]) if hand else None
    live = limits.get("audio-push")
    ratio = _ratio(live, best_hand)
    if ratio is not None:
        out["live_vs_hand"] = {"ratio": ratio, "goal": 1.25, "met": ratio >= 1.25,
                               "capped": bool(not live["refined"] or not best_hand["refined"])}
    for chain in ("audio", "audio-push"):
        lim = limits.get(chain)
        floor = floors.get(lim["sessions"]) if lim else None
        if lim and floor:
            share = lim["sessions"] / floor["ceiling"]
            out[f"{chain}_floor_share"] = {"share": share, "floor": floor["ceiling"],
                                           "at": lim["sessions"]}
    if "audio_floor_share" in out:
        out["audio_floor_share"].update(goal=0.75, met=out["audio_floor_share"]["share"] >= 0.75)
    kib = [at_limit(steps[c], limits[c]).get("rss_per_session_kib")
           for c in ("audio", "audio-push") if c in limits]
    kib = [k for k in kib if k is not None]
    if kib:
        out["kib_per_session"] = {"kib": max(kib), "goal": 100, "met": max(kib) < 100}
    # The live entry's cost per frame against the file source's, at the largest N both passed.
    n = _common_n(steps, "audio", "audio-push")
    if n:
        file_cpu = min(s["cpu_us_per_frame"] for s in steps["audio"]
                       if s["ok"] and s["sessions"] == n)
        push_cpu = min(s["cpu_us_per_frame"] for s in steps["audio-push"]
                       if s["ok"] and s["sessions"] == n)
        out["push_vs_file_cpu"] = {"at": n, "file_us": file_cpu, "push_us": push_cpu,
                                   "ratio": push_cpu / file_cpu, "met": push_cpu <= file_cpu}
    return out


COMPARE = ("audio", "audio-push", "bare", "bare-push", "passthrough-push")
COMPARE_BUDGET_S = 360.0  # no round of steps starts later: the run stays under 10 minutes
PIPECAT_LEAN = "pipecat-lean"


def compare(quick: bool, budget: float, core: int) -> dict[str, Any]:
    """Every goal of the scale section from ONE interleaved search, in under 10 minutes.

    The audio chains both ways, the hand-written chain both ways, 5 pass-through stages fed
    like a live call and Pipecat lean fed the same way (when its bench venv can be made)
    take turns at each step. Each search starts at 50 sessions and, until a step fails, goes
    to the N the last step's CPU per frame predicts (at least 25% more), then bisects to
    10%, with the pass rule and the retry of the full search; a chain still searching at
    the budget is a cap.
    """
    from benchmarks import bench_pipecat

    fns: dict[str, Callable[[int], dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = _speech_wav(Path(tmp), RAMP_S + WARMUP_S + MEASURE_S)
        for scenario in COMPARE:
            fns[scenario] = lambda n, s=scenario: step(s, n, wav, core)
        try:
            pipecat = bench_pipecat.bench_python()
            fns[PIPECAT_LEAN] = lambda n: bench_pipecat.scale_step(pipecat, n, True, core)
        except RuntimeError as exc:
            print(f"Pipecat lean skipped: {exc}", flush=True)
        for name in fns:
            print(f"{name}: {TITLES.get(name, bench_pipecat.LEAN)}", flush=True)
        began = time.monotonic()
        limits, steps = search_all(
            fns, budget, start=20 if quick else 50, growth=1.25,
            precision=0.5 if quick else PRECISION, retries=0 if quick else 1, guess=True,
        )
        floors: dict[int, dict[str, Any]] = {}
        for chain in ("audio", "audio-push"):
            n = limits[chain]["sessions"]
            if n and n not in floors:
                floor = _child("floor", n, wav, core)
                if isinstance(floor, dict):
                    floors[n] = floor
        took = time.monotonic() - began
    found = goals(limits, steps, floors)
    if "audio_floor_share" in found:
        found["audio_floor_share"]["capped"] = not limits["audio"]["refined"]
    lean = limits.get(PIPECAT_LEAN)
    ratio = _ratio(limits["passthrough-push"], lean)
    if ratio is not None:
        found["passthrough_vs_pipecat_lean"] = {
            "ratio": ratio, "goal": 10.0, "met": ratio >= 10.0,
            "capped": bool(not lean["refined"] or not limits["passthrough-push"]["refined"])}
    rows = []
    for name in fns:
        best = at_limit(steps[name], limits[name])
        floor = floors.get(limits[name]["sessions"]) if name in ("audio", "audio-push") else None
        rows.append([TITLES.get(name, bench_pipecat.LEAN), limit_text(limits[name]),
                     best.get("p99_ms", "-"), best.get("cpu_us_per_frame", "-"),
                     best.get("rss_per_session_kib", "-"),
                     f"{limits[name]['sessions'] / floor['ceiling']:.0%} of {floor['ceiling']:,}"
                     if floor else "-"])
    table = markdown_table(
        ["chain", "sessions per core", "steady p99 at the limit (ms)", "CPU per frame (µs)",
         "RSS per session (KiB)", "share of the floor"], rows)
    verdicts = []
    for key, text, value in (
        ("live_vs_hand", "live-call audio chain vs the hand-written chain (best feeding)",
         lambda g: f"{g['ratio']:.2f}x, goal 1.25x"),
        ("audio_floor_share", "file-fed audio chain vs the floor",
         lambda g: f"{g['share']:.0%} of {g['floor']:,}, goal 75%"),
        ("passthrough_vs_pipecat_lean", "5 pass-through stages fed like a live call vs "
         "Pipecat lean", lambda g: f"{g['ratio']:.1f}x, goal 10x"),
        ("kib_per_session", "memory per session on the audio chain",
         lambda g: f"{g['kib']:.0f} KiB, goal under 100 KiB"),
    ):
        if key in found:
            g = found[key]
            cap = " (a cap is involved: a bound, not a ratio of limits)" if g.get("capped") else ""
            verdicts.append(f"- {text}: **{value(g)}**: "
                            f"{'met' if g.get('met') else 'NOT met'}{cap}")
        else:
            verdicts.append(f"- {text}: not measured in this run")
    body = (
        f"{method_text()} Here every search starts at {20 if quick else 50} sessions and, "
        f"until a step fails, goes to {GUESS_SHARE:.0%} of 20 ms over the last step's CPU per "
        "frame (at least 25% more, at most 4x), then bisects; the floor is taken at the audio "
        "chains' limits. The whole run took "
        f"{took / 60:.1f} min.\n\n{table}\n\n{pass_rule_text()} {load_text(steps)}\n\n"
        + "\n".join(verdicts)
    )
    command = "python -m benchmarks.bench_scale --compare" + (" --quick" if quick else "")
    write_section("compare", "The issue's goals, measured side by side in one run", body,
                  command, {"limits": limits, "steps": steps, "goals": found,
                            "floors": {str(k): v for k, v in floors.items()},
                            "seconds": took})
    print(table)
    print("\n".join(verdicts))
    print(f"took {took / 60:.1f} min")
    return found


def main() -> None:
    global RAMP_S, WARMUP_S, MEASURE_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", default="", help=f"chains among {', '.join(SCENARIOS)}")
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=0, help="seconds for the search")
    parser.add_argument("--compare", action="store_true",
                        help="every goal from one interleaved search, Pipecat lean included, "
                             "in under 10 minutes")
    parser.add_argument("--child", choices=("passthrough", "audio", "bare", "floor", "pacer",
                                            "passthrough-push", "audio-push", "bare-push"),
                        dest="scenario", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--timing", type=float, nargs=3, default=(RAMP_S, WARMUP_S, MEASURE_S),
                        help=argparse.SUPPRESS)
    parser.add_argument("--wav", default="", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        child(args)
        return
    scenarios = [s for s in args.only.split(",") if s] or list(DEFAULT)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown chain(s) {sorted(unknown)}; choose from {SCENARIOS}")
    if args.quick:
        RAMP_S, WARMUP_S, MEASURE_S = 0.5, 0.5, 1.0
    core = sorted(os.sched_getaffinity(0))[-1]
    if args.compare:
        compare(args.quick, args.budget or (60.0 if args.quick else COMPARE_BUDGET_S), core)
        return
    budget = args.budget or (40.0 if args.quick else 900.0)
    command = "python -m benchmarks.bench_scale" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    with tempfile.TemporaryDirectory() as tmp:
        wav = _speech_wav(Path(tmp), RAMP_S + WARMUP_S + MEASURE_S)
        for scenario in scenarios:
            print(f"{scenario}: {TITLES[scenario]}", flush=True)
        limits, steps = search_all(
            {s: (lambda n, s=s: step(s, n, wav, core)) for s in scenarios},
            budget, start=10, growth=5 if args.quick else 2.0,
            precision=1.0 if args.quick else PRECISION, retries=0 if args.quick else 1,
        )
        common = _common_n(steps, "audio", "audio-push")
        pacer_step = _child("pacer", common, wav, core) if common else None
        floors: dict[int, dict[str, Any]] = {}
        for scenario in scenarios:
            n = limits[scenario]["sessions"]
            if scenario in AUDIO_CHAINS and n and n not in floors:
                floor = _child("floor", n, wav, core)
                if isinstance(floor, dict):
                    floors[n] = floor
    png = results_dir(command) / "scale.png"
    plot(steps, png)
    rows = []
    for scenario in scenarios:
        lim, best = limits[scenario], at_limit(steps[scenario], limits[scenario])
        floor = floors.get(lim["sessions"]) if scenario in AUDIO_CHAINS else None
        rows.append([
            TITLES[scenario], limit_text(lim), best.get("p99_ms", "-"),
            best.get("startup_p99_ms", "-"), best.get("cpu_us_per_frame", "-"),
            best.get("rss_per_session_kib", "-"),
            f"{floor['ceiling']:,} ({floor['cpu_us_per_frame']:.1f} µs)" if floor else "-",
            f"{lim['sessions'] / floor['ceiling']:.0%}" if floor else "-",
        ])
    table = markdown_table(
        ["chain", "sessions per core", "steady p99 at the limit (ms)", "start-up p99 (ms)",
         "CPU per frame (µs)", "RSS per session (KiB)",
         "floor at that N (sessions, CPU per frame)", "share of the floor"],
        rows,
    )
    detail = markdown_table(
        ["chain", "N", "try", "p50 ms", "p99 ms", "max ms", "start-up p99 ms", "missing frames",
         "RSS/session KiB", "CPU µs/frame", "pass"],
        [
            [r["scenario"], r["sessions"], r.get("attempt", 1), r.get("p50_ms", "-"),
             r.get("p99_ms", "-"), r.get("max_ms", "-"), r.get("startup_p99_ms", "-"),
             r.get("missing", "-"), r.get("rss_per_session_kib", "-"),
             r.get("cpu_us_per_frame", "-"),
             "yes" if r["ok"] else (r.get("error") or (r.get("errors") or ["no"])[0])]
            for scenario in scenarios for r in steps[scenario]
        ],
    )
    found = goals(limits, steps, floors)
    if isinstance(pacer_step, dict) and "push_vs_file_cpu" in found:
        g = found["push_vs_file_cpu"]
        g["pacer_us"] = pacer_step["cpu_us_per_frame"]
        # A note only: the verdict stays on the measured CPU, pacer included (a live call
        # has to pay for its packets arriving), never on a figure with a part taken out.
        g["entry_us"] = g["push_us"] - g["pacer_us"]
    lines = []
    if "live_vs_hand" in found:
        g = found["live_vs_hand"]
        lines.append(f"- the live-call audio chain holds **{g['ratio']:.2f}x** the hand-written "
                     f"chain's sessions (its better feeding); goal 1.25x: "
                     f"{'met' if g['met'] else 'NOT met'}"
                     + (" (a cap is involved: a lower bound)" if g["capped"] else ""))
    if "audio_floor_share" in found:
        g = found["audio_floor_share"]
        lines.append(f"- the file-fed audio chain holds **{g['share']:.0%}** of the floor's "
                     f"{g['floor']:,} sessions at {g['at']:,} sessions; goal 75%: "
                     f"{'met' if g['met'] else 'NOT met'}")
    if "push_vs_file_cpu" in found:
        g = found["push_vs_file_cpu"]
        pacer_text = (
            f" (note, not the verdict: the pacer alone, a live call's packets arriving, costs "
            f"{g['pacer_us']:.1f} µs; {g['push_us']:.1f} - {g['pacer_us']:.1f} = "
            f"{g['entry_us']:.1f} µs would be left for the chain behind PushSource)"
            if "pacer_us" in g else ""
        )
        lines.append(f"- CPU per frame fed like a live call vs by the wav source at N = "
                     f"{g['at']:,}: {g['push_us']:.1f} vs {g['file_us']:.1f} µs "
                     f"({g['ratio']:.2f}x, pacer included){pacer_text}. Timed on a shared "
                     "machine two such figures move by more than their difference from run "
                     "to run, so the goal (the chain behind the live entry at most the "
                     "file-fed chain's) is judged on counted instructions (`python -m "
                     "benchmarks.bench_cost`), not here")
    every = _common_n_all(steps)
    if every:
        costs = {
            c: min(s["cpu_us_per_frame"] for s in steps[c] if s["ok"] and s["sessions"] == every)
            for c in scenarios
        }
        found["cpu_at_common_n"] = {"sessions": every, "cpu_us_per_frame": costs}
        lines.append(f"- CPU per frame at N = {every:,}, the largest N every chain passed (a busy "
                     "machine moves it far less than the p99 limits): " + ", ".join(
                         f"{c} {v:.1f} µs" for c, v in costs.items()))
    if "kib_per_session" in found:
        g = found["kib_per_session"]
        lines.append(f"- memory per session on the audio chain: **{g['kib']:.0f} KiB** (RSS); "
                     f"goal under 100 KiB: {'met' if g['met'] else 'NOT met'}")
    body = (
        f"{method_text()}\n\nThe floor: the same soxr HQ 16 -> 24 kHz streams and energy VAD "
        "segmenters fed round-robin in a plain loop (no event loop, no pacing, no frames) with "
        "as many sessions as the chain's limit; 20 ms over its CPU per frame is the most any "
        "runtime could hold there, with no headroom for lateness.\n\n"
        f"{table}\n\n{pass_rule_text()} {load_text(steps)}\n\n" + "\n".join(lines)
        + "\n\n![sessions per core](scale.png)\n\n"
        f"<details><summary>every step</summary>\n\n{detail}\n\n</details>"
    )
    data = {"limits": limits, "steps": steps, "floors": {str(k): v for k, v in floors.items()},
            "goals": found, "timing": [RAMP_S, WARMUP_S, MEASURE_S]}
    write_section("scale", "Sessions per core", body, command, data)
    print(table)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
