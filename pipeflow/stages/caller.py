"""The ``caller`` source: a simulated phone caller for offline calls and tests.

It speaks scripted lines (synthesised with espeak-ng) into a continuous,
real-time paced line: silence while it listens, speech when it talks, just as
a phone line carries. Between lines it waits like a polite caller: until the
agent's audio has finished playing (the sinks report each played item
upstream as ``PlayoutPosition``; the caller observes them) plus a short pause.
A line with ``after_ms`` is spoken that long after the caller's previous line
without waiting, which barges in on the agent. What the caller said is
recorded to a WAV file so a call can be replayed with the ``wav`` source.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np

from pipeflow.audio.clock import get_clock
from pipeflow.audio.pcm import check_rate, frame_samples
from pipeflow.audio.tts import synthesize
from pipeflow.audio.wav import WavWriter
from pipeflow.frames import AudioFrame, EndOfStream, PlayoutPosition
from pipeflow.stage import Frames, Stage

__all__ = ["CallerLine", "CallerOptions", "CallerSource"]


class CallerLine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One thing the caller says."""

    text: str
    """The words."""
    after_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] | None = None
    """Speak this long after the caller's previous line, without waiting (barge-in)."""


class CallerOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``caller`` source."""

    lines: list[str | CallerLine]
    """What the caller says, in order: plain text, or {text, after_ms}."""
    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=192_000)] = 16000
    """Rate of the caller's line (phone-like 8000 or 16000)."""
    frame_ms: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 20.0
    """Length of each frame in milliseconds."""
    voice: str = "en-us"
    """espeak-ng voice of the caller."""
    words_per_minute: Annotated[int, msgspec.Meta(ge=80, le=450)] = 165
    """Speaking rate."""
    speed: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 1.0
    """1.0 is real time; 2.0 twice as fast; 0 unpaced (the whole call must use the same speed)."""
    wait_for_greeting_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 8.0
    """Before the first line, wait up to this long for the agent's greeting."""
    pause_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 700.0
    """Silence after the agent finished before the caller answers."""
    max_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    """Longest wait for the agent before the caller speaks anyway."""
    tail_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 1500.0
    """Silence after the agent's last answer before the line hangs up."""
    record: str | None = "caller.wav"
    """Write what the caller said (the whole line) here, under output_dir; null: don't."""


class CallerSource(Stage):
    """A simulated caller: scripted speech on a paced line, waiting for the agent's answers."""

    name = "caller"
    role = "source"
    writes = ("record",)
    Options = CallerOptions
    observes = (PlayoutPosition,)
    produces = (AudioFrame, EndOfStream)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        check_rate(self.options.sample_rate, "caller source")
        self._played = asyncio.Event()
        self._played_count = 0
        self._finished: set[str] = set()
        self.lines_spoken = 0

    @property
    def input_rate(self) -> int:
        """The rate of the audio this source produces."""
        return self.options.sample_rate

    async def _watch(self, frames: Frames) -> None:
        async for frame in frames:
            # Only an answer that played to its end counts as the agent done:
            # a pause (tentative barge-in) or a cut reports an interrupted
            # position, and a report for an item already heard is a repeat;
            # counting either made the caller talk over an answer still to come.
            if (isinstance(frame, PlayoutPosition) and not frame.interrupted
                    and frame.item_id not in self._finished):
                self._finished.add(frame.item_id)
                self._played_count += 1
                self._played.set()

    def _record_path(self) -> Path | None:
        if not self.options.record:
            return None
        return self.ctx.output_path(self.options.record)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        self.ctx.spawn(self._watch(frames), name=f"{self.ctx.name}.watch")
        lines = [CallerLine(text=x) if isinstance(x, str) else x for x in opts.lines]
        speech = await asyncio.to_thread(
            synthesize_apart, [line.text for line in lines], opts.sample_rate, opts.voice,
            opts.words_per_minute)
        size = frame_samples(opts.sample_rate, opts.frame_ms)
        frame_s = size / opts.sample_rate
        clock = get_clock()
        start = clock.now()
        writer = None
        path = self._record_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = WavWriter(path, opts.sample_rate)
            self.ctx.pipeline.outputs["caller audio"] = str(path)
        sent = 0  # frames so far; stream time = sent * frame_s
        silence = bytes(2 * size)

        def frame(pcm: bytes) -> AudioFrame:
            return AudioFrame(pcm=pcm, sample_rate=opts.sample_rate, pts=sent * frame_s)

        async def pace() -> None:
            if opts.speed > 0:
                await clock.sleep_until(start + sent * frame_s / opts.speed)

        try:
            for index, (line, samples) in enumerate(zip(lines, speech, strict=True)):
                if line.after_ms is not None:
                    waits = _fixed(line.after_ms / 1000, frame_s)
                else:
                    timeout = opts.wait_for_greeting_s if index == 0 else opts.max_wait_s
                    waits = self._until_agent_done(timeout, frame_s)
                for _ in waits:
                    await pace()
                    yield frame(silence)
                    sent += 1
                    if writer:
                        writer.write(silence)
                for chunk in _chunks(samples, size):
                    await pace()
                    yield frame(chunk)
                    sent += 1
                    if writer:
                        writer.write(chunk)
                self.lines_spoken += 1
                self._played_count = 0
                self._played.clear()
            for _ in self._until_agent_done(opts.max_wait_s, frame_s, tail=True):
                await pace()
                yield frame(silence)
                sent += 1
                if writer:
                    writer.write(silence)
        finally:
            if writer:
                writer.close()
        yield EndOfStream()

    def _until_agent_done(
        self, timeout: float, frame_s: float, tail: bool = False
    ) -> Iterator[None]:
        """Frames of silence until the agent finished speaking and paused, or timeout."""
        opts = self.options
        quiet = (opts.tail_ms if tail else opts.pause_ms) / 1000
        waited = 0.0
        since_played: float | None = None
        seen = self._played_count
        while waited < timeout:
            if self._played_count != seen:
                seen = self._played_count
                since_played = 0.0
            if since_played is not None and since_played >= quiet:
                return
            yield None
            waited += frame_s
            if since_played is not None:
                since_played += frame_s
        if not tail:
            self.ctx.log.warning("the agent did not finish answering within %.0f s", timeout)


_SPEAK = """
import io, json, sys
import numpy as np
from pipeflow.audio import tts
texts, rate, voice, wpm = json.loads(sys.stdin.read())
out = io.BytesIO()
np.savez(out, *[tts.synthesize(t, rate, voice, wpm) for t in texts])
sys.stdout.buffer.write(out.getvalue())
"""


def synthesize_apart(texts: list[str], rate: int, voice: str, wpm: int) -> list[np.ndarray]:
    """The caller's lines, spoken in order by an espeak-ng of their own.

    espeak-ng's output for a text depends on everything the process spoke
    before (the agent's replies included), so the same caller sounded
    different from run to run and was heard differently ("twelve main
    street" as "two elm lane street"). A fresh process speaks the lines in
    order: the same lines, the same audio. Where no process can be started,
    they are spoken here.
    """
    try:
        done = subprocess.run([sys.executable, "-c", _SPEAK], capture_output=True, timeout=120,
                              input=json.dumps([texts, rate, voice, wpm]).encode(), check=True)
        with np.load(io.BytesIO(done.stdout)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(texts))]
    except (OSError, subprocess.SubprocessError, ValueError):
        return [synthesize(text, rate, voice, wpm) for text in texts]


def _fixed(seconds: float, frame_s: float) -> Iterator[None]:
    for _ in range(round(seconds / frame_s)):
        yield None


def _chunks(samples: np.ndarray, size: int) -> Iterator[bytes]:
    for begin in range(0, samples.size, size):
        chunk = samples[begin : begin + size]
        if chunk.size < size:
            chunk = np.concatenate([chunk, np.zeros(size - chunk.size, np.int16)])
        yield chunk.astype("<i2").tobytes()
