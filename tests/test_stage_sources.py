"""Audio sources: frames, stream time, pacing on the shared clock, and bad input."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.errors import ConfigError
from pipeflow.frames import AudioFrame, EndOfStream, SpeechStarted, TextInput
from pipeflow.pipeline import Pipeline
from pipeflow.stages.sinks import JsonlSink
from pipeflow.stages.sources import (
    MicrophoneSource,
    PushSource,
    ReplaySource,
    SilenceSource,
    StdinSource,
    ToneSource,
    WavSource,
)
from tests.speech import write_wav

RATE = 16000
SIGNAL = (np.arange(RATE) % 200 * 100 - 10000).astype(np.int16)  # one second


async def collect(*stages) -> list:
    out: list = []
    result = await Pipeline(list(stages)).run(on_frame=out.append)
    assert not result.errors, result.errors
    return out


@pytest.fixture
async def clock():
    manual = ManualClock()
    set_clock(manual)
    yield manual
    set_clock(None)


async def test_wav_source_frames_cover_the_file(tmp_path: Path):
    path = write_wav(tmp_path / "a.wav", SIGNAL, RATE)
    out = await collect(WavSource(path=str(path), speed=0, frame_ms=30))
    audio = out[:-1]
    assert isinstance(out[-1], EndOfStream)
    assert [f.pts for f in audio[:3]] == pytest.approx([0.0, 0.03, 0.06])
    assert all(f.sample_rate == RATE for f in audio)
    joined = np.concatenate([np.frombuffer(f.pcm, "<i2") for f in audio])
    assert np.array_equal(joined, SIGNAL)


async def test_wav_source_paces_in_real_time_on_the_shared_clock(tmp_path: Path, clock):
    path = write_wav(tmp_path / "a.wav", SIGNAL[:8000], RATE)  # 0.5 s = 25 frames
    arrivals: list[tuple[float, float]] = []

    async def run() -> None:
        pipeline = Pipeline([WavSource(path=str(path), start_delay_ms=100)])
        async for frame in pipeline.stream():
            if isinstance(frame, AudioFrame):
                arrivals.append((frame.pts, clock.now()))

    task = asyncio.create_task(run())
    await settle()  # let the pipeline reach its first sleep at clock time 0
    await clock.advance(0.305)
    assert len(arrivals) == 11  # 0.1 s delay, then frames at 0.0 .. 0.2 s of stream time
    await clock.advance(0.4)
    await task
    assert len(arrivals) == 25
    assert all(now == pytest.approx(0.1 + pts, abs=0.0011) for pts, now in arrivals)


async def test_speed_two_is_twice_as_fast(tmp_path: Path, clock):
    path = write_wav(tmp_path / "a.wav", SIGNAL[:8000], RATE)
    task = asyncio.create_task(collect(WavSource(path=str(path), speed=2.0)))
    await asyncio.sleep(0)
    await clock.advance(0.25)
    assert task.done()
    assert len(task.result()) == 26


async def test_loop_repeats_with_growing_pts(tmp_path: Path):
    path = write_wav(tmp_path / "a.wav", SIGNAL[:1600], RATE)  # 0.1 s
    frames = []
    async for frame in WavSource(path=str(path), speed=0, loop=True).process(_nothing()):
        frames.append(frame)
        if len(frames) == 12:
            break
    assert frames[-1].pts == pytest.approx(0.22)


async def _nothing():
    return
    yield


async def test_bad_wav_files_name_the_file(tmp_path: Path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    result = await Pipeline([WavSource(path=str(bad))]).run()
    assert "notes.wav" in result.errors[0].message
    assert "not a WAV file" in result.errors[0].message
    # A bad option is refused when the stage is made, as in a pipeline file.
    with pytest.raises(ConfigError, match=r"stage wav, option 'speed': must be >= 0\.0, got -1"):
        WavSource(path=str(tmp_path / "x.wav"), speed=-1)


async def test_tone_and_silence():
    tone = await collect(ToneSource(frequency=1000, duration_ms=100, sample_rate=8000, speed=0))
    samples = np.concatenate([np.frombuffer(f.pcm, "<i2") for f in tone[:-1]])
    assert samples.size == 800
    assert np.abs(samples).max() == pytest.approx(16383, abs=2)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) == 100  # 1000 Hz at 10 Hz per bin
    quiet = await collect(SilenceSource(duration_ms=60, speed=0))
    assert len(quiet) == 4 and not any(any(f.pcm) for f in quiet[:-1])
    result = await Pipeline([ToneSource(frequency=9000, sample_rate=16000)]).run()
    assert "half the sample rate" in result.errors[0].message


async def test_push_source_from_the_loop_and_from_a_thread():
    push = PushSource(sample_rate=8000)
    push.push_audio(b"\0\0" * 160)  # before the run: waits
    pipeline = Pipeline([push])
    out: list = []
    task = asyncio.create_task(pipeline.run(on_frame=out.append))
    await asyncio.sleep(0)
    push.push(TextInput(text="hello"))
    thread = threading.Thread(target=lambda: (push.push_audio(b"\1\0" * 80, 8000), push.end()))
    thread.start()
    thread.join()
    await asyncio.wait_for(task, 5)
    assert [type(f).__name__ for f in out] == [
        "AudioFrame",
        "TextInput",
        "AudioFrame",
        "EndOfStream",
    ]
    assert out[2].pts == pytest.approx(0.02)


async def test_push_source_urgent_frames_overtake_and_upstream_frames_join():
    from pipeflow.frames import Interrupt

    push = PushSource(sample_rate=8000)
    for _ in range(3):
        push.push_audio(bytearray(b"\1\0" * 80))  # a caller's buffer: copied
    push.push(Interrupt())
    push.end()

    async def upstream():
        yield TextInput(text="from upstream")

    out = [f async for f in Pipeline([push]).stream(upstream())]
    names = [type(f).__name__ for f in out]
    assert names[0] == "Interrupt" and names[-1] == "EndOfStream"
    assert names.count("AudioFrame") == 3
    audio = [f for f in out if type(f).__name__ == "AudioFrame"]
    assert all(type(f.pcm) is bytes for f in audio)
    assert [f.pts for f in audio] == pytest.approx([0.0, 0.01, 0.02])


async def test_push_source_pts_continue_across_a_rate_change():
    push = PushSource(sample_rate=8000)
    push.push_audio(b"\0\0" * 80)  # 10 ms at 8 kHz
    push.push_audio(b"\0\0" * 160, 16000)  # 10 ms at 16 kHz
    push.push_audio(b"\0\0" * 80)
    push.end()
    out = await collect(push)
    assert [f.pts for f in out[:-1]] == pytest.approx([0.0, 0.01, 0.02])
    with pytest.raises(Exception, match="sample rate"):
        push.push_audio(b"\0\0", 0.5)  # type: ignore[arg-type]


async def test_push_source_rejects_bad_audio():
    push = PushSource()
    with pytest.raises(Exception, match=r"even|multiple of 2"):
        push.push_audio(b"\0\0\0")
    with pytest.raises(Exception, match="sample rate"):
        push.push_audio(b"\0\0", -1)


async def test_stdin_source_reads_raw_pcm_and_mixes_down():
    stereo = np.stack([SIGNAL[:800], SIGNAL[:800]], axis=1).reshape(-1).astype("<i2")
    source = StdinSource(sample_rate=RATE, channels=2, frame_ms=20)
    source.input = io.BytesIO(stereo.tobytes())
    out = await collect(source)
    joined = np.concatenate([np.frombuffer(f.pcm, "<i2") for f in out[:-1]])
    assert np.array_equal(joined, SIGNAL[:800])
    assert out[1].pts == pytest.approx(0.02)


async def test_stdin_source_odd_trailing_byte_is_named():
    source = StdinSource()
    source.input = io.BytesIO(b"\0" * 641)
    result = await Pipeline([source]).run()
    assert "stdin audio at byte 640" in result.errors[0].message


async def test_jsonl_recording_replays_with_its_timing(tmp_path: Path, clock):
    path = tmp_path / "rec.jsonl"
    push = PushSource()
    recording = Pipeline([push, JsonlSink(path=str(path))])
    task = asyncio.create_task(recording.run())
    await asyncio.sleep(0)
    push.push_audio(b"\1\0" * 320)
    await clock.advance(0.5)
    push.push(SpeechStarted(at=0.01))
    await clock.advance(0.25)
    push.end()
    await task
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and '"t":0.500000' in lines[1]

    arrivals: list = []

    async def replay() -> None:
        async for frame in Pipeline([ReplaySource(path=str(path))]).stream():
            arrivals.append((type(frame).__name__, clock.now()))

    start = clock.now()
    task = asyncio.create_task(replay())
    await clock.advance(0.8)
    await task
    assert [name for name, _ in arrivals] == ["AudioFrame", "SpeechStarted", "EndOfStream"]
    assert [t - start for _, t in arrivals] == pytest.approx([0.0, 0.5, 0.75], abs=0.002)


async def test_replay_errors_name_file_and_line(tmp_path: Path):
    path = tmp_path / "rec.jsonl"
    path.write_text('{"t": 0, "frame": {"type": "end_of_stream"}}\n{"t": 1, "frame": 7}\n')
    result = await Pipeline([ReplaySource(path=str(path))]).run()
    assert "rec.jsonl' line 2" in result.errors[0].message


async def test_microphone_without_sounddevice_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    result = await Pipeline([MicrophoneSource()]).run()
    assert "needs the 'sounddevice' extra" in result.errors[0].message


async def test_synthetic_sources_make_each_frame_when_it_is_due() -> None:
    """An hour of tone streams in a frame's worth of memory, and is the exact sine."""
    import tracemalloc

    from pipeflow.stages.sources import ToneSource

    frames = ToneSource(duration_ms=1010, speed=0, frequency=440, amplitude=0.5).process(_none())
    pcm = b"".join([f.pcm async for f in frames if isinstance(f, AudioFrame)])
    expected = np.rint(np.sin(2 * np.pi * 440 * np.arange(16160) / 16000) * 0.5 * 32767)
    assert np.array_equal(np.frombuffer(pcm, np.int16), expected.astype(np.int16))

    tracemalloc.start()
    try:
        count = 0
        async for frame in ToneSource(duration_ms=3_600_000, speed=0).process(_none()):
            count += isinstance(frame, AudioFrame)
            if count == 2000:  # 40 s in: the whole hour would be 115 MB
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


async def _none():  # type: ignore[no-untyped-def]
    return
    yield


@settings(max_examples=40, deadline=None)
@given(
    pushes=st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from([None, 8000, 16000, 24000])),
        min_size=0, max_size=30,
    ),
    urgent_at=st.integers(0, 30),
)
async def test_pushed_audio_comes_out_whole_in_order_on_one_time_line(
    pushes: list[tuple[int, int | None]], urgent_at: int
):
    from pipeflow.frames import Interrupt

    push = PushSource(sample_rate=16000)
    sent = []
    for index, (samples, rate) in enumerate(pushes):
        if index == urgent_at:
            push.push(Interrupt())
        pcm = bytes((index + k) % 256 for k in range(2 * samples))
        push.push_audio(pcm, rate)
        sent.append((pcm, rate or 16000))
    push.end()
    out = await collect(push)
    assert type(out[-1]).__name__ == "EndOfStream"
    audio = [f for f in out if type(f).__name__ == "AudioFrame"]
    assert [(f.pcm, f.sample_rate) for f in audio] == sent
    # Each frame starts where the previous one ended, whatever its rate.
    end = 0.0
    for frame in audio:
        assert frame.pts == pytest.approx(end, abs=1e-9)
        end = frame.pts + frame.duration
    if urgent_at < len(pushes):
        assert type(out[0]).__name__ == "Interrupt"  # it overtook every queued frame
