"""The end-of-turn model interface, and the offline CPU model built on it.

A model answers one question when the caller pauses: how likely is it that
the turn is over? It sees the turn so far (the audio, at most the last few
seconds, and the words recognised so far when a recogniser runs) and
returns a probability; the turn tracker turns it into a wait between
``min_delay_ms`` (surely done) and ``max_delay_ms`` (surely not).

A learned model (Smart Turn's ONNX classifier, say) plugs in as a class
with the same ``probability`` method, named in YAML as ``model:
package.module:Class`` (see docs/turns.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from pipeflow.turn_detect.lexicon import word_signal
from pipeflow.turn_detect.prosody import end_prosody

__all__ = ["EndOfTurnModel", "ProsodyModel", "TurnContext"]


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a model sees at a pause.

    Attributes:
        audio: int16 samples of the turn so far (its last ``window_s`` at
            most), ending where the pause began.
        sample_rate: their rate.
        speech_s: seconds of speech in the turn so far.
        words: the words recognised so far, or ``None`` when no recogniser runs
            (or it has not answered yet).
    """

    audio: np.ndarray
    sample_rate: int
    speech_s: float
    words: str | None = None


@runtime_checkable
class EndOfTurnModel(Protocol):
    """Scores a pause: the probability (0 to 1) that the caller's turn is over."""

    def probability(self, turn: TurnContext) -> float:
        """The end-of-turn probability for the pause that just began."""
        ...


class ProsodyModel:
    """Hand-weighted evidence: words heard, pitch and energy fall, length of the turn.

    The words weigh most (a trailing "and" or "um" holds the turn, a short
    "yes" ends it); without words, a falling pitch and level at the end and a
    short turn point to an end. Scores add up in log-odds.
    """

    def __init__(self, words_weight: float = 3.0, pitch_weight: float = 0.08,
                 energy_weight: float = 0.03, short_bonus: float = 0.4,
                 bias: float = -0.6) -> None:
        self.bias = bias
        self.words_weight = words_weight
        self.pitch_weight = pitch_weight
        self.energy_weight = energy_weight
        self.short_bonus = short_bonus

    def probability(self, turn: TurnContext) -> float:
        score = self.bias  # no evidence: lean towards waiting (a cut-off costs more)
        if turn.words is not None:
            score += self.words_weight * word_signal(turn.words)
        prosody = end_prosody(turn.audio, turn.sample_rate)
        score += self.pitch_weight * max(-4.0, min(4.0, prosody.pitch_fall_st))
        score += self.energy_weight * max(-10.0, min(10.0, prosody.energy_fall_db))
        if turn.speech_s < 1.0:
            score += self.short_bonus
        return 1.0 / (1.0 + math.exp(-score))
