"""End of the caller's speech to the first agent audio leaving the sink.

A whole call chain runs against a zero-delay Realtime model on 127.0.0.1:

    speech source -> vad -> realtime -> null (real-time playout) -> probe

Each turn is espeak-ng speech then silence, paced at several times real
time (the VAD works in stream time, so its decision is unchanged). The
model runs in this process and stamps when it receives the commit and
``response.create`` and when it sends the first audio delta, so each turn
splits into:

- VAD decision: stream time from the end of speech to the turn commit
  (``min_silence_ms`` of silence: VAD's own delay, reported, not counted);
- commit: VAD decision -> the model has the ``response.create``;
- model: the responder's own work (not pipeflow's);
- transport: first delta sent -> first agent ``AudioFrame`` out of the stage;
- sink: that frame -> its first audio starts playing (``first_audio_out``).

A bare ``websockets`` client does the same exchange against the same model
(append, commit, response.create, read to the first delta and decode it):
the difference of the two totals is what pipeflow adds.

    python -m benchmarks.bench_latency [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.report import markdown_table, write_section
from pipeflow.audio.clock import get_clock
from pipeflow.audio.tts import synthesize
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Metric,
    ResponseDone,
    SpeechStopped,
    TurnCommitted,
)
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage
from pipeflow.stages.realtime import RealtimeTransport
from pipeflow.stages.sinks import NullSink
from pipeflow.stages.vad import Vad

RATE = 24000
FRAME = 480  # samples in 20 ms
SPEED = 5.0  # times real time for the caller's audio
ANSWER = base64.b64encode(bytes(FRAME * 2)).decode()


class Turn:
    """Timestamps of one turn (loop clock, seconds) and the VAD's stream-time delay."""

    __slots__ = ("create", "decision", "delta", "sink", "transport", "vad_delay")

    def __init__(self) -> None:
        self.vad_delay = self.decision = self.create = self.delta = 0.0
        self.transport = self.sink = 0.0


class Timeline:
    """What the stages and the model record, shared within one run."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.committed = asyncio.Event()
        self.answered = asyncio.Event()
        self.stopped_at = 0.0

    @property
    def turn(self) -> Turn:
        return self.turns[-1]


# --- the zero-delay model, with timestamps ------------------------------------------------


def timed_model(timeline: Timeline | None) -> Any:
    """A websockets handler answering each response.create at once with one audio delta."""

    async def handler(ws: ServerConnection) -> None:
        now = asyncio.get_running_loop().time
        count = 0
        async for message in ws:
            kind = json.loads(message)["type"]
            if kind == "session.update":
                await ws.send('{"type":"session.created","session":{}}')
                await ws.send('{"type":"session.updated","session":{}}')
            elif kind == "response.create":
                if timeline is not None and timeline.turns:
                    timeline.turn.create = now()
                count += 1
                rid, item = f"resp_{count}", f"item_{count}"
                await ws.send(json.dumps({"type": "response.created",
                                          "response": {"id": rid, "status": "in_progress"}}))
                if timeline is not None and timeline.turns:
                    timeline.turn.delta = now()
                await ws.send(json.dumps({"type": "response.output_audio.delta",
                                          "response_id": rid, "item_id": item,
                                          "delta": ANSWER}))
                await ws.send(json.dumps({"type": "response.done",
                                          "response": {"id": rid, "status": "completed"}}))

    return handler


@contextlib.asynccontextmanager
async def model(timeline: Timeline | None) -> AsyncIterator[str]:
    """Serve the timed model on 127.0.0.1; yields its URL."""
    server = await serve(timed_model(timeline), "127.0.0.1", 0, compression=None)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        server.close()
        await server.wait_closed()


# --- the pipeline's instruments ------------------------------------------------------------


class Caller(Stage):
    """Speaks each turn (speech then silence, paced) and waits for the answer."""

    def __init__(self, speech: np.ndarray, turns: int, timeline: Timeline) -> None:
        super().__init__()
        self.speech, self.turns, self.timeline = speech, turns, timeline

    async def process(self, frames: Frames) -> Frames:
        clock = get_clock()
        audio = np.concatenate((self.speech, np.zeros(RATE, np.int16)))  # 1 s of silence
        pts = 0.0
        for _ in range(self.turns):
            self.timeline.turns.append(Turn())
            self.timeline.committed.clear()
            self.timeline.answered.clear()
            start = clock.now() - pts / SPEED
            for offset in range(0, audio.size - FRAME + 1, FRAME):
                if self.timeline.committed.is_set():
                    break
                await clock.sleep_until(start + pts / SPEED)
                yield AudioFrame(pcm=audio[offset:offset + FRAME].tobytes(), sample_rate=RATE,
                                 pts=pts)
                pts += FRAME / RATE
            await self.timeline.answered.wait()
        yield EndOfStream()


class AfterVad(Stage):
    """Stamps the VAD decision (the turn commit leaving the vad stage)."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    async def process(self, frames: Frames) -> Frames:
        now = get_clock().now
        timeline = self.timeline
        async for frame in frames:
            if isinstance(frame, SpeechStopped):
                timeline.stopped_at = frame.at
            elif isinstance(frame, TurnCommitted) and not timeline.committed.is_set():
                timeline.turn.decision = now()
                timeline.turn.vad_delay = frame.at - timeline.stopped_at
                timeline.committed.set()
            yield frame


class AfterTransport(Stage):
    """Stamps the first agent audio frame out of the realtime stage."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    async def process(self, frames: Frames) -> Frames:
        now = get_clock().now
        async for frame in frames:
            if type(frame) is AudioFrame and frame.item_id and self.timeline.turns:
                turn = self.timeline.turn
                if not turn.transport:
                    turn.transport = now()
            yield frame


class AfterSink(Stage):
    """Takes the sink's first_audio_out time; lets the caller go on once answered."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    async def process(self, frames: Frames) -> Frames:
        timeline = self.timeline
        done = False
        async for frame in frames:
            if isinstance(frame, Metric) and frame.name == "first_audio_out":
                timeline.turn.sink = frame.value
            elif isinstance(frame, ResponseDone):
                done = True
            if done and timeline.turns and timeline.turn.sink:
                done = False
                timeline.answered.set()
            yield frame


async def pipeflow_turns(speech: np.ndarray, turns: int) -> list[Turn]:
    """Run the call chain for ``turns`` turns; their timestamps."""
    timeline = Timeline()
    async with model(timeline) as url:
        pipeline = Pipeline([
            Caller(speech, turns, timeline), Vad(engine="energy"), AfterVad(timeline),
            RealtimeTransport(url=url, drain_timeout_s=5), AfterTransport(timeline),
            NullSink(), AfterSink(timeline),
        ])
        async for frame in pipeline.stream():
            if isinstance(frame, ErrorFrame) and frame.fatal:
                raise RuntimeError(f"the call chain failed in {frame.stage}: {frame.message}")
    return [t for t in timeline.turns if t.decision and t.sink]


async def bare_turns(turns: int) -> list[float]:
    """Seconds from commit to first decoded audio, per turn, for a bare websockets client."""
    try:
        from benchmarks.bench_realtime import bare_turns as bare
    except ImportError:  # pragma: no cover - the realtime benchmark ships alongside
        raise RuntimeError("benchmarks.bench_realtime is needed for the bare client") from None
    async with model(None) as url:
        return await bare(url, turns)


# --- report ---------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(ours: list[Turn], bare: list[float]) -> dict[str, Any]:
    """Per-stage and total p50/p95/p99 in ms, and what pipeflow adds over the bare client."""
    parts = {
        "VAD decision (stream time, VAD's own)": [t.vad_delay for t in ours],
        "commit (VAD decision -> model has response.create)": [t.create - t.decision for t in ours],
        "model (zero-delay responder, not pipeflow)": [t.delta - t.create for t in ours],
        "transport (delta sent -> AudioFrame out of realtime)": [
            t.transport - t.delta for t in ours],
        "sink (AudioFrame -> first audio playing)": [t.sink - t.transport for t in ours],
        "pipeflow total (VAD decision -> first audio out of sink)": [
            t.sink - t.decision for t in ours],
        "bare websockets client (commit -> first audio decoded)": bare,
    }
    stats = {
        name: {f"p{q}_ms": _pct(values, q / 100) * 1000 for q in (50, 95, 99)}
        for name, values in parts.items() if values
    }
    total = stats["pipeflow total (VAD decision -> first audio out of sink)"]
    baseline = stats["bare websockets client (commit -> first audio decoded)"]
    return {
        "turns": len(ours),
        "stages": stats,
        "added_p50_ms": total["p50_ms"] - baseline["p50_ms"],
        "added_p99_ms": total["p99_ms"] - baseline["p99_ms"],
    }


async def measure(turns: int, rounds: int) -> dict[str, Any]:
    """Alternating rounds of the pipeline and the bare client."""
    speech = synthesize("Two large pizzas, please.", RATE)
    await pipeflow_turns(speech, 2)  # warm-up: imports, codecs, sockets
    await bare_turns(5)
    ours: list[Turn] = []
    bare: list[float] = []
    for _ in range(rounds):
        ours += await pipeflow_turns(speech, turns)
        bare += await bare_turns(turns)
    return summarise(ours, bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    turns, rounds = (5, 1) if args.quick else (25, 3)
    result = asyncio.run(measure(turns, rounds))
    rows = [[name, s["p50_ms"], s["p95_ms"], s["p99_ms"]] for name, s in result["stages"].items()]
    table = markdown_table(["part", "p50 ms", "p95 ms", "p99 ms"], rows)
    body = (
        f"{result['turns']} turns ({rounds} alternating rounds with the bare client), the "
        "caller's audio paced at 5x real time; a zero-delay scripted Realtime model on "
        "127.0.0.1 in the same process stamps what it receives and sends. Each part's "
        "percentiles are taken on their own, so they do not add up exactly.\n\n"
        f"{table}\n\n**pipeflow adds {result['added_p50_ms']:.3f} ms at p50 and "
        f"{result['added_p99_ms']:.3f} ms at p99** over the bare client, from the VAD decision "
        "to the first agent audio leaving the sink (goal: under 1 ms at p99, beyond VAD's own "
        "decision delay). Each added figure is a difference of percentiles (pipeflow's p99 "
        "minus the bare client's p99), not a percentile of per-turn differences: the two "
        "clients run separate turns, so there is no pair to subtract per sample, and the p99 "
        "added can come out below the p50 added."
    )
    command = "python -m benchmarks.bench_latency" + (" --quick" if args.quick else "")
    write_section("latency", "Latency: end of speech to first agent audio", body, command,
                  result)
    print(table)
    print(f"added p50 {result['added_p50_ms']:.3f} ms, p99 {result['added_p99_ms']:.3f} ms")


if __name__ == "__main__":
    main()
