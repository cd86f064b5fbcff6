"""The end_of_turn stage in pipelines: espeak-ng speech through vad -> end_of_turn, and
a whole session on the manual clock (barge-in from the true onset, backchannels)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeflow import AgentSession, Pipeline
from pipeflow.audio.clock import ManualClock, set_clock
from pipeflow.config import parse_config
from pipeflow.errors import ConfigError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Interrupt,
    ResponseDone,
    SpeechConfirmed,
    SpeechStarted,
    TurnCommitted,
)
from pipeflow.stages.end_of_turn import EndOfTurn, build_model
from pipeflow.stages.vad import Vad
from pipeflow.testing import run_stage
from tests.speech import need_tts, spoken
from tests.test_session import DEMO, ClockedSink, demo_agent, make


def frames_of(samples: np.ndarray, rate: int) -> list[AudioFrame]:
    size = rate // 50
    return [AudioFrame(pcm=samples[i : i + size].tobytes(), sample_rate=rate, pts=i / rate)
            for i in range(0, samples.size - size + 1, size)]


def track(*parts: str | float, rate: int = 16000) -> tuple[np.ndarray, list[float]]:
    """Speech and silences (seconds) in order; returns the samples and each speech's end."""
    out, ends, at = [], [], 0
    for part in parts:
        chunk = np.zeros(round(part * rate), np.int16) if isinstance(part, float) \
            else spoken(part, rate)
        out.append(chunk)
        at += chunk.size
        if not isinstance(part, float):
            ends.append(at / rate)
    return np.concatenate(out), ends


async def through(samples: np.ndarray, rate: int = 16000, **options: object) -> list:
    vad = await run_stage(Vad(commit_on_silence=False, min_silence_ms=150),
                          frames_of(samples, rate))
    result = await run_stage(EndOfTurn(**options), vad.down)
    return [f for f in result.down if not isinstance(f, AudioFrame | EndOfStream)]


async def test_a_short_answer_is_committed_once_after_a_bounded_delay() -> None:
    need_tts()
    samples, [end] = track(1.0, "That's all.", 2.0)
    events = await through(samples)
    commits = [f for f in events if isinstance(f, TurnCommitted)]
    assert len(commits) == 1
    assert 0.15 <= commits[0].at - end <= 1.5 + 0.05  # within min..max delay of the VAD's stop
    starts = [f for f in events if isinstance(f, SpeechStarted)]
    assert starts and all(f.tentative for f in starts)


async def test_a_pause_under_the_minimum_delay_never_splits_the_turn() -> None:
    # Without words the model may call any pause an end; min_delay_ms bounds how soon.
    need_tts()
    samples, ends = track(1.0, "I'd like,", 0.6, "um,", 0.5, "two pizzas.", 2.5)
    events = await through(samples, min_delay_ms=700, max_delay_ms=1200)
    commits = [f.at for f in events if isinstance(f, TurnCommitted)]
    assert len(commits) == 1 and commits[0] > ends[-1]


async def test_long_speech_is_confirmed_a_noise_burst_is_not() -> None:
    need_tts()
    samples, _ = track(1.0, "Actually, make it three pizzas.", 2.0)
    events = await through(samples, interrupt_min_ms=700)
    assert any(isinstance(f, SpeechConfirmed) for f in events)
    rng = np.random.default_rng(3)
    burst = np.concatenate([np.zeros(16000, np.int16),
                            (rng.normal(0, 6000, 3200)).astype(np.int16),
                            np.zeros(32000, np.int16)])
    events = await through(burst, interrupt_min_ms=700)
    assert not any(isinstance(f, SpeechConfirmed) for f in events)


async def test_a_vad_that_commits_itself_is_refused() -> None:
    stages = [make("push", sample_rate=16000), Vad(commit_on_silence=True), EndOfTurn(),
              make("null", realtime=False)]
    frames = [f async for f in Pipeline(stages).stream()]
    [error] = [f for f in frames if isinstance(f, ErrorFrame)]
    assert error.fatal and error.stage == "end_of_turn"
    assert "commit_on_silence: false" in error.message


def test_a_model_is_named_by_reference() -> None:
    assert build_model("prosody").probability  # type: ignore[truthy-function]
    with pytest.raises(ConfigError):
        build_model("pipeflow.turn_detect.lexicon:HOLD")


class Model:
    """A plug-in model for the reference test."""

    def probability(self, turn: object) -> float:
        return 0.5


def test_a_plugin_model_class_is_instantiated() -> None:
    assert isinstance(build_model("tests.test_turn_stage:Model"), Model)


async def over_the_greeting(text: str, at_s: float = 0.5):  # type: ignore[no-untyped-def]
    """The greeting plays on the manual clock; the caller says ``text`` ``at_s`` into it."""
    clock = ManualClock()
    set_clock(clock)
    try:
        sink = ClockedSink(clock)
        transport = make("realtime", script=DEMO, response_on_start=True, speed=0)
        stages = [make("push", sample_rate=16000), make("resample"),
                  make("vad", commit_on_silence=False, min_silence_ms=150),
                  make("end_of_turn", interrupt_min_ms=900), transport, make("tools"),
                  make("callbacks"), sink]
        session = AgentSession(demo_agent(), pipeline=Pipeline(stages))
        async with session:
            await session.wait_for(ResponseDone, 20)
            await clock.advance(at_s, step=0.02)
            onset = clock.now()
            speech = np.concatenate([np.zeros(3200, np.int16), spoken(text, 16000),
                                     np.zeros(16000 * 3, np.int16)])
            for start in range(0, speech.size, 320):
                await session.stream_audio(speech[start : start + 320].tobytes(), 16000)
                await clock.advance(0.02, step=0.02)
            [server_session] = transport.server.sessions
            truncated = dict(server_session.truncated)
            frames = list(session.frames)
    finally:
        set_clock(None)
    return onset + 0.2, sink, truncated, frames, session


async def test_a_barge_in_stops_the_agent_within_150_ms_of_the_true_onset() -> None:
    need_tts()
    onset, sink, truncated, frames, session = await over_the_greeting(
        "What is two plus three?")
    assert any(isinstance(f, Interrupt) for f in frames)
    item = sink.played[0][1]
    played = [(t, s) for t, i, s in sink.played if i == item]
    stopped = max(t + s for t, s in played)
    assert stopped - onset <= 0.15, stopped - onset
    assert abs(truncated[item] - 1000 * sum(s for _, s in played)) <= 20 + 1e-6
    first = session.conversation.turns[0]
    assert first.interrupted and 0 < first.heard_ms == truncated[item]
    assert "[interrupted after" in session.conversation.transcript()


async def test_a_backchannel_pauses_the_agent_which_then_plays_on_to_the_end() -> None:
    need_tts()
    _, sink, truncated, frames, session = await over_the_greeting("Okay.", at_s=0.3)
    assert not any(isinstance(f, Interrupt) for f in frames)
    assert truncated == {}
    item = sink.played[0][1]
    times = [t for t, i, _ in sink.played if i == item]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) > 0.2  # it held while the caller spoke...
    assert [t.role for t in session.conversation.turns] == ["agent"]  # ...and nobody answered
    assert not session.conversation.turns[0].interrupted


@pytest.mark.parametrize(("yaml", "says"), [
    ("min_delay_ms: 900\n    max_delay_ms: 500", "max_delay_ms (500) must be at least"),
    ("interrupt_min_ms: -1", "interrupt_min_ms"),
    ("recogniser: {type: whisper}", "recogniser"),
    ("interupt_min_ms: 500", "interupt_min_ms"),
])
def test_bad_yaml_options_name_the_stage_and_the_option(yaml: str, says: str) -> None:
    text = ("stages:\n  - type: vad\n    commit_on_silence: false\n"
            f"  - type: end_of_turn\n    {yaml}\n")
    with pytest.raises(ConfigError) as error:
        parse_config(text, "p.yaml")
    assert "p.yaml" in str(error.value) and "end_of_turn" in str(error.value)
    assert says in str(error.value)


async def test_where_calls_are_served_the_recogniser_decodes_in_a_child_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipeflow serve`` decodes in child processes; the end_of_turn recogniser did
    not: pocketsphinx holds the GIL, so its decodes in a thread of the gateway held
    the loop every call shares (a soak's /healthz waited up to 5.5 s with 8 calls, and
    a call's model handshake timed out). Switched on, the stage's recogniser is the
    process's shared ``ProcessTranscriber`` (a child starts on its first decode)."""
    from pipeflow.asr import process
    from pipeflow.asr.options import TranscriberOptions

    recogniser = TranscriberOptions(sentences=["that's all", "two pizzas please"])
    made: list[object] = []
    shared = process.shared_process_transcriber

    def recorded(options: TranscriberOptions, where: str = "script") -> object:
        made.append(found := shared(options, where))
        return found

    monkeypatch.setattr(process, "shared_process_transcriber", recorded)
    monkeypatch.setitem(process._switch, "on", False)
    await through(np.zeros(16000, np.int16), recogniser=recogniser)
    assert made == []  # a single run decodes in a thread: a child would only add start-up
    monkeypatch.setitem(process._switch, "on", True)
    await through(np.zeros(16000, np.int16), recogniser=recogniser)
    assert len(made) == 1 and isinstance(made[0], process.ProcessTranscriber)
    assert made[0].options == recogniser


async def test_with_a_recogniser_a_short_command_is_confirmed_a_backchannel_is_not() -> None:
    need_tts()
    pytest.importorskip("pocketsphinx")
    recogniser = {"sentences": ["stop", "okay", "two pizzas please"]}
    samples, _ = track(1.0, "Stop.", 2.0)
    events = await through(samples, recogniser=recogniser)
    [confirmed] = [f for f in events if isinstance(f, SpeechConfirmed)]
    assert confirmed.words == "stop" and confirmed.at < 1.05
    samples, _ = track(1.0, "Okay.", 2.0)
    events = await through(samples, recogniser=recogniser)
    assert not any(isinstance(f, SpeechConfirmed) for f in events)
    samples, _ = track(1.0, "Stop.", 2.0)
    events = await through(samples, recogniser=recogniser, commands=[])
    assert not any(isinstance(f, SpeechConfirmed) for f in events)  # spotting off: too short
