"""The vad stage: audio passes undelayed, boundary frames follow in stream order."""

from __future__ import annotations

import numpy as np
import pytest

from pipeflow.frames import AudioFrame, EndOfStream, SpeechStarted, SpeechStopped, TurnCommitted
from pipeflow.stages.vad import Vad
from pipeflow.testing import run_stage
from tests.speech import need_tts, speech_track


def frames_of(samples: np.ndarray, rate: int, item_id: str = "") -> list[AudioFrame]:
    size = rate // 50
    return [
        AudioFrame(
            pcm=samples[i : i + size].tobytes(), sample_rate=rate, pts=i / rate, item_id=item_id
        )
        for i in range(0, samples.size, size)
    ]


async def test_events_follow_the_audio_that_confirmed_them():
    need_tts()
    track = speech_track(("Yes, please.", "Two pizzas."), (1.0,), sample_rate=16000)
    frames = frames_of(track.samples, 16000)
    result = await run_stage(Vad(min_silence_ms=300), frames)
    audio = [f for f in result.down if isinstance(f, AudioFrame)]
    assert audio == frames  # unchanged, undelayed, in order
    events = [f for f in result.down if not isinstance(f, AudioFrame | EndOfStream)]
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped, TurnCommitted] * 2
    for index, frame in enumerate(result.down):
        if isinstance(frame, SpeechStarted | SpeechStopped | TurnCommitted):
            before = [f for f in result.down[:index] if isinstance(f, AudioFrame)][-1]
            assert frame.at <= before.pts + before.duration + 1e-9  # never ahead of the audio
    starts = [e.at for e in events if isinstance(e, SpeechStarted)]
    assert starts == pytest.approx([a for a, _ in track.segments], abs=0.15)


async def test_agent_audio_is_not_analysed_and_open_speech_closes_at_the_end():
    need_tts()
    track = speech_track(("Hello there.",), (), sample_rate=16000, tail=0.0)
    agent = await run_stage(Vad(), frames_of(track.samples, 16000, item_id="item_1"))
    assert [type(f) for f in agent.down if not isinstance(f, AudioFrame)] == [EndOfStream]
    caller = await run_stage(Vad(), frames_of(track.samples, 16000))
    kinds = [type(f) for f in caller.down if not isinstance(f, AudioFrame)]
    assert kinds == [SpeechStarted, SpeechStopped, TurnCommitted, EndOfStream]


async def test_odd_length_frame_is_an_error_naming_its_time():
    bad = AudioFrame(pcm=b"\0\0\0", sample_rate=16000, pts=3.0)
    result = await run_stage(Vad(), [bad])
    assert "vad input at 3.000 s" in result.errors[0].message


async def test_stereo_frames_are_mixed_down_before_analysis():
    need_tts()
    track = speech_track(("Hello there.",), (), sample_rate=16000)
    mono = await run_stage(Vad(), frames_of(track.samples, 16000))
    stereo_samples = np.repeat(track.samples, 2)  # both channels carry the speech
    stereo = [
        AudioFrame(pcm=f.pcm, sample_rate=16000, channels=2, pts=f.pts)
        for f in frames_of(stereo_samples, 32000)  # 640 stereo samples = 20 ms at 16 kHz
    ]
    mixed = await run_stage(Vad(), stereo)
    events = [f for f in mono.down if not isinstance(f, AudioFrame)]
    assert [f for f in mixed.down if not isinstance(f, AudioFrame)] == events


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (AudioFrame(pcm=b"\0\0" * 4, sample_rate=16000, channels=0, pts=1.0), "channel count"),
        (AudioFrame(pcm=b"\0\0" * 5, sample_rate=16000, channels=2, pts=1.0), "divide into 2"),
        (AudioFrame(pcm=b"\0\0" * 4, sample_rate=0, pts=1.0), "sample rate"),
    ],
)
async def test_bad_frames_name_the_frame(frame, message):
    result = await run_stage(Vad(), [frame])
    assert result.errors[0].stage == "vad"
    assert "vad input frame at pts 1.000 s" in result.errors[0].message
    assert message in result.errors[0].message
