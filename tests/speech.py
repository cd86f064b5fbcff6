"""Test helpers that build speech recordings with known boundaries.

Speech comes from espeak-ng (``pipeflow.audio.tts``); each utterance's true
extent is measured on its own synthesized samples (first and last sample
above 1% of its peak), then utterances are laid out with known silences.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio import tts

__all__ = ["SpeechTrack", "add_noise", "need_tts", "speech_track", "spoken", "write_wav"]

SENTENCES = (
    "Hello, I would like to order two large pizzas.",
    "Yes, please.",
    "My phone number is five five five, one two three four.",
    "Deliver it to twelve Main Street.",
)


def need_tts() -> None:
    """Skip the calling test when espeak-ng cannot load (it ships with espeakng-loader)."""
    if not tts.available():
        pytest.skip("espeak-ng (espeakng-loader) cannot be loaded on this machine")


@functools.lru_cache(maxsize=64)
def spoken(text: str, sample_rate: int = 16000) -> np.ndarray:
    """Synthesized speech, trimmed to its non-silent extent (cached per text and rate)."""
    samples = tts.synthesize(text, sample_rate)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 0.01 * np.abs(samples).max())
    trimmed = samples[loud[0] : loud[-1] + 1].copy()
    trimmed.setflags(write=False)
    return trimmed


@dataclass
class SpeechTrack:
    """A recording and where its speech really is."""

    samples: np.ndarray
    sample_rate: int
    segments: list[tuple[float, float]] = field(default_factory=list)

    @property
    def pcm(self) -> bytes:
        return self.samples.astype("<i2").tobytes()

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate


def speech_track(
    texts: tuple[str, ...] = SENTENCES,
    pauses: tuple[float, ...] = (1.2, 1.5, 1.0),
    sample_rate: int = 16000,
    lead: float = 0.8,
    tail: float = 1.5,
) -> SpeechTrack:
    """Utterances separated by ``pauses`` seconds of digital silence.

    Args:
        texts: what is said, one utterance each.
        pauses: silence between consecutive utterances (len(texts) - 1 values).
        sample_rate: rate of the track.
        lead: silence before the first utterance.
        tail: silence after the last.
    """
    parts: list[np.ndarray] = [np.zeros(round(lead * sample_rate), np.int16)]
    segments = []
    position = parts[0].size
    gaps = [*pauses, tail]
    for text, gap in zip(texts, gaps, strict=True):
        speech = spoken(text, sample_rate)
        segments.append((position / sample_rate, (position + speech.size) / sample_rate))
        silence = np.zeros(round(gap * sample_rate), np.int16)
        parts += [speech, silence]
        position += speech.size + silence.size
    return SpeechTrack(np.concatenate(parts), sample_rate, segments)


def add_noise(track: SpeechTrack, snr_db: float, seed: int = 7) -> SpeechTrack:
    """The track plus white noise ``snr_db`` below its active speech level."""
    rate = track.sample_rate
    speech = np.concatenate(
        [track.samples[round(a * rate) : round(b * rate)] for a, b in track.segments]
    ).astype(np.float64)
    noise_rms = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).normal(0.0, noise_rms, track.samples.size)
    mixed = np.clip(np.rint(track.samples + noise), -32768, 32767).astype(np.int16)
    return SpeechTrack(mixed, rate, list(track.segments))


def write_wav(path: Path, samples: np.ndarray, sample_rate: int, channels: int = 1) -> Path:
    """Write int16 samples (interleaved when ``channels`` > 1) as a PCM16 WAV with stdlib wave."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path
