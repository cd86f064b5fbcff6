"""The resample stage: chunking-independent output, rate discovery, flushes and bad input."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.errors import ConfigError
from pipeflow.frames import AudioFrame, EndOfStream, Interrupt
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Stage
from pipeflow.stages.resample import Resample, ResampleOptions
from pipeflow.testing import run_stage

SIGNAL = np.rint(
    np.sin(np.arange(4800) * 0.07) * 12000 + np.random.default_rng(5).normal(0, 2000, 4800)
).astype(np.int16)


def frames_of(samples: np.ndarray, rate: int, cuts: list[int], item_id: str = "") -> list:
    out, start = [], 0
    for end in [*sorted(set(cuts)), samples.size]:
        if end > start:
            pcm = samples[start:end].tobytes()
            out.append(AudioFrame(pcm=pcm, sample_rate=rate, pts=start / rate, item_id=item_id))
            start = end
    return out


def joined(frames: list) -> np.ndarray:
    audio = [f for f in frames if isinstance(f, AudioFrame)]
    return np.concatenate([np.frombuffer(f.pcm, "<i2") for f in audio])


def one_shot(samples: np.ndarray, rate_in: int, rate_out: int, quality: str) -> np.ndarray:
    y = soxr.resample(samples.astype(np.float32), rate_in, rate_out, quality=quality)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


rates = st.sampled_from([(16000, 24000), (8000, 24000), (24000, 16000), (44100, 16000)])


@settings(max_examples=25, deadline=None)
@given(
    rates=rates,
    cuts=st.lists(st.integers(1, SIGNAL.size - 1), max_size=30),
    quality=st.sampled_from(["HQ", "VHQ", "QQ"]),
)
async def test_exact_mode_matches_one_shot_whatever_the_chunking(rates, cuts, quality):
    rate_in, rate_out = rates
    stage = Resample(rate=rate_out, quality=quality, dither=False)
    result = await run_stage(stage, frames_of(SIGNAL, rate_in, cuts))
    assert np.array_equal(joined(result.down), one_shot(SIGNAL, rate_in, rate_out, quality))
    assert isinstance(result.down[-1], EndOfStream)


@settings(max_examples=25, deadline=None)
@given(rates=rates, cuts=st.lists(st.integers(1, SIGNAL.size - 1), max_size=30))
async def test_dithered_mode_is_within_soxrs_dither_of_one_shot(rates, cuts):
    rate_in, rate_out = rates
    result = await run_stage(Resample(rate=rate_out), frames_of(SIGNAL, rate_in, cuts))
    out, reference = joined(result.down), one_shot(SIGNAL, rate_in, rate_out, "HQ")
    assert out.size == reference.size
    assert np.abs(out.astype(int) - reference).max() <= 2  # soxr's TPDF dither on int16


async def test_pts_follow_the_output_samples():
    result = await run_stage(
        Resample(rate=24000), frames_of(SIGNAL, 16000, list(range(0, 4800, 320)))
    )
    audio = [f for f in result.down if isinstance(f, AudioFrame)]
    position = 0
    for frame in audio:
        assert frame.sample_rate == 24000
        assert frame.pts == pytest.approx(position / 24000)
        position += frame.samples


async def test_frames_at_the_target_rate_pass_untouched():
    frame = AudioFrame(pcm=SIGNAL[:480].tobytes(), sample_rate=24000, pts=1.0)
    result = await run_stage(Resample(rate=24000), [frame])
    assert result.down[0] is frame


async def test_rate_change_mid_stream_flushes_the_old_stream():
    first = frames_of(SIGNAL[:1600], 16000, [320, 640, 960, 1280])
    second = [AudioFrame(pcm=f.pcm, sample_rate=8000, pts=0.1 + f.pts * 2) for f in first]
    result = await run_stage(Resample(rate=24000, dither=False), first + second)
    out = joined(result.down)
    expected = np.concatenate(
        [one_shot(SIGNAL[:1600], 16000, 24000, "HQ"), one_shot(SIGNAL[:1600], 8000, 24000, "HQ")]
    )
    assert np.array_equal(out, expected)


async def test_agent_and_caller_audio_use_separate_streams():
    caller = frames_of(SIGNAL, 16000, list(range(0, 4800, 320)))
    agent = frames_of(SIGNAL[::-1].copy(), 16000, list(range(0, 4800, 320)), item_id="item_1")
    mixed = [f for pair in zip(caller, agent, strict=True) for f in pair]
    result = await run_stage(Resample(rate=24000, dither=False), mixed)
    down = [f for f in result.down if isinstance(f, AudioFrame)]
    assert np.array_equal(
        joined([f for f in down if not f.item_id]), one_shot(SIGNAL, 16000, 24000, "HQ")
    )
    assert np.array_equal(
        joined([f for f in down if f.item_id]), one_shot(SIGNAL[::-1], 16000, 24000, "HQ")
    )


async def test_interrupt_drops_the_agent_stream():
    agent = frames_of(SIGNAL[:960], 16000, [320, 640], item_id="item_1")
    result = await run_stage(Resample(rate=24000), [*agent, Interrupt()])
    kinds = [type(f).__name__ for f in result.down]
    assert kinds[-2:] == ["Interrupt", "EndOfStream"]  # no stale tail after the interrupt


class _Wants16k(Stage):
    input_rate = 16000


async def test_rate_taken_from_a_later_stage():
    out: list = []
    frames = frames_of(SIGNAL[:960], 24000, [480])
    pipeline = Pipeline([_Feeder(frames), Resample(), _Wants16k()])
    await pipeline.run(on_frame=out.append)
    assert {f.sample_rate for f in out if isinstance(f, AudioFrame)} == {16000}


class _Feeder(Stage):
    def __init__(self, frames: list) -> None:
        super().__init__()
        self.frames = frames

    async def process(self, frames):
        for frame in self.frames:
            yield frame
        yield EndOfStream()


async def test_no_rate_anywhere_is_a_config_error():
    result = await run_stage(Resample(), frames_of(SIGNAL[:320], 16000, []))
    assert result.errors and "no 'rate' option" in result.errors[0].message


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (AudioFrame(pcm=b"\0\0\0", sample_rate=16000, pts=2.5), "frame at pts 2.500 s"),
        (AudioFrame(pcm=b"\0\0", sample_rate=0, pts=0.5), "sample rate"),
        (AudioFrame(pcm=b"\0\0", sample_rate=-8000, pts=0.5), "sample rate"),
    ],
)
async def test_bad_frames_end_the_run_with_a_clear_error(frame, message):
    result = await run_stage(Resample(rate=24000), [frame])
    assert len(result.errors) == 1
    assert message in result.errors[0].message
    assert result.errors[0].stage == "resample"


async def test_bad_rate_option():
    # Refused when the stage is made, as in a pipeline file.
    with pytest.raises(ConfigError, match="stage resample, option 'rate': must be >= 1, got 0"):
        Resample(rate=0)
    with pytest.raises(msgspec.ValidationError, match="quality"):
        msgspec.convert({"quality": "best"}, ResampleOptions)


@pytest.mark.parametrize("dither", [False, True])
def test_compiled_path_matches_soxrs_public_method(dither):
    """The resampler calls soxr's compiled process directly; the public method is the fallback."""
    from pipeflow.audio import resampler as module

    rng = np.random.default_rng(3)
    signal = (rng.standard_normal(16000) * 4000).astype(np.int16)

    def convert(fast: bool) -> np.ndarray:
        stream = module.StreamResampler(16000, 24000, dither=dither)
        if not fast:  # what a soxr without the compiled attribute gets
            stream._chunk = module._compiled_process(_NoCompiled(stream._stream))
        out = [stream.process(signal[i : i + 320]) for i in range(0, signal.size, 320)]
        return np.concatenate([*out, stream.flush()])

    fast, public = convert(True), convert(False)
    assert fast.dtype == public.dtype == np.int16 and fast.ndim == 1
    assert fast.size == public.size == 24000
    if dither:  # soxr seeds its dither per stream: equal within the dither
        assert np.abs(fast.astype(int) - public).max() <= 2
    else:
        assert np.array_equal(fast, public)


@pytest.mark.parametrize("dither", [False, True])
def test_convert_on_bytes_matches_process_on_samples(dither):
    """Bytes in, bytes out (the frame path) gives what the sample path gives, same counts."""
    from pipeflow.audio.resampler import StreamResampler

    rng = np.random.default_rng(5)
    signal = (rng.standard_normal(16000) * 4000).astype(np.int16)
    by_bytes = StreamResampler(16000, 24000, dither=dither)
    by_samples = StreamResampler(16000, 24000, dither=dither)
    got, want = [], []
    for i in range(0, signal.size, 320):
        chunk = signal[i : i + 320]
        out = by_bytes.convert(chunk.tobytes())
        assert isinstance(out, bytes)
        got.append(np.frombuffer(out, "<i2"))
        want.append(by_samples.process(chunk))
        assert by_bytes.samples_out == by_samples.samples_out
    fast, slow = np.concatenate(got), np.concatenate(want)
    assert fast.size == slow.size
    if dither:  # soxr seeds its dither per stream: equal within the dither
        assert np.abs(fast.astype(int) - slow).max() <= 2
    else:
        assert np.array_equal(fast, slow)


class _NoCompiled:
    """A soxr stream seen without its private compiled method."""

    def __init__(self, stream: soxr.ResampleStream) -> None:
        self.resample_chunk = stream.resample_chunk


@pytest.mark.parametrize(
    ("channels", "pcm", "message"),
    [(0, b"\0\0" * 4, "channel count must be at least 1"), (2, b"\0\0" * 5, "divide into 2")],
)
async def test_frames_with_bad_channels_name_the_frame(channels, pcm, message):
    bad = AudioFrame(pcm=pcm, sample_rate=16000, channels=channels, pts=0.5)
    result = await run_stage(Resample(rate=24000), [bad])
    assert "resample input frame at pts 0.500 s" in result.errors[0].message
    assert message in result.errors[0].message
