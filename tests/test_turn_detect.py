"""The turn tracker on stream time: adaptive end of turn and confirmed interruptions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeflow.errors import ConfigError
from pipeflow.frames import SpeechConfirmed, SpeechStarted, SpeechStopped, TurnCommitted
from pipeflow.turn_detect import ProsodyModel, TurnContext, TurnOptions, TurnTracker
from pipeflow.turn_detect.lexicon import meaningful_words, word_signal
from pipeflow.turn_detect.prosody import end_prosody, voicing

RATE = 16000
FRAME = RATE // 50


class FixedModel:
    """Scores every pause the same, noting what it was shown."""

    def __init__(self, probability: float) -> None:
        self.value = probability
        self.seen: list[TurnContext] = []

    def probability(self, turn: TurnContext) -> float:
        self.seen.append(turn)
        return self.value


class Caller:
    """Feeds a tracker 20 ms frames of a tone (speech) or silence, as the VAD would mark them."""

    def __init__(self, tracker: TurnTracker) -> None:
        self.tracker = tracker
        self.t = 0.0
        self.out: list[tuple[float, object]] = []

    def _frame(self, loud: bool) -> None:
        n = np.arange(FRAME) + round(self.t * RATE)
        samples = (np.sin(2 * np.pi * 200 * n / RATE) * (8000 if loud else 30)).astype(np.int16)
        for frame in self.tracker.audio(samples, RATE, self.t):
            self.out.append((self.t + 0.02, frame))
        self.t = round(self.t + 0.02, 6)

    def silence(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self._frame(False)

    def speak(self, seconds: float) -> None:
        start = self.t
        self._frame(True)
        for frame in self.tracker.speech_started(SpeechStarted(at=start)):
            self.out.append((self.t, frame))
        for _ in range(round(seconds / 0.02) - 1):
            self._frame(True)
        for frame in self.tracker.speech_stopped(SpeechStopped(at=self.t)):
            self.out.append((self.t, frame))

    def words(self, text: str) -> None:
        [decode] = self.tracker.decodes_to_run()
        for frame in self.tracker.words(decode.token, text):
            self.out.append((self.t, frame))

    def kinds(self) -> list[type]:
        return [type(f) for _, f in self.out]

    def when(self, kind: type) -> list[float]:
        return [t for t, f in self.out if type(f) is kind]


def test_a_sure_end_commits_after_the_minimum_delay_an_unsure_one_after_the_maximum() -> None:
    options = TurnOptions(min_delay_ms=200, max_delay_ms=1400)
    for probability, delay in ((1.0, 0.2), (0.0, 1.4), (0.5, 0.8)):
        caller = Caller(TurnTracker(options, FixedModel(probability)))
        caller.silence(0.5)
        caller.speak(0.6)
        stop = caller.t
        caller.silence(2.0)
        [commit] = caller.when(TurnCommitted)
        assert commit - stop == pytest.approx(delay, abs=0.021)


def test_speech_in_the_pause_cancels_the_commit_and_the_turn_goes_on() -> None:
    caller = Caller(TurnTracker(TurnOptions(min_delay_ms=200, max_delay_ms=1000,
                                            resume_after_ms=1000), FixedModel(0.0)))
    caller.silence(0.5)
    caller.speak(0.5)
    caller.silence(0.8)  # under max_delay: no commit
    assert caller.when(TurnCommitted) == []
    caller.speak(0.5)
    caller.silence(1.2)
    assert len(caller.when(TurnCommitted)) == 1
    # One episode of speech (the pause was under resume_after_ms), announced once.
    starts = [f for _, f in caller.out if type(f) is SpeechStarted]
    assert len(starts) == 1 and starts[0].tentative


def test_words_rescore_the_pause_a_trailing_and_waits_a_short_yes_commits() -> None:
    options = TurnOptions(min_delay_ms=250, max_delay_ms=1500)
    held = Caller(TurnTracker(options, ProsodyModel(), recognising=True))
    held.silence(0.5)
    held.speak(0.8)
    held.words("i'd like two pizzas and")
    held.silence(1.2)
    assert held.when(TurnCommitted) == []  # a trailing "and": still waiting
    quick = Caller(TurnTracker(options, ProsodyModel(), recognising=True))
    quick.silence(0.5)
    quick.speak(0.4)
    stop = quick.t
    quick.words("yes")
    quick.silence(1.0)
    [commit] = quick.when(TurnCommitted)
    assert commit - stop <= 0.35  # against 1.5 s for the trailing "and"


def test_a_short_burst_over_the_agent_is_dismissed_long_speech_is_confirmed() -> None:
    options = TurnOptions(interrupt_min_ms=600, resume_after_ms=300, max_delay_ms=1500)
    burst = Caller(TurnTracker(options, FixedModel(0.0)))
    burst.silence(0.5)
    burst.speak(0.3)
    burst.silence(1.0)
    assert SpeechConfirmed not in burst.kinds()
    [stopped] = burst.when(SpeechStopped)
    assert stopped - 0.8 == pytest.approx(0.3, abs=0.021)  # resume_after_ms after its end
    meant = Caller(TurnTracker(options, FixedModel(0.0)))
    meant.silence(0.5)
    meant.speak(1.0)
    [confirmed] = meant.when(SpeechConfirmed)
    assert confirmed - 0.5 == pytest.approx(0.6, abs=0.041)  # as soon as it lasts 600 ms


def test_with_words_a_backchannel_never_interrupts_a_short_command_does() -> None:
    options = TurnOptions(interrupt_min_ms=600, interrupt_sure_ms=1500, resume_after_ms=300,
                          interrupt_min_words=1)
    for said, meant in (("mm hmm", False), ("okay", False), ("yeah right", False),
                        ("stop", True), ("no wait", True)):
        caller = Caller(TurnTracker(options, FixedModel(0.0), recognising=True))
        caller.silence(0.5)
        caller.speak(0.4)
        caller.words(said)
        caller.silence(0.6)
        assert (SpeechConfirmed in caller.kinds()) is meant, said
        assert SpeechStopped in caller.kinds()


def test_stale_words_are_ignored_and_end_of_input_closes_the_turn() -> None:
    tracker = TurnTracker(TurnOptions(), FixedModel(0.0), recognising=True)
    caller = Caller(tracker)
    caller.silence(0.3)
    caller.speak(0.4)
    assert tracker.words(999, "yes") == []
    out = tracker.finish()
    assert [type(f) for f in out] == [SpeechStopped, TurnCommitted]


def test_the_model_sees_the_turn_so_far_and_its_speech_time() -> None:
    model = FixedModel(1.0)
    caller = Caller(TurnTracker(TurnOptions(), model))
    caller.silence(0.5)
    caller.speak(0.6)
    [turn] = model.seen
    assert turn.sample_rate == RATE and turn.words is None
    assert turn.speech_s == pytest.approx(0.6, abs=0.021)
    assert turn.audio.size / RATE == pytest.approx(0.65, abs=0.05)


def test_lexicon() -> None:
    assert word_signal("two pizzas and") == -1.0
    assert word_signal("um") == -1.0
    assert word_signal("yes") == 1.0
    assert word_signal("that's all") == 1.0
    assert word_signal("my number is five five five") == 0.0
    assert word_signal("") == 0.0
    assert meaningful_words("mm hmm okay") == 0
    assert meaningful_words("and um") == 0
    assert meaningful_words("no wait") == 2
    assert meaningful_words("hold on") == 1


def test_prosody_of_a_falling_tone_and_of_silence() -> None:
    t = np.arange(RATE) / RATE
    pitch = np.where(t < 0.75, 220.0, 150.0)
    falling = (np.sin(2 * np.pi * np.cumsum(pitch) / RATE) * 8000).astype(np.int16)
    prosody = end_prosody(falling, RATE)
    assert prosody.pitch_fall_st > 4
    assert end_prosody(np.zeros(RATE, np.int16), RATE).voiced == 0


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_delay_ms"):
        TurnOptions(min_delay_ms=900, max_delay_ms=500)
    with pytest.raises(ConfigError, match="interrupt_sure_ms"):
        TurnOptions(interrupt_min_ms=900, interrupt_sure_ms=500)


def _under_noise(caller: Caller, seconds: float, voiced: bool, rng: np.random.Generator) -> None:
    """Frames the VAD does not mark: a vowel at 10 dB over the noise, or a burst of noise."""
    for _ in range(round(seconds / 0.02)):
        n = np.arange(FRAME) + round(caller.t * RATE)
        tone = np.sin(2 * np.pi * 140 * n / RATE) + 0.5 * np.sin(2 * np.pi * 280 * n / RATE)
        sound = tone * 3000 if voiced else rng.normal(0.0, 2400.0, FRAME)
        samples = (sound + rng.normal(0.0, 300.0, FRAME)).astype(np.int16)
        for frame in caller.tracker.audio(samples, RATE, caller.t):
            caller.out.append((caller.t + 0.02, frame))
        caller.t = round(caller.t + 0.02, 6)


@pytest.mark.parametrize(("voiced", "voicing", "meant"), [
    (True, 0.7, True),  # speech the VAD heard only a syllable of: bridged by its voicing
    (True, 0.0, False),  # the VAD's speech alone: too short
    (False, 0.7, False),  # a noise burst as loud and as long: not periodic, not speech
])
def test_voiced_speech_the_vad_misses_counts_towards_an_interruption(
        voiced: bool, voicing: float, meant: bool) -> None:
    options = TurnOptions(interrupt_min_ms=900, resume_after_ms=400, interrupt_voicing=voicing)
    caller = Caller(TurnTracker(options, FixedModel(0.0)))
    rng = np.random.default_rng(1)
    caller.silence(0.5)
    caller.speak(0.2)  # the loudest syllable
    _under_noise(caller, 1.0, voiced, rng)
    caller.silence(1.6)
    assert (SpeechConfirmed in caller.kinds()) is meant
    assert SpeechStopped in caller.kinds()
    if meant:  # confirmed while the speech went on, not when it ended
        [confirmed] = caller.when(SpeechConfirmed)
        assert 1.3 <= confirmed <= 1.5


def test_voicing_is_high_on_a_vowel_under_noise_and_low_on_noise() -> None:
    rng = np.random.default_rng(2)
    n = np.arange(2 * FRAME)
    vowel = np.sin(2 * np.pi * 120 * n / RATE) + 0.6 * np.sin(2 * np.pi * 360 * n / RATE)
    noisy = (vowel * 3000 + rng.normal(0.0, 700.0, n.size)).astype(np.int16)
    assert voicing(noisy, RATE) > 0.8
    assert voicing(rng.normal(0.0, 3000.0, n.size).astype(np.int16), RATE) < 0.4
    assert voicing(np.zeros(n.size, np.int16), RATE) == 0.0


def test_a_level_onset_pauses_before_the_vad_and_steady_noise_never_does() -> None:
    rng = np.random.default_rng(3)
    tracker = TurnTracker(TurnOptions(resume_after_ms=300), FixedModel(0.0))
    out: list[tuple[float, object]] = []
    t = 0.0

    def feed(seconds: float, tone: float) -> None:
        nonlocal t
        for _ in range(round(seconds / 0.02)):
            n = np.arange(FRAME) + round(t * RATE)
            x = rng.normal(0.0, 300.0, FRAME) + tone * np.sin(2 * np.pi * 180 * n / RATE)
            out.extend((t + 0.02, f) for f in tracker.audio(x.astype(np.int16), RATE, t))
            t = round(t + 0.02, 6)

    feed(2.0, 0.0)  # 2 s of steady noise (10 dB under the speech below): nothing
    assert out == []
    feed(0.2, 1400.0)  # a sound the VAD (here: nobody) never calls speech
    [(when, started)] = out
    assert isinstance(started, SpeechStarted) and started.tentative
    assert started.at == pytest.approx(2.0, abs=0.011)
    assert when - 2.0 <= 0.04  # paused within two 10 ms windows, not min_speech_ms later
    feed(0.5, 0.0)
    assert [type(f) for _, f in out] == [SpeechStarted, SpeechStopped]
    assert out[1][0] == pytest.approx(2.2 + 0.3, abs=0.021)  # resumed after resume_after_ms
    off = TurnTracker(TurnOptions(onset_margin_db=0), FixedModel(0.0))
    assert off.audio(np.zeros(FRAME, np.int16), RATE, 0.0) == []
    loud = (np.sin(np.arange(FRAME) / 3) * 8000).astype(np.int16)
    assert off.audio(loud, RATE, 0.02) == []  # only the VAD's onset opens an episode then


@pytest.mark.parametrize(("heard", "meant"), [("stop", True), ("hold on", True), ("", False)])
def test_a_short_burst_is_decoded_for_a_command_and_held_until_it_is_known(
        heard: str, meant: bool) -> None:
    options = TurnOptions(interrupt_min_ms=900, resume_after_ms=300, command_wait_ms=600)
    caller = Caller(TurnTracker(options, FixedModel(0.0), spotting=True))
    caller.silence(0.5)
    caller.speak(0.4)
    [decode] = caller.tracker.decodes_to_run()
    assert decode.kind == "command"
    assert decode.audio.size == pytest.approx(0.45 * RATE, abs=0.03 * RATE)  # the burst
    caller.silence(0.5)  # past resume_after_ms: still paused, the decode is running
    assert SpeechStopped not in caller.kinds() and SpeechConfirmed not in caller.kinds()
    for frame in caller.tracker.words(decode.token, heard):
        caller.out.append((caller.t, frame))
    caller.silence(0.1)
    assert (SpeechConfirmed in caller.kinds()) is meant
    if meant:
        [confirmed] = [f for _, f in caller.out if type(f) is SpeechConfirmed]
        assert confirmed.words == heard  # type: ignore[attr-defined]
    else:
        assert SpeechStopped in caller.kinds()
    lost = Caller(TurnTracker(options, FixedModel(0.0), spotting=True))
    lost.silence(0.5)
    lost.speak(0.4)
    lost.silence(1.2)  # the decode never answers: resumed after the wait, not never
    assert SpeechStopped in lost.kinds() and SpeechConfirmed not in lost.kinds()
    none = Caller(TurnTracker(TurnOptions(commands=()), FixedModel(0.0), spotting=True))
    none.silence(0.5)
    none.speak(0.4)
    assert none.tracker.decodes_to_run() == []


def test_a_lasting_rise_of_the_background_resumes_the_agent_it_paused() -> None:
    # A fan or a passing car: the level rises 20 dB and stays. The onset pauses the agent,
    # then the background follows the new level and the episode ends; no interruption.
    rng = np.random.default_rng(4)
    tracker = TurnTracker(TurnOptions(resume_after_ms=400), FixedModel(0.0))
    out: list[tuple[float, object]] = []
    for index in range(250):  # 1 s quiet, then 4 s of noise 20 dB louder
        level = 100.0 if index < 50 else 1000.0
        noise = rng.normal(0.0, level, FRAME).astype(np.int16)
        out += [(index * 0.02, f) for f in tracker.audio(noise, RATE, index * 0.02)]
    kinds = [type(f) for _, f in out]
    assert kinds == [SpeechStarted, SpeechStopped]
    assert out[1][0] - out[0][0] < 2.0  # paused for a moment, not for as long as it lasts


def test_voiced_speech_after_a_confirmed_command_still_holds_the_commit() -> None:
    # "No," heard as a command, then the caller goes on under noise the VAD does not hear
    # yet: the turn must not be committed while voiced speech goes on.
    rng = np.random.default_rng(6)
    options = TurnOptions(min_delay_ms=400, resume_after_ms=400)
    caller = Caller(TurnTracker(options, FixedModel(1.0), spotting=True))
    caller.silence(0.5)
    caller.speak(0.3)
    [decode] = caller.tracker.decodes_to_run()
    caller.silence(0.1)
    for frame in caller.tracker.words(decode.token, "no"):
        caller.out.append((caller.t, frame))
    assert SpeechConfirmed in caller.kinds()
    caller.silence(0.1)
    _under_noise(caller, 0.8, True, rng)  # from 0.5 s after its end: past min_delay_ms
    assert TurnCommitted not in caller.kinds()
    caller.silence(1.0)
    [committed] = caller.when(TurnCommitted)
    assert committed >= 1.8 + 0.4 - 0.021
