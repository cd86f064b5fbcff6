"""Per-frame cost of pipeflow's runtime against a bare async-generator chain.

The same 20 ms PCM16 frames go through N = 1, 5, 10 pass-through stages,
once as a pipeflow ``Pipeline`` of ``PassThrough`` stages and once as a
hand-written chain of plain async generators, in alternating rounds of one
run; the table reports medians and the ratio.

    python -m benchmarks.bench_pipeline [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

from benchmarks.report import markdown_table, write_section
from pipeflow import Pipeline, stage
from pipeflow.frames import AudioFrame, Frame
from pipeflow.stages.basic import PassThrough

FRAME = AudioFrame(pcm=b"\x00\x01" * 320, sample_rate=16000)


async def _source(count: int) -> AsyncIterator[Frame]:
    for _ in range(count):
        yield FRAME


async def _bare_hop(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    async for frame in frames:
        yield frame


async def bare_chain(stages: int, count: int) -> float:
    """Seconds to drain ``count`` frames through ``stages`` bare generators."""
    chain: AsyncIterator[Frame] = _source(count)
    for _ in range(stages):
        chain = _bare_hop(chain)
    started = time.perf_counter()
    async for _ in chain:
        pass
    return time.perf_counter() - started


async def pipeflow_chain(stages: int, count: int) -> float:
    """Seconds to drain ``count`` frames through a Pipeline of ``stages`` PassThroughs."""

    @stage()
    async def source(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        for _ in range(count):
            yield FRAME

    pipeline = Pipeline([source(), *(PassThrough() for _ in range(stages))])
    started = time.perf_counter()
    async for _ in pipeline.stream():
        pass
    return time.perf_counter() - started


async def measure(counts: tuple[int, ...], frames: int, rounds: int) -> list[dict[str, float]]:
    """Per-stage, per-frame cost of both chains for each N (medians of rounds)."""
    rows = []
    for n in counts:
        bare: list[float] = []
        ours: list[float] = []
        base_bare: list[float] = []
        base_ours: list[float] = []
        for _ in range(rounds):
            base_bare.append(await bare_chain(0, frames))
            bare.append(await bare_chain(n, frames))
            base_ours.append(await pipeflow_chain(0, frames))
            ours.append(await pipeflow_chain(n, frames))
        # Cost per stage: subtract the source-only run, divide by stages and frames.
        b = (statistics.median(bare) - statistics.median(base_bare)) / (n * frames)
        o = (statistics.median(ours) - statistics.median(base_ours)) / (n * frames)
        rows.append({"stages": n, "bare_us": b * 1e6, "pipeflow_us": o * 1e6, "ratio": o / b})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    frames, rounds = (2_000, 3) if args.quick else (50_000, 7)
    rows = asyncio.run(measure((1, 5, 10), frames, rounds))
    table = markdown_table(
        ["stages", "bare generator µs/frame/stage", "pipeflow µs/frame/stage", "ratio"],
        [[r["stages"], r["bare_us"], r["pipeflow_us"], f"{r['ratio']:.2f}x"] for r in rows],
    )
    body = (
        f"{frames:,} frames of 20 ms PCM16 per round, {rounds} alternating rounds, medians; "
        "the source-only time is subtracted so the figure is the cost of one hop.\n"
        "Goal: pipeflow within 1.5x of the bare chain.\n\n" + table
    )
    command = "python -m benchmarks.bench_pipeline" + (" --quick" if args.quick else "")
    write_section("pipeline", "Pipeline runtime: pass-through stage vs bare async generator",
                  body, command, rows)
    print(table)


if __name__ == "__main__":
    main()
