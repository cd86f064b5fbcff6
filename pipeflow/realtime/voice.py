"""Speech in and out for the local Realtime server.

Replies are spoken with espeak-ng (``pipeflow.audio.tts``) at the session's
output rate and cached, so a script's phrases are synthesised once per
process. Where espeak-ng cannot be loaded the server still answers, with a
clear warning: each word becomes a short tone, so timing, pacing, barge-in
and truncation behave the same and transcripts stay exact.

Input transcription is pluggable: a ``Transcriber`` turns the caller's
committed audio into words. With none, the server reports the ``user`` text
of the script turn it chose.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from pipeflow.audio import tts
from pipeflow.errors import LocalError

__all__ = ["Speaker", "Transcriber", "tones"]

log = logging.getLogger("pipeflow.realtime.server")


@runtime_checkable
class Transcriber(Protocol):
    """Turns a caller's committed audio into words (e.g. a pocketsphinx wrapper)."""

    def transcribe(self, pcm: bytes, sample_rate: int = 24000, *,
                   expect: str | None = None) -> str:
        """The words in ``pcm`` (PCM16 little-endian mono at ``sample_rate``).

        ``expect`` names what the script expects the caller to say next
        (``digits``, ``address``...; None: anything), so a recogniser can
        listen for it; one that cannot simply ignores it.
        """
        ...


def tones(text: str, sample_rate: int, words_per_minute: int = 175) -> np.ndarray:
    """A stand-in for speech: one short tone per word, at the speaking rate.

    Returns:
        int16 samples at ``sample_rate`` (silence for text with no words).
    """
    words = text.split()
    word_s = 60.0 / words_per_minute
    tone = int(sample_rate * word_s * 0.6)
    gap = int(sample_rate * word_s) - tone
    out = []
    for i, word in enumerate(words):
        freq = 300.0 + 40.0 * (len(word) % 8) + 20.0 * (i % 3)
        t = np.arange(tone) / sample_rate
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 50.0)
        out.append((np.sin(2 * np.pi * freq * t) * envelope * 8000).astype(np.int16))
        out.append(np.zeros(gap, dtype=np.int16))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def _speech(text: str, sample_rate: int, voice: str, wpm: int, engine: str) -> bytes:
    """Speech of ``text``, from the process's byte-bounded cache (``tts.speech_cache``)."""
    def make() -> bytes:
        if engine == "espeak":
            return tts.synthesize(text, sample_rate, voice, wpm).tobytes()
        return tones(text, sample_rate, wpm).tobytes()

    return tts.speech_cache.get(_key(text, sample_rate, voice, wpm, engine), make)


def _key(text: str, sample_rate: int, voice: str, wpm: int, engine: str) -> tuple[Any, ...]:
    return (text, sample_rate, voice, wpm, engine)


class Speaker:
    """Speaks reply texts as PCM16 at a given rate, with a shared cache.

    Args:
        voice: the espeak-ng voice (e.g. ``en-us``).
        words_per_minute: speaking rate.
        engine: ``espeak`` (falls back to tones, with a warning, when it
            cannot be loaded) or ``tones``.
    """

    def __init__(self, voice: str = "en-us", words_per_minute: int = 175,
                 engine: Literal["espeak", "tones"] = "espeak") -> None:
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.engine = engine
        if engine == "espeak" and not tts.available():
            log.warning("espeak-ng cannot be loaded (install espeakng-loader); the local "
                        "Realtime server speaks one tone per word instead of words")
            self.engine = "tones"

    def cached(self, text: str, sample_rate: int) -> bytes | None:
        """The speech of ``text`` when the cache holds it (no synthesis), else None."""
        return tts.speech_cache.peek(_key(text, sample_rate, self.voice, self.words_per_minute,
                                          self.engine))

    def speak(self, text: str, sample_rate: int) -> bytes:
        """PCM16 little-endian mono speech of ``text`` at ``sample_rate``.

        Raises:
            ConfigError: the voice does not exist.
        """
        try:
            return _speech(text, sample_rate, self.voice, self.words_per_minute, self.engine)
        except LocalError as exc:  # the library loaded but failed on this text
            log.warning("espeak-ng failed (%s); speaking tones instead", exc)
            return _speech(text, sample_rate, self.voice, self.words_per_minute, "tones")
