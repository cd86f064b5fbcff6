"""Audio costs: the resample stage against raw soxr, VAD engines, and sessions per core.

1. Resample: the ``resample`` stage against a bare ``soxr.ResampleStream`` on
   the same 20 ms chunks, in alternating rounds of one run (median ratio).
2. VAD: ``Segmenter.feed`` cost per 20 ms frame of speech for each engine,
   next to raw soxr 16k->24k on the same frames as a yardstick.
3. Sessions per core: N concurrent real-time paced pipelines
   wav(speed=1) -> resample(24000) -> vad(energy) -> null(realtime=false)
   in one process (one core); a probe at the end measures each frame's
   lateness against its schedule (clock start + pts). N grows until the
   p99 lateness passes 20 ms; memory per session is the RSS growth / N.

    python -m benchmarks.bench_audio [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from benchmarks.report import markdown_table, write_section
from pipeflow.audio import tts
from pipeflow.audio.clock import get_clock
from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.audio.wav import write_wav
from pipeflow.frames import AudioFrame, Frame
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage
from pipeflow.stages.resample import Resample
from pipeflow.stages.sinks import NullSink
from pipeflow.stages.sources import WavSource
from pipeflow.stages.vad import Vad

LATENESS_GOAL = 0.020


def speech(rate: int, seconds: float) -> np.ndarray:
    """Speech with pauses (espeak-ng), repeated to ``seconds``."""
    if tts.available():
        part = tts.synthesize("Hello, I would like two large pizzas, please.", rate)
        part = np.concatenate([part, np.zeros(rate // 2, np.int16)])
    else:  # pragma: no cover - espeak-ng ships with espeakng-loader
        t = np.arange(rate) / rate
        part = (np.sin(2 * np.pi * 220 * t) * 8000 * (t % 0.5 < 0.3)).astype(np.int16)
    reps = int(np.ceil(seconds * rate / part.size))
    return np.tile(part, reps)[: round(seconds * rate)]


def chunks(samples: np.ndarray, rate: int) -> list[np.ndarray]:
    size = rate // 50
    return [samples[i : i + size] for i in range(0, samples.size - size + 1, size)]


# --- 1. resample ---------------------------------------------------------------------


def raw_soxr(frames: list[bytes], rate_in: int, rate_out: int) -> float:
    stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="HQ")
    started = time.perf_counter()
    for pcm in frames:
        stream.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes()
    return time.perf_counter() - started


async def _feed(frames: list[AudioFrame]) -> AsyncIterator[Frame]:
    for frame in frames:
        yield frame


async def stage_resample(frames: list[AudioFrame], rate_out: int) -> float:
    stage = Resample(rate=rate_out)
    started = time.perf_counter()
    async for _ in stage.process(_feed(frames)):
        pass
    return time.perf_counter() - started


async def bench_resample(quick: bool) -> tuple[str, dict[str, Any]]:
    rounds, seconds = (5, 2) if quick else (15, 5)
    rows, data = [], {}
    for rate_in, rate_out in ((16000, 24000), (8000, 24000), (24000, 16000)):
        pcm = [c.tobytes() for c in chunks(speech(rate_in, seconds), rate_in)]
        frames = [AudioFrame(pcm=p, sample_rate=rate_in, pts=i * 0.02) for i, p in enumerate(pcm)]
        raw, staged = [], []
        for _ in range(rounds):
            raw.append(raw_soxr(pcm, rate_in, rate_out) / len(pcm))
            staged.append(await stage_resample(frames, rate_out) / len(pcm))
        # The fastest of many alternating rounds: other processes share this machine.
        r, s = min(raw) * 1e6, min(staged) * 1e6
        key = f"{rate_in // 1000}k->{rate_out // 1000}k"
        rows.append([key, r, s, s / r])
        data[key] = {"raw_us": r, "stage_us": s, "ratio": s / r}
    body = (
        "Per 20 ms frame, HQ, best of alternating rounds (goal: stage within 1.2x raw soxr).\n\n"
        + markdown_table(["conversion", "raw soxr µs", "resample stage µs", "ratio"], rows)
    )
    return body, data


# --- 2. vad --------------------------------------------------------------------------


def bench_vad(quick: bool) -> tuple[str, dict[str, Any]]:
    rate, seconds = 16000, (4 if quick else 20)
    frames = [c.tobytes() for c in chunks(speech(rate, seconds), rate)]
    stream = soxr.ResampleStream(rate, 24000, 1, dtype="int16", quality="HQ")
    started = time.perf_counter()
    for pcm in frames:
        stream.resample_chunk(np.frombuffer(pcm, "<i2"))
    yardstick = (time.perf_counter() - started) / len(frames) * 1e6
    rows, data = [], {"soxr_16k_24k_us": yardstick}
    for engine in ("energy", "webrtc", "silero"):
        try:
            segmenter = Segmenter(VadOptions(engine=engine), rate)
        except Exception as exc:  # an optional engine that is not installed
            rows.append([engine, "n/a", "n/a", str(exc)[:60]])
            continue
        started = time.perf_counter()
        for i, pcm in enumerate(frames):
            segmenter.feed(pcm, i * 0.02)
        cost = (time.perf_counter() - started) / len(frames) * 1e6
        rows.append([engine, cost, cost / yardstick, ""])
        data[engine] = {"us_per_frame": cost, "vs_soxr": cost / yardstick}
    body = (
        f"Segmenter.feed per 20 ms frame of 16 kHz speech; raw soxr 16k->24k on the same "
        f"frames took {yardstick:.1f} µs.\n\n"
        + markdown_table(["engine", "µs per frame", "x soxr chunk", "note"], rows)
    )
    return body, data


# --- 3. sessions per core -------------------------------------------------------------


class _Mark(Stage):
    """Right after the source: remembers the stream time of the frame in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.pts = 0.0

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if type(frame) is AudioFrame:
                self.pts = frame.pts
            yield frame


class _Probe(Stage):
    """At the end of the chain: how late the source frame in flight is against its schedule.

    The chain is synchronous generators, so everything a source frame causes
    reaches the end in the same step; comparing with that frame's schedule
    measures the runtime's lateness, not soxr's block buffering.
    """

    def __init__(self, source: WavSource, mark: _Mark, lateness: list[float], after: float):
        super().__init__()
        self.source = source
        self.mark = mark
        self.lateness = lateness
        self.after = after

    async def process(self, frames: Frames) -> Frames:
        clock = get_clock()
        record = self.lateness.append
        mark = self.mark
        last = -1.0
        async for frame in frames:
            if type(frame) is AudioFrame and mark.pts != last:
                last = mark.pts
                scheduled = self.source.started_at + mark.pts
                if scheduled >= self.after:
                    record(clock.now() - scheduled)
            yield frame


async def _trial(path: str, sessions: int, seconds: float) -> dict[str, float]:
    lateness: list[float] = []

    ramp = 1.0  # calls arrive over a second, not all in one tick
    after = get_clock().now() + ramp + 0.2  # measure once every session runs

    async def one(delay: float) -> None:
        source = WavSource(path=path, speed=1.0, start_delay_ms=delay * 1000)
        mark = _Mark()
        pipeline = Pipeline(
            [
                source,
                mark,
                Resample(rate=24000),
                Vad(),
                NullSink(realtime=False),
                _Probe(source, mark, lateness, after),
            ]
        )
        await pipeline.run()

    spread = random.Random(sessions)
    tasks = [asyncio.create_task(one(spread.uniform(0, ramp))) for _ in range(sessions)]
    await asyncio.gather(*tasks)
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99)] if lateness else float("inf")
    return {
        "sessions": sessions,
        "p50_ms": lateness[len(lateness) // 2] * 1000 if lateness else float("inf"),
        "p99_ms": p99 * 1000,
        "max_ms": lateness[-1] * 1000 if lateness else float("inf"),
        "frames": len(lateness),
    }


async def _memory(path: str, sessions: int) -> float:
    """KiB of Python and numpy heap per running session (tracemalloc, mid-call)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]

    async def one() -> None:
        source = WavSource(path=path, speed=1.0)
        await Pipeline([source, Resample(rate=24000), Vad(), NullSink(realtime=False)]).run()

    tasks = [asyncio.create_task(one()) for _ in range(sessions)]
    await asyncio.sleep(0.5)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return used / sessions / 1024


async def bench_sessions(quick: bool) -> tuple[str, dict[str, Any]]:
    seconds = 2.0 if quick else 4.0
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "caller.wav")
        write_wav(path, speech(16000, seconds), 16000)
        trials: list[dict[str, float]] = []
        ok = lambda t: t["p99_ms"] <= LATENESS_GOAL * 1000  # noqa: E731
        n, best = (50 if quick else 100), 0
        limit = 400 if quick else 6000
        while n <= limit:  # grow until the goal fails
            trial = await _trial(path, n, seconds)
            trials.append(trial)
            if not ok(trial):
                break
            best = n
            n *= 2
        low, high = best, n
        for _ in range(0 if quick else 3):  # refine between the last pass and the first fail
            if high - low <= max(25, low // 10) or high > limit:
                break
            mid = (low + high) // 2
            trial = await _trial(path, mid, seconds)
            trials.append(trial)
            low, high = (mid, high) if ok(trial) else (low, mid)
        best = low
        kib = await _memory(path, 50 if quick else 200)
    rows = [
        [t["sessions"], t["p50_ms"], t["p99_ms"], t["max_ms"], "yes" if ok(t) else "no"]
        for t in sorted(trials, key=lambda t: t["sessions"])
    ]
    body = (
        f"Real-time paced wav -> resample(24k) -> vad(energy) -> null(realtime=false), "
        f"{seconds:g} s of 16 kHz speech per session, starts spread over 1 s, one process "
        f"(one core). Lateness = when the output caused by a source frame leaves the chain - "
        f"that frame's schedule (clock start + pts), measured once all sessions run. Not included: "
        f"soxr HQ's block buffering (it releases 16k->24k output in ~30 ms bursts at 20 ms "
        f"chunks; QQ/LQ do not), an algorithmic delay rather than lateness. Two probe stages "
        f"add two generator hops.\n\n"
        f"**Sessions per core with p99 lateness under 20 ms: {best}** "
        "(goal: at least 300; later goal 1,000). "
        f"**Memory per session: {kib:.0f} KiB** (tracemalloc, Python and numpy heap, "
        "mid-call; the decoded WAV is shared through the read cache).\n\n"
        + markdown_table(["sessions", "p50 ms", "p99 ms", "max ms", "meets goal"], rows)
    )
    return body, {"sessions_per_core": best, "kib_per_session": kib, "trials": trials}


async def main(quick: bool) -> None:
    command = "python -m benchmarks.bench_audio" + (" --quick" if quick else "")
    body, data = await bench_resample(quick)
    print(body, "\n")
    write_section("audio_resample", "Audio: resample stage vs raw soxr", body, command, data)
    body, data = bench_vad(quick)
    print(body, "\n")
    write_section("audio_vad", "Audio: VAD cost per frame", body, command, data)
    body, data = await bench_sessions(quick)
    print(body)
    write_section("audio_sessions", "Audio: real-time sessions per core", body, command, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 15 s)")
    asyncio.run(main(parser.parse_args().quick))
