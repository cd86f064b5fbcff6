"""Audio sources: WAV files, pushed live audio, synthetic tones, stdin, replays, microphones.

Every source ignores its input, stamps each ``AudioFrame.pts`` with stream
time, and ends with one ``EndOfStream``. Paced sources sleep on the loop's
shared ``PacingClock``, so thousands of them cost one timer, and schedule
every frame from the stream start (``start + pts / speed``): a late wake-up
never accumulates drift.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
import numpy as np

from pipeflow.audio.clock import get_clock
from pipeflow.audio.pcm import (
    DurationMs,
    FrameMs,
    SampleRate,
    check_pcm,
    check_rate,
    frame_samples,
    mix_down,
    view,
)
from pipeflow.audio.wav import read_wav
from pipeflow.errors import ConfigError
from pipeflow.frames import AudioFrame, EndOfStream, Frame, FrameUnion
from pipeflow.stage import Frames, Stage

__all__ = [
    "MicrophoneSource",
    "PushSource",
    "ReplaySource",
    "SilenceSource",
    "StdinSource",
    "ToneSource",
    "WavSource",
    "paced",
]

_YIELD_EVERY = 50  # unpaced sources let other tasks run this often (frames)

Speed = Annotated[float, msgspec.Meta(ge=0)]
"""A pacing factor: 1.0 real time, 0 as fast as possible."""


async def paced(frames: Iterator[Frame], speed: float, start: float | None = None) -> Frames:
    """Yield ``frames`` at ``speed`` times real time by their stream time.

    Frame ``i`` leaves at ``start + pts / speed`` on the shared clock
    (``start`` defaults to now; frames without ``pts`` go at once). With
    ``speed`` 0 frames leave as fast as the consumer takes them.
    """
    start = await _started(start)
    sleep_until = get_clock().sleep_until
    for due, frame in _due(frames, speed, start):
        if due is not None:  # a negative due: one loop round
            await (sleep_until(due) if due >= 0 else asyncio.sleep(0))
        yield frame


# The built-in sources loop over ``_due`` and wait in their own ``process`` instead of
# reading ``paced``: a generator hop between the pacing and the stage costs about 8k
# instructions per frame, as much as the rest of the source.


async def _started(start: float | None) -> float:
    """The clock time of stream time 0 (now by default), once reached if it lies ahead
    (a start delay holds even unpaced streams)."""
    clock = get_clock()
    now = clock.now()
    if start is None:
        return now
    if start > now:
        await clock.sleep_until(start)
    return start


def _due(frames: Iterator[Frame], speed: float, start: float) -> Iterator[tuple[float | None,
                                                                             Frame]]:
    """Each frame with the clock time it is due (``None``: at once; negative: after one
    loop round, so an unpaced stream lets other tasks run every ``_YIELD_EVERY`` frames)."""
    if speed > 0:
        for frame in frames:
            pts = getattr(frame, "pts", None)
            yield (start if pts is None else start + pts / speed), frame
        return
    for count, frame in enumerate(frames, 1):
        yield (-1.0 if count % _YIELD_EVERY == 0 else None), frame


def _check_speed(speed: float, where: str) -> None:
    if not (speed >= 0 and math.isfinite(speed)):
        raise ConfigError(f"{where}: speed must be 0 (as fast as possible) or more, got {speed}.")


def _slices(samples: np.ndarray, rate: int, frame_ms: float, loop: bool) -> Iterator[Frame]:
    """AudioFrames of ``frame_ms`` cut from int16 samples (repeated forever if ``loop``)."""
    step = 2 * frame_samples(rate, frame_ms)
    # The bytes of the (shared, cached) samples, viewed: a frame is one copy of its slice,
    # not an array slice and a tobytes (a third of the instructions).
    data = memoryview(np.ascontiguousarray(samples, dtype="<i2")).cast("B")
    offset = 0
    while True:
        for start in range(0, len(data), step):
            yield AudioFrame(pcm=bytes(data[start : start + step]), sample_rate=rate,
                             pts=(offset + start // 2) / rate)
        offset += samples.size
        if not loop or samples.size == 0:
            return


def _generated(
    pcm: Callable[[int, int], bytes], rate: int, duration_ms: float, frame_ms: float
) -> Iterator[Frame]:
    """AudioFrames of a synthetic signal, each made when it is due: ``pcm(start, stop)``
    gives the PCM16 of samples ``start`` to ``stop``, so an hour-long tone costs one frame
    of memory, not an hour of it."""
    count = max(0, round(rate * duration_ms / 1000))
    size = frame_samples(rate, frame_ms)
    for start in range(0, count, size):
        stop = min(start + size, count)
        yield AudioFrame(pcm=pcm(start, stop), sample_rate=rate, pts=start / rate)


# --- wav ---------------------------------------------------------------------


class WavSourceOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``wav`` source."""

    path: str
    """The WAV file: PCM 8/16/24/32-bit, float, mu-law or A-law, any rate and channels."""
    frame_ms: FrameMs = 20.0
    """Length of each emitted frame in milliseconds."""
    speed: Speed = 1.0
    """1.0 paces frames in real time, 2.0 twice as fast, 0 as fast as possible."""
    start_delay_ms: DurationMs = 0.0
    """Wait this long (ms) before the first frame."""
    loop: bool = False
    """Start again from the beginning at the end of the file (forever)."""


class WavSource(Stage):
    """Plays a WAV file as PCM16 mono frames (mixed down, at the file's own rate).

    ``started_at`` is the clock time of stream time 0 once the first frame left.
    """

    name = "wav"
    role = "source"
    Options = WavSourceOptions
    produces = (AudioFrame, EndOfStream)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        _check_speed(opts.speed, f"wav source {opts.path!r}")
        audio = read_wav(opts.path)
        slices = _slices(audio.samples, audio.sample_rate, opts.frame_ms, opts.loop)
        self.started_at = get_clock().now() + opts.start_delay_ms / 1000
        await _started(self.started_at)
        sleep_until = get_clock().sleep_until
        for due, frame in _due(slices, opts.speed, self.started_at):
            if due is not None:  # a negative due: one loop round
                await (sleep_until(due) if due >= 0 else asyncio.sleep(0))
            yield frame
        yield EndOfStream()


# --- synthetic ---------------------------------------------------------------


class ToneOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``tone`` source."""

    frequency: Annotated[float, msgspec.Meta(gt=0)] = 440.0
    """Pitch of the sine in Hz."""
    amplitude: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """Peak level, 0 to 1 of full scale."""
    duration_ms: DurationMs = 1000.0
    """Length of the tone in milliseconds."""
    sample_rate: SampleRate = 16000
    """Sample rate of the frames in Hz."""
    frame_ms: FrameMs = 20.0
    """Length of each frame in milliseconds."""
    speed: Speed = 1.0
    """1.0 paces in real time, 0 as fast as possible."""


class ToneSource(Stage):
    """A sine tone (tests, line checks, hold beeps)."""

    name = "tone"
    role = "source"
    Options = ToneOptions
    produces = (AudioFrame, EndOfStream)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        rate = check_rate(opts.sample_rate, "tone source")
        _check_speed(opts.speed, "tone source")
        if not 0.0 <= opts.amplitude <= 1.0:
            raise ConfigError(f"tone source: amplitude must be 0 to 1, got {opts.amplitude}.")
        if not 0 < opts.frequency < rate / 2:
            raise ConfigError(
                f"tone source: frequency must be between 0 and {rate / 2:g} Hz "
                f"(half the sample rate), got {opts.frequency}."
            )
        step = 2 * np.pi * opts.frequency / rate
        scale = opts.amplitude * 32767

        def tone(start: int, stop: int) -> bytes:
            phase = np.arange(start, stop) * step
            return np.rint(np.sin(phase) * scale).astype(np.int16).tobytes()

        generated = _generated(tone, rate, opts.duration_ms, opts.frame_ms)
        start = await _started(None)
        sleep_until = get_clock().sleep_until
        for due, frame in _due(generated, opts.speed, start):
            if due is not None:  # a negative due: one loop round
                await (sleep_until(due) if due >= 0 else asyncio.sleep(0))
            yield frame
        yield EndOfStream()


class SilenceOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``silence`` source."""

    duration_ms: DurationMs = 1000.0
    """Length of the silence in milliseconds."""
    sample_rate: SampleRate = 16000
    """Sample rate of the frames in Hz."""
    frame_ms: FrameMs = 20.0
    """Length of each frame in milliseconds."""
    speed: Speed = 1.0
    """1.0 paces in real time, 0 as fast as possible."""


class SilenceSource(Stage):
    """Digital silence (keeps a line open, tests VAD against false turns)."""

    name = "silence"
    role = "source"
    Options = SilenceOptions
    produces = (AudioFrame, EndOfStream)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        rate = check_rate(opts.sample_rate, "silence source")
        _check_speed(opts.speed, "silence source")
        generated = _generated(lambda start, stop: bytes(2 * (stop - start)), rate,
                               opts.duration_ms, opts.frame_ms)
        start = await _started(None)
        sleep_until = get_clock().sleep_until
        for due, frame in _due(generated, opts.speed, start):
            if due is not None:  # a negative due: one loop round
                await (sleep_until(due) if due >= 0 else asyncio.sleep(0))
            yield frame
        yield EndOfStream()


# --- push (live calls) -------------------------------------------------------


class PushOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``push`` source."""

    sample_rate: SampleRate = 16000
    """Rate assumed by ``push_audio`` when none is given."""


class PushSource(Stage):
    """Frames fed from Python while the pipeline runs (the session API, the call gateway).

    ``push_audio(pcm, rate)``, ``push(frame)`` and ``end()`` may be called
    before the run starts (frames wait), from the loop, or from another
    thread. The stream stays open until ``end()``. Urgent frames (an
    ``Interrupt``) overtake pushed frames not yet passed on.

    Every live call enters a pipeline here, so a pushed frame costs as
    little as it can: a deque append and, only when the stage is idle, one
    wake-up (no merged inbox, no per-frame checks beyond the byte count).
    """

    name = "push"
    role = "source"
    Options = PushOptions
    produces = (AudioFrame, EndOfStream)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._rate = check_rate(self.options.sample_rate, "push source")
        self._checked_rate = self._rate  # the last rate validated, checked again on change
        self._end = EndOfStream()  # identity marks our own end, not the upstream's
        self._queue: deque[Frame] = deque()
        self._urgent: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._next_pts = 0.0

    def push_audio(self, pcm: bytes, sample_rate: int | None = None) -> None:
        """Queue PCM16 mono audio; its pts continues the stream time (at any rate).

        Raises:
            ConfigError: odd-length PCM or a bad sample rate.
        """
        rate = sample_rate or self._rate
        if rate != self._checked_rate:
            self._checked_rate = check_rate(rate, "pushed audio")
        size = len(pcm)
        if size & 1:
            check_pcm(pcm, 1, "pushed audio")  # raises, naming the byte count
        pts = self._next_pts
        self._next_pts = pts + size / (2 * rate)
        if type(pcm) is not bytes:  # a caller's buffer may change after the call
            pcm = bytes(pcm)
        frame = AudioFrame(pcm=pcm, sample_rate=rate, pts=pts)
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._deliver, frame)
            return
        # _deliver inlined: a live call's every packet comes this way.
        self._queue.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def push(self, frame: Frame) -> None:
        """Queue any frame."""
        if self._loop is None or threading.get_ident() == self._thread:
            self._deliver(frame)
        else:
            self._loop.call_soon_threadsafe(self._deliver, frame)

    def end(self) -> None:
        """End the stream once what was pushed has been passed on."""
        self.push(self._end)

    def _deliver(self, frame: Frame) -> None:
        (self._urgent if frame.urgent else self._queue).append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _pump(self, upstream: Frames) -> None:
        """Frames from upstream (when the pipeline is fed one) join the pushed ones."""
        async for frame in upstream:
            if not isinstance(frame, EndOfStream):
                self._deliver(frame)

    async def process(self, frames: Frames) -> Frames:
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        pump = self.ctx.spawn(self._pump(frames), name=f"{self.ctx.name}.upstream")
        queue, urgent, end = self._queue, self._urgent, self._end
        popleft = queue.popleft
        try:
            while True:
                if urgent:
                    frame = urgent.popleft()
                elif queue:
                    frame = popleft()
                else:
                    waiter = self._waiter = loop.create_future()
                    await waiter
                    continue
                if frame is end:
                    yield EndOfStream()
                    return
                if type(frame) is not EndOfStream:
                    yield frame
        finally:
            self._waiter = None
            pump.cancel()


# --- stdin -------------------------------------------------------------------


class StdinOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``stdin`` source."""

    sample_rate: SampleRate = 16000
    """Rate of the raw audio in Hz."""
    channels: Annotated[int, msgspec.Meta(ge=1)] = 1
    """Interleaved channels in the input (mixed down to mono)."""
    frame_ms: FrameMs = 20.0
    """Length of each frame in milliseconds."""


class StdinSource(Stage):
    """Raw PCM16 little-endian audio read from standard input (``sox ... -t raw - |``)."""

    name = "stdin"
    role = "source"
    Options = StdinOptions
    produces = (AudioFrame, EndOfStream)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.input: BinaryIO = sys.stdin.buffer

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        rate = check_rate(opts.sample_rate, "stdin source")
        if opts.channels < 1:
            raise ConfigError(f"stdin source: channels must be 1 or more, got {opts.channels}.")
        size = frame_samples(rate, opts.frame_ms) * 2 * opts.channels
        per_second = 2 * rate * opts.channels
        read = getattr(self.input, "read1", self.input.read)
        buffer = b""
        position = 0  # bytes of input passed on
        while True:
            data = await asyncio.to_thread(read, size)
            buffer += data
            # Whole frames while reading; at the end, whatever is left.
            whole = len(buffer) - len(buffer) % size if data else len(buffer)
            for start in range(0, whole, size):
                chunk = buffer[start : start + size]
                where = f"stdin audio at byte {position + start}"
                check_pcm(chunk, opts.channels, where)
                mono = mix_down(view(chunk, where), opts.channels)
                pts = (position + start) / per_second
                yield AudioFrame(pcm=mono.tobytes(), sample_rate=rate, pts=pts)
            position += whole
            buffer = buffer[whole:]
            if not data:
                break
        yield EndOfStream()


# --- replay ------------------------------------------------------------------


class ReplayOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``replay`` source."""

    path: str
    """A JSON-lines recording written by the ``jsonl`` sink."""
    speed: Speed = 1.0
    """1.0 keeps the recorded timing, 0 replays as fast as possible."""


class _Line(msgspec.Struct):
    t: float
    frame: FrameUnion  # type: ignore[valid-type]


class ReplaySource(Stage):
    """Replays a recorded frame stream with its original timing."""

    name = "replay"
    role = "source"
    Options = ReplayOptions
    produces = (Frame,)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        _check_speed(opts.speed, f"replay source {opts.path!r}")
        lines = _read_lines(Path(opts.path))
        clock = get_clock()
        start = clock.now()
        ended = False
        for count, (t, frame) in enumerate(lines, 1):
            if opts.speed > 0:
                await clock.sleep_until(start + t / opts.speed)
            elif count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if isinstance(frame, EndOfStream):
                ended = True
            yield frame
            if ended:
                return
        yield EndOfStream()


def _read_lines(path: Path) -> list[tuple[float, Frame]]:
    """Parse a recording; errors name the file and line."""
    decoder = msgspec.json.Decoder(_Line)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"replay file {str(path)!r} cannot be read: {exc.strerror or exc}."
        ) from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ConfigError(
                f"replay file {str(path)!r} line {number} is not a recorded frame: {exc}."
            ) from exc
        if isinstance(item.frame, AudioFrame):
            check_rate(item.frame.sample_rate, f"replay file {str(path)!r} line {number}")
            check_pcm(
                item.frame.pcm, item.frame.channels, f"replay file {str(path)!r} line {number}"
            )
        out.append((item.t, item.frame))
    return out


# --- microphone --------------------------------------------------------------


class MicrophoneOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``microphone`` source."""

    sample_rate: SampleRate = 16000
    """Capture rate in Hz."""
    frame_ms: FrameMs = 20.0
    """Length of each frame in milliseconds."""
    device: str | int | None = None
    """Input device name or index (sounddevice's numbering); the default device when empty."""
    duration_ms: DurationMs = 0.0
    """Stop after this long (ms); 0 captures until the pipeline stops."""


class MicrophoneSource(Stage):
    """Live capture from a microphone through the optional ``sounddevice`` package."""

    name = "microphone"
    role = "source"
    Options = MicrophoneOptions
    produces = (AudioFrame, EndOfStream)

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        rate = check_rate(opts.sample_rate, "microphone source")
        sd = _sounddevice("microphone source")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        size = frame_samples(rate, opts.frame_ms)

        def captured(data: Any, _count: int, _time: Any, _status: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

        try:
            stream = sd.RawInputStream(
                samplerate=rate,
                blocksize=size,
                device=opts.device,
                channels=1,
                dtype="int16",
                callback=captured,
            )
        except Exception as exc:  # PortAudioError and ValueError for a bad device
            raise ConfigError(f"microphone source: cannot open the input device: {exc}.") from exc
        limit = round(rate * opts.duration_ms / 1000) if opts.duration_ms > 0 else None
        taken = 0
        with stream:
            while limit is None or taken < limit:
                pcm = await queue.get()
                yield AudioFrame(pcm=pcm, sample_rate=rate, pts=taken / rate)
                taken += len(pcm) // 2
        yield EndOfStream()


def _sounddevice(where: str) -> Any:
    """Import sounddevice or explain which extra provides it."""
    try:
        import sounddevice
    except ImportError as exc:
        raise ConfigError(
            f"{where} needs the 'sounddevice' extra: pip install 'pipeflow[sounddevice]'."
        ) from exc
    except OSError as exc:  # the package is there but PortAudio is not
        raise ConfigError(
            f"{where}: sounddevice cannot load PortAudio ({exc}); install the PortAudio "
            "library (e.g. apt-get install libportaudio2)."
        ) from exc
    return sounddevice
