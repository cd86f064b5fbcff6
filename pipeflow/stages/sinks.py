"""Sinks: WAV files (``wav_sink``), nothing (``null``), JSON-lines recordings, the speaker.

Every sink yields every frame it receives, so sinks chain. Audio sinks keep
a playout clock (``pipeflow.audio.playout``): audio is released at its real
time rate, and an ``Interrupt`` (urgent: it overtakes queued audio, because
audio sinks are duplex) drops what has not played and sends
``PlayoutPosition(item_id, played_ms, interrupted=True)`` upstream for the
Realtime transport to truncate the model's item. An item that plays to its
end is reported with ``interrupted=False``; the first audio of each item
yields ``Metric(name="first_audio_out")`` downstream when it starts playing.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any, BinaryIO, Literal

import msgspec

from pipeflow.audio.clock import get_clock
from pipeflow.audio.pcm import SampleRate, check_rate, mix_down, view
from pipeflow.audio.playout import Chunk, Done, Playout, Started
from pipeflow.audio.resampler import StreamResampler
from pipeflow.audio.wav import WavWriter
from pipeflow.errors import ConfigError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Frame,
    Interrupt,
    Metric,
    PausePlayout,
    PlayoutPosition,
    ResponseDone,
    ResumePlayout,
    encode_json,
)
from pipeflow.stage import Frames, Stage

__all__ = ["AudioSink", "JsonlSink", "NullSink", "SpeakerSink", "WavSink"]


class AudioSinkOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options every audio sink shares."""

    realtime: bool = True
    """Play audio at its real-time rate; false counts audio as played when received."""
    sample_rate: SampleRate | None = None
    """Output rate in Hz (other rates are converted with soxr); empty uses the first frame's."""
    source: Literal["agent", "all"] = "agent"
    """Which audio to play: agent (frames with an item_id, the default) or all."""
    drain: bool = True
    """At end of stream, finish playing what is queued (false drops it)."""


class _DuplexWhenRealtime:
    """``is_duplex`` of audio sinks: a merged input only when playing in real time.

    Without a playout clock nothing queues inside the sink, so an interrupt
    has nothing to overtake, and the sink stays a plain generator hop (no
    pump task per sink: this matters with thousands of sessions). On the
    class (docs) it answers True.
    """

    def __get__(self, sink: AudioSink | None, cls: type) -> Any:
        if sink is None:
            return lambda: True
        return lambda: bool(sink.options.realtime)


class AudioSink(Stage):
    """Base of sinks with a playout clock; subclasses open, write and close the output."""

    Options = AudioSinkOptions
    role = "sink"
    duplex = True
    is_duplex = _DuplexWhenRealtime()  # type: ignore[assignment]
    consumes = (AudioFrame, Interrupt, ResponseDone, PausePlayout, ResumePlayout)
    produces = (Metric, PlayoutPosition)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if self.options.sample_rate is not None:
            check_rate(self.options.sample_rate, f"{self.describe()} sink option 'sample_rate'")
        self.rate: int | None = self.options.sample_rate
        self._playout: Playout | None = None
        self._resampler: StreamResampler | None = None
        self._resampled_item = ""
        self._drained = EndOfStream()  # identity marks "all played", emitted by the ticker
        self._wakeup = asyncio.Event()
        self._ending = False
        self.started = 0.0

    # -- what subclasses provide -------------------------------------------

    async def open(self, sample_rate: int) -> None:
        """Prepare the output once the rate is known (first played frame)."""

    def write(self, chunk: Chunk) -> None:
        """Output a chunk that starts playing now (at ``chunk.start`` on the clock)."""

    async def close(self) -> None:
        """Finish the output (end of stream or shutdown)."""

    # -- the playout loop ----------------------------------------------------

    async def process(self, frames: Frames) -> Frames:
        realtime = self.options.realtime
        play_all = self.options.source == "all"
        clock = get_clock()
        self.started = clock.now()
        ticker = None
        try:
            async for frame in frames:
                if type(frame) is AudioFrame and not (play_all or frame.item_id):
                    yield frame  # audio this sink does not play (the caller's): first, it is most
                    continue
                if type(frame) is AudioFrame:
                    pcm = await self._convert(frame)
                    if pcm:
                        playout = self._playout
                        assert playout is not None
                        now = clock.now() if realtime else playout.end
                        playout.add(pcm, frame.item_id, now)
                        if not realtime:
                            for out in self._release(playout.end):
                                yield out
                        elif ticker is None:
                            ticker = self.ctx.spawn(self._tick(), name=f"{self.ctx.name}.playout")
                        else:
                            self._wakeup.set()
                    yield frame
                elif isinstance(frame, Interrupt):
                    self._interrupt(clock.now() if realtime else self._virtual_now())
                    yield frame
                elif type(frame) is PausePlayout or type(frame) is ResumePlayout:
                    if realtime and self._playout is not None:
                        if type(frame) is PausePlayout:
                            for out in self._release(clock.now()):
                                yield out
                            self._playout.pause(clock.now())
                        else:
                            self._playout.resume(clock.now())
                        self._wakeup.set()
                    yield frame
                elif isinstance(frame, ResponseDone):
                    yield frame
                    if self._playout is not None:
                        await self._flush_resampler(realtime)
                        self._playout.close()
                        if realtime:
                            self._wakeup.set()
                        else:
                            for out in self._release(self._playout.end):
                                yield out
                elif isinstance(frame, EndOfStream):
                    if frame is not self._drained:
                        if self._playout is not None:
                            self._playout.resume(clock.now() if realtime else self._virtual_now())
                        if self._playout is not None and self.options.drain:
                            await self._flush_resampler(realtime)
                            self._playout.close()
                        if self._playout is not None and not self.options.drain:
                            self._interrupt(clock.now() if realtime else self._virtual_now())
                        if realtime and self._playout is not None and not self._playout.idle:
                            self._ending = True  # the ticker emits _drained when all played
                            self._wakeup.set()
                            continue
                        if self._playout is not None:
                            for out in self._release(self._playout.end):
                                yield out
                    await self.close()
                    yield EndOfStream()
                    return
                else:
                    yield frame
        finally:
            if ticker is not None:
                ticker.cancel()
            await self.close()

    def _virtual_now(self) -> float:
        return self._playout.end if self._playout is not None else 0.0

    async def _convert(self, frame: AudioFrame) -> bytes:
        """The frame's audio at the output rate (opening the output on first use)."""
        rate = frame.sample_rate
        if len(frame.pcm) & 1 or frame.channels != 1 or rate != self.rate:
            where = f"{self.ctx.name} sink input frame at pts {frame.pts:.3f} s"
            samples = view(frame.pcm, where)
            if frame.channels != 1:
                samples = mix_down(samples, frame.channels, where)
            check_rate(rate, where)
        if self.rate is None:
            self.rate = rate
        if self._playout is None:
            self._playout = Playout(self.rate)
            await self.open(self.rate)
        if rate == self.rate:
            return samples.tobytes() if frame.channels != 1 else frame.pcm
        if self._resampler is None or self._resampler.in_rate != rate:
            self._resampler = StreamResampler(rate, self.rate)
        self._resampled_item = frame.item_id
        return self._resampler.process(samples).tobytes()

    async def _flush_resampler(self, realtime: bool) -> None:
        if self._resampler is None or self._playout is None:
            return
        tail = self._resampler.flush().tobytes()
        self._resampler = None
        if tail:
            now = get_clock().now() if realtime else self._playout.end
            self._playout.add(tail, self._resampled_item, now)

    def _release(self, now: float) -> list[Frame]:
        """Hand started chunks to the output; report items; return Metrics to yield."""
        assert self._playout is not None
        chunks, events = self._playout.release(now)
        for chunk in chunks:
            self.write(chunk)
        return self._report(events)

    def _report(self, events: list[Started | Done]) -> list[Frame]:
        metrics: list[Frame] = []
        for event in events:
            if not event.item_id:
                continue
            if isinstance(event, Started):
                late = get_clock().now() - event.at if self.options.realtime else 0.0
                value = time.monotonic() - max(0.0, late)
                metrics.append(
                    Metric(stage=self.ctx.name, name="first_audio_out", value=value, unit="s")
                )
            else:
                self.ctx.send_upstream(
                    PlayoutPosition(
                        item_id=event.item_id,
                        played_ms=event.played_ms,
                        interrupted=event.interrupted,
                    )
                )
        return metrics

    def _interrupt(self, now: float) -> None:
        if self._playout is None:
            return
        chunks, done = self._playout.interrupt(now)
        for chunk in chunks:
            self.write(chunk)
        self._report(list(done))
        self._resampler = None
        self._wakeup.set()

    async def _tick(self) -> None:
        """Release audio as the clock reaches it; emit Metrics into our own input."""
        clock = get_clock()
        playout = self._playout
        assert playout is not None
        while True:
            for metric in self._release(clock.now()):
                self.ctx.emit_nowait(metric)
            wake = playout.next_wake()
            if wake is not None:
                await clock.sleep_until(wake)
            elif self._ending:
                self.ctx.emit_nowait(self._drained)
                return
            else:
                self._wakeup.clear()
                await self._wakeup.wait()


# --- null ----------------------------------------------------------------------


class NullSink(AudioSink):
    """Discards audio (keeping the playout clock, so barge-in and latency still work)."""

    name = "null"


# --- wav -----------------------------------------------------------------------


class WavSinkOptions(AudioSinkOptions, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``wav_sink`` sink."""

    path: str
    """The WAV file to write (PCM16 mono at the output rate)."""
    timeline: bool = False
    """Keep the call's timeline: silence where nothing played."""


class WavSink(AudioSink):
    """Records what was played to a WAV file."""

    name = "wav_sink"
    writes = ("path",)
    Options = WavSinkOptions

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._writer: WavWriter | None = None

    async def open(self, sample_rate: int) -> None:
        path = self.ctx.output_path(self.options.path)
        self._writer = WavWriter(path, sample_rate)
        self.ctx.pipeline.outputs["agent audio"] = str(path)

    def write(self, chunk: Chunk) -> None:
        writer = self._writer
        if writer is None:
            return
        if self.options.timeline:
            origin = self.started if self.options.realtime else 0.0
            writer.write_silence(round((chunk.start - origin) * writer.sample_rate) - writer.frames)
        writer.write(chunk.pcm)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self.rate is None and not self.ctx.output_path(self.options.path).exists():
            # Nothing played: still leave an (empty) file where the user expects one.
            WavWriter(self.ctx.output_path(self.options.path), 16000).close()


# --- speaker -------------------------------------------------------------------


class SpeakerOptions(AudioSinkOptions, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``speaker`` sink."""

    device: str | int | None = None
    """Output device name or index for sounddevice; the default device when empty."""
    backend: Literal["auto", "sounddevice", "aplay"] = "auto"
    """How to play: sounddevice (the extra), aplay (ALSA command line) or auto."""


class SpeakerSink(AudioSink):
    """Plays audio on this machine's speaker (sounddevice, or aplay where present)."""

    name = "speaker"
    Options = SpeakerOptions

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._stream: Any = None
        self._process: asyncio.subprocess.Process | None = None

    async def open(self, sample_rate: int) -> None:
        backend = self.options.backend
        if backend in ("auto", "sounddevice"):
            try:
                import sounddevice as sd
            except (ImportError, OSError) as exc:
                if backend == "sounddevice":
                    raise ConfigError(
                        "speaker sink needs the 'sounddevice' extra: "
                        f"pip install 'pipeflow[sounddevice]' ({exc})."
                    ) from exc
            else:
                try:
                    self._stream = sd.RawOutputStream(
                        samplerate=sample_rate,
                        channels=1,
                        dtype="int16",
                        device=self.options.device,
                    )
                    self._stream.start()
                except Exception as exc:  # PortAudioError: no device, bad device
                    raise ConfigError(
                        f"speaker sink: no usable audio output device ({exc})."
                    ) from exc
                return
        aplay = shutil.which("aplay")
        if aplay is None:
            raise ConfigError(
                "speaker sink: no audio output is available: install the 'sounddevice' extra "
                "(pip install 'pipeflow[sounddevice]') or ALSA's aplay."
            )
        args = ["-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", str(sample_rate), "-"]
        self._process = await asyncio.create_subprocess_exec(
            aplay, *args, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )

    def write(self, chunk: Chunk) -> None:
        if self._stream is not None:
            self._stream.write(chunk.pcm)
        elif self._process is not None and self._process.stdin is not None:
            if self._process.returncode is not None:
                raise ConfigError(
                    f"speaker sink: aplay exited with code {self._process.returncode}."
                )
            self._process.stdin.write(chunk.pcm)

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        if self._process is not None:
            process, self._process = self._process, None
            if process.stdin is not None:
                process.stdin.close()
            await process.wait()


# --- jsonl ---------------------------------------------------------------------


class JsonlOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``jsonl`` sink."""

    path: str
    """The file to write: one JSON object per frame, readable by the replay source."""
    skip_audio: bool = False
    """Leave audio frames out (a much smaller log of events)."""


class JsonlSink(Stage):
    """Records every frame as a JSON line ``{"t": seconds since the first frame, "frame": ...}``."""

    name = "jsonl"
    role = "sink"
    writes = ("path",)
    Options = JsonlOptions
    consumes = (Frame,)

    async def process(self, frames: Frames) -> Frames:
        path = self.ctx.output_path(self.options.path)
        self.ctx.pipeline.outputs["frames"] = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in finally
        except OSError as exc:
            raise ConfigError(
                f"jsonl sink cannot create {str(path)!r}: {exc.strerror or exc}."
            ) from exc
        clock = get_clock()
        first: float | None = None
        skip_audio = self.options.skip_audio
        try:
            async for frame in frames:
                if not (skip_audio and type(frame) is AudioFrame):
                    now = clock.now()
                    if first is None:
                        first = now
                    out.write(b'{"t":%.6f,"frame":%b}\n' % (now - first, encode_json(frame)))
                yield frame
                if isinstance(frame, EndOfStream):
                    out.flush()
        finally:
            out.close()
