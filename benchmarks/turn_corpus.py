"""A scored turn-taking corpus: espeak-ng speech, noises and coughs, with the truth.

Each ``Case`` is a caller track (int16 at 16 kHz, or 8 kHz after a mu-law
round trip, clean or with white noise at a given SNR) and what really
happens in it:

- ``pause``: one sentence said in fragments with mid-sentence pauses of
  200-800 ms ("I'd like, | um, | two pizzas."): one turn, ending at the last
  fragment; a commit in a pause is a false cut-off;
- ``short``: a one-word or short answer ("Yes.", "Two.", "That's all."): one
  turn; the end-of-turn delay is measured from its last sample;
- ``backchannel``, ``noise``, ``cough``: said or heard while the agent
  talks; not an interruption;
- ``barge_in``: meant speech while the agent talks ("No, wait."); reaction
  is measured from its true onset (first sample above 1% of its peak).

Each case is said in a voice and at a rate the seed picks (``VOICES``,
``RATES_WPM``): a rerun with another seed hears other voices, pauses and
noises. Speech boundaries are measured on each fragment's own synthesised samples,
never from a detector. Noises and coughs are synthesised from seeded random
numbers (coughs: a burst of band-limited noise with a fast attack and a
decay, sometimes two in a row).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import soxr

from pipeflow.audio import g711, tts

__all__ = ["CONDITIONS", "Case", "Condition", "build_cases"]

LEAD_S = 1.5
"""Background before the first sound (the VAD's noise floor settles on it)."""
TAIL_S = 2.5
"""Background after the last sound (time for a late commit to show)."""

PAUSED = (
    ("I'd like,", "um,", "two pizzas."),
    ("Yes, I'd like two pizzas", "and one salad, please."),
    ("My number is five five five,", "one two three,", "four five six seven."),
    ("Deliver it to,", "uh,", "twelve Main Street."),
    ("Can I have", "a large pizza with,", "um, extra cheese?"),
    ("So,", "I was thinking", "maybe two salads."),
    ("I want the pizza", "and, um,", "an ice cream."),
    ("Well,", "that's all for now, thanks."),
)
PAUSES_MS = (200, 300, 400, 500, 600, 700, 800)
SHORT = ("Yes.", "No.", "Two.", "That's all.", "Yes, please.", "Okay.", "Three.", "Nope.",
         "Correct.", "That's it.")
BACKCHANNELS = ("Mhmm.", "Okay.", "Yeah.", "Right.", "Uh huh.", "Mm hmm.", "Yes.", "Sure.")
BARGE_INS = ("No, wait.", "Stop.", "Actually, make it three pizzas.",
             "Yes, I'd like two pizzas and one salad, please.", "Can I pay by card?",
             "Sorry, what was the total?", "Hold on.", "No, that's wrong.")
AGENT_LINE = ("Sure. We have margherita, pepperoni and vegetable pizzas, each twelve dollars, "
              "salads at six, and ice cream at four. What would you like?")


@dataclass(frozen=True)
class Condition:
    """How a track reaches the detector."""

    name: str
    rate: int
    mulaw: bool = False
    snr_db: float | None = None


CONDITIONS = (
    Condition("16 kHz clean", 16000),
    Condition("16 kHz 20 dB", 16000, snr_db=20.0),
    Condition("16 kHz 10 dB", 16000, snr_db=10.0),
    Condition("8 kHz mu-law clean", 8000, mulaw=True),
    Condition("8 kHz mu-law 20 dB", 8000, mulaw=True, snr_db=20.0),
    Condition("8 kHz mu-law 10 dB", 8000, mulaw=True, snr_db=10.0),
)


@dataclass
class Case:
    """One scored event.

    Attributes:
        kind: pause, short, backchannel, noise, cough or barge_in.
        text: what is said (a description for noises).
        condition: the channel.
        samples: the caller track (int16 at ``condition.rate``).
        sounds: (start, end) seconds of each sound in the track, in order.
        pauses_ms: the mid-sentence pauses (``pause`` cases).
    """

    kind: str
    text: str
    condition: Condition
    samples: np.ndarray
    sounds: list[tuple[float, float]] = field(default_factory=list)
    pauses_ms: tuple[int, ...] = ()

    @property
    def rate(self) -> int:
        return self.condition.rate

    @property
    def onset(self) -> float:
        return self.sounds[0][0]

    @property
    def end(self) -> float:
        return self.sounds[-1][1]

    @property
    def over_agent(self) -> bool:
        """Said while the agent talks (scored as an interruption or not)."""
        return self.kind in ("backchannel", "noise", "cough", "barge_in")


VOICES = ("en-us", "en-us+m3", "en-us+f3")
"""espeak-ng voices a case is said in (the seed picks one per case): a low, a middle
and a high (female) pitch, so no threshold fits one voice only."""
RATES_WPM = (160, 175, 190)
"""Speaking rates a case is said at (the seed picks one per case)."""


@functools.lru_cache(maxsize=1024)
def _speech(text: str, rate: int, voice: str = "en-us", wpm: int = 175) -> np.ndarray:
    samples = tts.synthesize(text, rate, voice, wpm)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 0.01 * np.abs(samples).max())
    return samples[loud[0] : loud[-1] + 1].copy()


def _noise_burst(rng: np.random.Generator, rate: int, seconds: float) -> np.ndarray:
    """A knock, a rustle, a door: broadband noise with a short attack and a decay."""
    n = round(seconds * rate)
    envelope = np.minimum(1.0, np.arange(n) / (0.005 * rate)) * np.exp(
        -np.arange(n) / (n / rng.uniform(1.5, 4.0)))
    return rng.normal(0.0, 1.0, n) * envelope * rng.uniform(4000, 12000)


def _cough(rng: np.random.Generator, rate: int) -> np.ndarray:
    """One or two cough bursts: band-limited noise (300-3000 Hz) with a voiced buzz."""
    parts = []
    for _ in range(int(rng.integers(1, 3))):
        seconds = rng.uniform(0.18, 0.35)
        n = round(seconds * rate)
        t = np.arange(n) / rate
        noise = rng.normal(0.0, 1.0, n)
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n, 1 / rate)
        spectrum[(freqs < 300) | (freqs > 3000)] = 0
        band = np.fft.irfft(spectrum, n)
        band /= np.abs(band).max() + 1e-9
        buzz = np.sign(np.sin(2 * np.pi * rng.uniform(120, 220) * t)) * 0.3
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / (seconds / 3))
        parts += [(band + buzz) * envelope * rng.uniform(8000, 16000),
                  np.zeros(round(rng.uniform(0.08, 0.15) * rate))]
    return np.concatenate(parts[:-1])


def _finish(parts: list[np.ndarray], condition: Condition, seed: int,
            speech_rms: float) -> np.ndarray:
    track = np.concatenate(parts).astype(np.float64)
    if condition.snr_db is not None:
        noise_rms = speech_rms / 10 ** (condition.snr_db / 20)
        track = track + np.random.default_rng(seed).normal(0.0, noise_rms, track.size)
    track = np.clip(np.rint(track), -32768, 32767).astype(np.int16)
    if condition.mulaw:
        track = np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(track.tobytes())), "<i2")
    return track


def _layout(sounds: list[np.ndarray], gaps_s: list[float], condition: Condition,
            seed: int, speech_rms: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    rate = condition.rate
    parts = [np.zeros(round(LEAD_S * rate))]
    spans = []
    position = parts[0].size
    for sound, gap in zip(sounds, [*gaps_s, TAIL_S], strict=True):
        spans.append((position / rate, (position + sound.size) / rate))
        parts += [sound.astype(np.float64), np.zeros(round(gap * rate))]
        position += sound.size + parts[-1].size
    return _finish(parts, condition, seed, speech_rms), spans


def _said(text: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``text`` in a voice and at a rate ``rng`` picks."""
    return _speech(text, rate, VOICES[int(rng.integers(len(VOICES)))],
                   RATES_WPM[int(rng.integers(len(RATES_WPM)))])


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def build_cases(conditions: tuple[Condition, ...] = CONDITIONS, small: bool = False,
                seed: int = 20) -> list[Case]:
    """Every case of the corpus under each condition (``small``: a few of each kind)."""
    rng = np.random.default_rng(seed)
    paused = PAUSED[:3] if small else PAUSED
    shorts = SHORT[:4] if small else SHORT
    backs = BACKCHANNELS[:4] if small else BACKCHANNELS
    barges = BARGE_INS[:4] if small else BARGE_INS
    noises = 2 if small else 6
    cases: list[Case] = []
    for ci, condition in enumerate(conditions):
        rate = condition.rate
        reference = _rms(_speech(AGENT_LINE[:60], rate))  # the SNR's speech level
        for i, fragments in enumerate(paused):
            pauses = tuple(int(rng.choice(PAUSES_MS)) for _ in fragments[1:])
            voice = VOICES[int(rng.integers(len(VOICES)))]
            wpm = RATES_WPM[int(rng.integers(len(RATES_WPM)))]
            sounds = [_speech(f, rate, voice, wpm) for f in fragments]
            samples, spans = _layout(sounds, [p / 1000 for p in pauses], condition,
                                     seed + 100 * ci + i, reference)
            cases.append(Case("pause", " | ".join(fragments), condition, samples, spans, pauses))
        for kind, texts in (("short", shorts), ("backchannel", backs), ("barge_in", barges)):
            for i, text in enumerate(texts):
                samples, spans = _layout([_said(text, rate, rng)], [], condition,
                                         seed + 100 * ci + 50 + i, reference)
                cases.append(Case(kind, text, condition, samples, spans))
        for i in range(noises):
            kind = "cough" if i % 2 else "noise"
            sound = _cough(rng, rate) if kind == "cough" else _noise_burst(
                rng, rate, float(rng.uniform(0.08, 0.4)))
            samples, spans = _layout([sound], [], condition, seed + 100 * ci + 80 + i, reference)
            cases.append(Case(kind, f"{kind} {i + 1}", condition, samples, spans))
    return cases


def agent_audio(rate: int = 24000) -> np.ndarray:
    """The agent's long answer the caller talks over (resampled to ``rate``)."""
    speech = _speech(AGENT_LINE, 16000)
    if rate == 16000:
        return speech
    return soxr.resample(speech, 16000, rate).astype(np.int16)


def sentences() -> list[str]:
    """What callers say in the corpus's domain: the recogniser's language model.

    Every text of the corpus, whole sentences and their fragments, plus the
    fillers and backchannels (a domain model, as the order line builds its own).
    """
    texts = [" ".join(p) for p in PAUSED] + [f for p in PAUSED for f in p]
    from pipeflow.turn_detect.lexicon import BACKCHANNELS as HEARD

    texts += [*SHORT, *BACKCHANNELS, *BARGE_INS, *HEARD, "and", "so", "like", "um hum",
              "uh hum", "hmm hmm"]
    return texts
