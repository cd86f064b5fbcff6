"""What an aiostream operator stage costs per frame, next to a plain stage.

``pipeflow.streams`` lets an aiostream operator sit in a chain as a stage.
This measures the price per frame: the same 20 ms frames through a pipeline
of one pass-through stage (a plain generator hop), one ``pipe.map`` with a
sync function, one ``pipe.filter``, and one ``pipe.map`` with an async
function, in alternating rounds of one run (medians; microseconds per frame of
the whole one-stage pipeline, its source included). It prints a table and writes nothing: the
figures back the advice in ``pipeflow/streams.py`` and docs/architecture.md.

    python -m benchmarks.bench_streams [--frames N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

from aiostream import pipe

from benchmarks.report import markdown_table
from pipeflow import Pipeline
from pipeflow.frames import AudioFrame, Frame
from pipeflow.stage import Stage
from pipeflow.stages.basic import PassThrough
from pipeflow.streams import operator_stage

FRAME = AudioFrame(pcm=b"\x00\x01" * 320, sample_rate=16000)


async def _source(count: int) -> AsyncIterator[Frame]:
    for _ in range(count):
        yield FRAME


def _same(frame: Frame) -> Frame:
    return frame


async def _same_async(frame: Frame) -> Frame:
    return frame


CASES: dict[str, Callable[[], Stage]] = {
    "plain pass-through stage": PassThrough,
    "operator_stage(pipe.map(sync))": lambda: operator_stage(pipe.map(_same)),
    "operator_stage(pipe.filter(sync))": lambda: operator_stage(pipe.filter(bool)),
    "operator_stage(pipe.map(async))": lambda: operator_stage(pipe.map(_same_async)),
}


async def run_once(make: Callable[[], Stage], count: int) -> float:
    """Seconds to drain ``count`` frames through a one-stage pipeline."""
    pipeline = Pipeline([make()])
    started = time.perf_counter()
    async for _frame in pipeline.stream(_source(count)):
        pass
    return time.perf_counter() - started


async def measure(frames: int, rounds: int) -> dict[str, float]:
    """Median microseconds per frame of each case."""
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, make in CASES.items():
            count = frames if "async" not in name else max(frames // 20, 100)
            times[name].append(await run_once(make, count) / count * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    medians = asyncio.run(measure(args.frames, args.rounds))
    plain = medians["plain pass-through stage"]
    rows = [[name, f"{us:.2f}", f"{us / plain:.1f}x"] for name, us in medians.items()]
    print(markdown_table(["one stage", "µs per frame", "vs plain"], rows))


if __name__ == "__main__":
    main()
