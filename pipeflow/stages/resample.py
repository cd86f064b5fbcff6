"""The ``resample`` stage: soxr streaming conversion of audio frames to one rate.

Only frames at another rate are converted; the rest pass untouched. Caller
audio and agent audio (``item_id`` set) each get their own soxr stream, so
interleaved directions never mix filter state. A stream is flushed and
recreated when its input rate changes, flushed when the agent moves to a
new item, dropped on an ``Interrupt`` (the agent's unplayed audio is void)
and flushed at ``EndOfStream``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from pipeflow.audio.pcm import SampleRate, check_rate, mix_down, view
from pipeflow.audio.resampler import Quality, StreamResampler
from pipeflow.errors import ConfigError
from pipeflow.frames import AudioFrame, EndOfStream, Interrupt
from pipeflow.stage import Frames, Stage

__all__ = ["Resample", "ResampleOptions"]


class ResampleOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``resample`` stage."""

    rate: SampleRate | None = None
    """Output rate in Hz; empty takes the input rate of the nearest later stage declaring one."""
    quality: Quality = "HQ"
    """soxr quality: VHQ, HQ (default), MQ, LQ or QQ."""
    dither: bool = True
    """Let soxr dither its 16-bit output (fastest); false gives output identical whatever the
    chunking, for about 1.5x the CPU."""


class _Stream:
    """A soxr stream and the stream time of its first input sample."""

    __slots__ = ("item_id", "pts", "resampler")

    def __init__(self, resampler: StreamResampler, pts: float, item_id: str) -> None:
        self.resampler = resampler
        self.pts = pts
        self.item_id = item_id

    def frame(self, samples: Any) -> AudioFrame:
        """An output frame for ``samples``, just produced by the resampler."""
        return self.pcm_frame(samples.tobytes())

    def pcm_frame(self, pcm: bytes) -> AudioFrame:
        """An output frame for ``pcm``, just produced by the resampler."""
        resampler = self.resampler
        start = (resampler.samples_out - len(pcm) // 2) / resampler.out_rate
        return AudioFrame(
            pcm=pcm, sample_rate=resampler.out_rate, pts=self.pts + start, item_id=self.item_id
        )


class Resample(Stage):
    """Converts audio frames to one sample rate with soxr (PCM16 mono out)."""

    name = "resample"
    Options = ResampleOptions
    consumes = (AudioFrame,)
    produces = (AudioFrame,)

    def target_rate(self) -> int:
        """The output rate: the ``rate`` option or a later stage's ``input_rate``.

        Raises:
            ConfigError: no rate given and no later stage declares one.
        """
        if self.options.rate is not None:
            return check_rate(self.options.rate, "resample option 'rate'")
        for later in self.ctx.downstream_stages():
            rate = getattr(later, "input_rate", None)
            if rate:
                return check_rate(rate, f"input_rate of stage {later.describe()!r}")
        raise ConfigError(
            "resample: no 'rate' option is set and no later stage declares an input rate; "
            "set rate (e.g. rate: 24000)."
        )

    @property
    def input_rate(self) -> int | None:
        """The rate this stage wants is whatever the stage after it wants (chains pass it on)."""
        return self.options.rate

    async def process(self, frames: Frames) -> Frames:
        target = self.target_rate()
        quality, dither = self.options.quality, self.options.dither
        streams: dict[bool, _Stream] = {}  # keyed by "is agent audio"
        async for frame in frames:
            if type(frame) is not AudioFrame:
                if isinstance(frame, EndOfStream):
                    for stream in streams.values():
                        tail = stream.resampler.flush()
                        if tail.size:
                            yield stream.frame(tail)
                    streams.clear()
                elif isinstance(frame, Interrupt):
                    streams.pop(True, None)  # the agent's unplayed audio is void
                yield frame
                continue
            rate = frame.sample_rate
            agent = frame.item_id != ""
            stream = streams.get(agent)
            if stream is not None and (
                stream.resampler.in_rate != rate or stream.item_id != frame.item_id
            ):
                tail = stream.resampler.flush()
                if tail.size:
                    yield stream.frame(tail)
                del streams[agent]
                stream = None
            if rate == target:
                yield frame
                continue
            if stream is None:
                check_rate(rate, f"resample input frame at pts {frame.pts:.3f} s")
                resampler = StreamResampler(rate, target, quality, dither)
                stream = streams[agent] = _Stream(resampler, frame.pts, frame.item_id)
            pcm = frame.pcm
            if len(pcm) & 1 or frame.channels != 1:
                pcm = _checked(frame).tobytes()
            resampler = stream.resampler
            out = resampler.convert(pcm)
            if out:  # pcm_frame, inlined: this runs per frame
                rate_out = resampler.out_rate
                yield AudioFrame(
                    pcm=out, sample_rate=rate_out, item_id=stream.item_id,
                    pts=stream.pts + (resampler.samples_out - len(out) // 2) / rate_out,
                )


def _checked(frame: AudioFrame) -> np.ndarray:
    """Mono int16 samples of an unusual frame (odd length raises, channels mixed down)."""
    where = f"resample input frame at pts {frame.pts:.3f} s"
    samples = view(frame.pcm, where)
    return mix_down(samples, frame.channels, where) if frame.channels != 1 else samples
