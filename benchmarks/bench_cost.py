"""CPU per frame in instructions (valgrind callgrind): the side of the scale section a busy
machine cannot move.

The sessions-per-core search measures time, and on a shared machine time per frame
depends on what else runs: other processes take the core and evict the sessions' state
from the caches between ticks. Instructions executed per frame do not. Each chain runs
``SESSIONS`` sessions of ``FRAMES`` 20 ms frames in a child under
``valgrind --tool=callgrind``, and once more with no frames; the difference over the
frames is the chain's cost per frame, start-up and interpreter excluded.

The paced chains run on a ``ManualClock`` advanced 20 ms at a time, so every frame pays
the real wake-up path (a clock waiter per session, its task resumed), but no real time
passes: valgrind's slowdown cannot make frames late. After each step the loop runs a few
rounds (the harness: shared by the sessions of a step, and in the pacer-alone row too).
The pacer of the live-call chains
sleeps on the same clock (one task per session, a wake-up per frame, then
``push_audio``); the scale section's pacer sleeps with ``asyncio.sleep`` instead, which
adds a timer per frame. Cache misses are not counted: this is the work per frame, not
its time on a given machine.

    python -m benchmarks.bench_cost [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import markdown_table, write_section

RATE = 16000
OUT_RATE = 24000
FRAME_S = 0.020
SIZE = int(RATE * FRAME_S)
SESSIONS = 40
FRAMES = 60
ROUNDS = 4  # loop iterations after each 20 ms step of the manual clock
CHAINS = {
    "floor": "the floor: soxr HQ 16k->24k + energy VAD segmenter in a plain loop (no event "
             "loop, no frames)",
    "audio": "pipeflow wav -> resample 16k->24k HQ -> vad(energy) -> null, paced on the "
             "shared clock",
    "audio-push": "the same pipeflow chain fed like a live call (pacer per session -> "
                  "PushSource)",
    "pacer": "the pacer alone (a live call's packets arriving), pushing into nothing",
    "bare": "hand-written async generators (soxr + the same energy VAD), one clock sleep per "
            "session",
    "bare-push": "the same hand-written chain fed by the pacer through an asyncio.Queue",
    "passthrough": "pipeflow, 5 pass-through stages, paced on the shared clock",
    "passthrough-push": "pipeflow, 5 pass-through stages fed like a live call (pacer -> "
                        "PushSource)",
}


POOL = 50  # distinct chunks, cycled: making them costs the same whatever the frame count


def _chunks(frames: int) -> list[np.ndarray]:
    """``frames`` 20 ms chunks of 16 kHz noise bursts and pauses (the VAD sees both)."""
    rng = np.random.default_rng(7)
    level = np.where((np.arange(POOL) // 25) % 2 == 0, 3000.0, 30.0)
    audio = (rng.standard_normal((POOL, SIZE)) * level[:, None]).clip(-32768, 32767)
    pool = list(audio.astype(np.int16))
    return [pool[i % POOL] for i in range(frames)]


def _wav(folder: Path, frames: int) -> Path:
    """The file-fed chains' input, written by the parent (not counted)."""
    from pipeflow.audio.wav import write_wav

    path = folder / f"audio{frames}.wav"
    chunks = _chunks(frames)
    write_wav(path, np.concatenate(chunks) if chunks else np.zeros(0, np.int16), RATE)
    return path


# --- the sessions (run in the child) --------------------------------------------------


def floor(sessions: int, frames: int) -> None:
    """The audio work alone, round-robin over the sessions, as the scale section's floor."""
    from pipeflow.audio.resampler import StreamResampler
    from pipeflow.audio.vad import Segmenter, VadOptions

    chunks = _chunks(frames)
    pairs = [(StreamResampler(RATE, OUT_RATE, "HQ"), Segmenter(VadOptions(), OUT_RATE))
             for _ in range(sessions)]
    for index, chunk in enumerate(chunks):
        for resampler, segmenter in pairs:
            out = resampler.process(chunk)
            if out.size:
                segmenter.feed(out.tobytes(), index * FRAME_S)


async def pacer(clock: Any, packets: list[bytes], push: Callable[[bytes], None],
                end: Callable[[], None]) -> None:
    """One live call's packets: one every 20 ms on the clock."""
    for index, pcm in enumerate(packets):
        await clock.sleep_until(index * FRAME_S)
        push(pcm)
    end()


def session_factory(chain: str, frames: int, folder: Path) -> Callable[
        [Any], Coroutine[Any, Any, None]]:
    """What one session of ``chain`` runs on ``clock``."""
    from pipeflow import Pipeline
    from pipeflow.audio.vad import Segmenter, VadOptions
    from pipeflow.frames import AudioFrame
    from pipeflow.stages.basic import PassThrough
    from pipeflow.stages.resample import Resample
    from pipeflow.stages.sinks import NullSink
    from pipeflow.stages.sources import PushSource, WavSource
    from pipeflow.stages.vad import Vad

    chunks = _chunks(frames)
    pool = {id(c): c.tobytes() for c in chunks}  # a live call's packets, made once
    packets = [pool[id(c)] for c in chunks] if not chain.startswith("passthrough") else (
        [bytes(2 * SIZE)] * frames)
    wav = folder / f"audio{frames}.wav"

    def audio_stages() -> list[Any]:
        return [Resample(rate=OUT_RATE), Vad(engine="energy"), NullSink(realtime=False)]

    async def audio(clock: Any) -> None:
        await Pipeline([WavSource(path=str(wav)), *audio_stages()]).run()

    async def audio_push(clock: Any) -> None:
        source = PushSource(sample_rate=RATE)
        feeding = asyncio.ensure_future(pacer(clock, packets, source.push_audio, source.end))
        await Pipeline([source, *audio_stages()]).run()
        await feeding

    async def pacer_only(clock: Any) -> None:
        await pacer(clock, packets, lambda _pcm: None, lambda: None)

    async def bare_chain(source: AsyncIterator[np.ndarray]) -> None:
        import soxr

        stream = soxr.ResampleStream(RATE, OUT_RATE, 1, dtype="int16", quality="HQ")
        segmenter = Segmenter(VadOptions(), OUT_RATE)

        async def resampled() -> AsyncIterator[np.ndarray]:
            async for samples in source:
                out = stream.resample_chunk(samples)
                if out.size:
                    yield out

        async def detected() -> AsyncIterator[np.ndarray]:
            pts = 0.0
            async for samples in resampled():
                segmenter.feed(samples.tobytes(), pts)
                pts += samples.size / OUT_RATE
                yield samples

        async for _samples in detected():
            pass

    async def bare(clock: Any) -> None:
        async def native() -> AsyncIterator[np.ndarray]:
            for index, chunk in enumerate(chunks):
                await clock.sleep_until(index * FRAME_S)
                yield chunk

        await bare_chain(native())

    async def bare_push(clock: Any) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        feeding = asyncio.ensure_future(
            pacer(clock, packets, queue.put_nowait, lambda: queue.put_nowait(None)))

        async def queued() -> AsyncIterator[np.ndarray]:
            while (pcm := await queue.get()) is not None:
                yield np.frombuffer(pcm, "<i2")

        await bare_chain(queued())
        await feeding

    async def passthrough(clock: Any) -> None:
        pcm = packets[0] if packets else b""

        async def native() -> AsyncIterator[AudioFrame]:
            for index in range(frames):
                await clock.sleep_until(index * FRAME_S)
                yield AudioFrame(pcm=pcm, sample_rate=RATE, pts=index * FRAME_S)

        async for _frame in Pipeline([PassThrough() for _ in range(5)]).stream(native()):
            pass

    async def passthrough_push(clock: Any) -> None:
        source = PushSource(sample_rate=RATE)
        feeding = asyncio.ensure_future(pacer(clock, packets, source.push_audio, source.end))
        async for _frame in Pipeline([source, *(PassThrough() for _ in range(5))]).stream():
            pass
        await feeding

    return {
        "audio": audio, "audio-push": audio_push, "pacer": pacer_only, "bare": bare,
        "bare-push": bare_push, "passthrough": passthrough,
        "passthrough-push": passthrough_push,
    }[chain]


async def run_sessions(chain: str, sessions: int, frames: int, folder: Path) -> None:
    """``sessions`` sessions of ``chain`` on a manual clock advanced 20 ms per step."""
    import inspect

    from pipeflow.audio import clock as clock_module
    from pipeflow.audio.clock import ManualClock, set_clock

    if "rounds" not in inspect.signature(ManualClock.advance).parameters:
        # An older tree (to compare against): the same few rounds per step.
        settle = clock_module.settle
        clock_module.settle = lambda rounds=ROUNDS: settle(ROUNDS)  # type: ignore[assignment]
    make = session_factory(chain, frames, folder)
    clock = ManualClock(start=0.0, resolution=0.004)
    set_clock(clock)
    tasks = [asyncio.ensure_future(make(clock)) for _ in range(sessions)]
    await clock.advance(0.0)
    for _ in range(frames + 2):
        # A few loop rounds carry a frame from the pacer through the chain; a frame not
        # through yet goes on in the next step, so no frame is lost, only harness saved.
        await clock.advance(FRAME_S, step=FRAME_S, rounds=ROUNDS)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


def child(chain: str, sessions: int, frames: int, folder: Path) -> None:
    """One measured run (under callgrind, started by the parent)."""
    if chain == "floor":
        floor(sessions, frames)
    else:
        asyncio.run(run_sessions(chain, sessions, frames, folder))


# --- the parent ------------------------------------------------------------------------


def instructions(chain: str, sessions: int, frames: int, folder: Path) -> int:
    """Instructions a child running ``chain`` executed (callgrind's total)."""
    out = folder / f"callgrind.{chain}.{frames}.out"
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", __spec__.name if __spec__ else "benchmarks.bench_cost",
        "--child", chain,
        "--sessions", str(sessions), "--frames", str(frames), "--folder", str(folder),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{chain}: the callgrind run failed: {tail}")
    out.unlink(missing_ok=True)
    return int(found.group(1))


def per_frame(chain: str, sessions: int, frames: int, folder: Path) -> float:
    """Instructions per frame: (with frames - without) / frames run."""
    with_frames = instructions(chain, sessions, frames, folder)
    without = instructions(chain, sessions, 0, folder)
    return (with_frames - without) / (sessions * frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions and frames")
    parser.add_argument("--child", choices=tuple(CHAINS), help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=SESSIONS, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=FRAMES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sessions, args.frames, Path(args.folder))
        return
    if shutil.which("valgrind") is None:
        print("bench_cost needs valgrind (apt-get install valgrind)", file=sys.stderr)
        raise SystemExit(2)
    sessions, frames = (10, 30) if args.quick else (SESSIONS, FRAMES)
    costs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in (0, frames):
            _wav(Path(tmp), count)
        for chain in CHAINS:
            costs[chain] = per_frame(chain, sessions, frames, Path(tmp))
            print(f"  {chain:<18} {costs[chain]:>10,.0f} instructions per frame", flush=True)
    floor_cost = costs["floor"]
    rows = [[CHAINS[c], f"{v:,.0f}", f"{v / floor_cost:.2f}x" if c != "pacer" else "-"]
            for c, v in costs.items()]
    table = markdown_table(["chain", "instructions per frame", "x the floor"], rows)
    entry = costs["audio-push"] - costs["pacer"]
    ratios = {
        "floor_share": floor_cost / costs["audio"],
        "push_vs_file": costs["audio-push"] / costs["audio"],
        "entry_vs_file": entry / costs["audio"],
        "hand_vs_live": costs["bare-push"] / costs["audio-push"],
        "hand_vs_file": costs["bare"] / costs["audio"],
    }
    lines = [
        f"- the floor's instructions per frame are **{ratios['floor_share']:.0%}** of the "
        "file-fed audio chain's: the share of the floor's sessions the chain could hold if "
        "time followed instructions (cache misses and lateness headroom are not counted)",
        f"- fed like a live call, the chain costs {costs['audio-push']:,.0f} instructions per "
        f"frame with the pacer, {ratios['push_vs_file']:.2f}x the file-fed chain; the pacer "
        f"alone costs {costs['pacer']:,.0f}, so the chain behind `PushSource` costs "
        f"{entry:,.0f}, {ratios['entry_vs_file']:.2f}x the file-fed chain's "
        f"{costs['audio']:,.0f}",
        f"- the hand-written chain costs {ratios['hand_vs_live']:.2f}x pipeflow's per frame "
        f"fed like a live call and {ratios['hand_vs_file']:.2f}x on its native source (a "
        "ratio over 1 is pipeflow doing less): most of both is the same soxr and VAD work",
    ]
    body = (
        f"{__doc__.split(chr(10) + chr(10), 1)[1].rsplit(chr(10) + chr(10), 1)[0]}\n\n"
        f"{sessions} sessions x {frames} frames per chain.\n\n{table}\n\n" + "\n".join(lines)
    )
    write_section("cost", "CPU per frame in instructions", body,
                  "python -m benchmarks.bench_cost" + (" --quick" if args.quick else ""),
                  {"sessions": sessions, "frames": frames, "instructions": costs,
                   "ratios": ratios})
    print(table)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
