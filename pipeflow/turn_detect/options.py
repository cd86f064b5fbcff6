"""Options of turn taking: end-of-turn delays and what counts as an interruption."""

from __future__ import annotations

from typing import Annotated

import msgspec

from pipeflow.asr.options import TranscriberOptions
from pipeflow.errors import ConfigError
from pipeflow.turn_detect.commands import COMMANDS
from pipeflow.turn_detect.lexicon import BACKCHANNELS

__all__ = ["TurnOptions"]

_Ms = Annotated[int, msgspec.Meta(ge=0)]


class TurnOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Options of the ``end_of_turn`` stage (see docs/turns.md)."""

    min_delay_ms: _Ms = 400
    """Silence after the last word before a turn that is surely over is committed."""
    max_delay_ms: _Ms = 1500
    """Silence after which a turn is committed whatever the model says."""
    model: str = "prosody"
    """The end-of-turn model: prosody (offline, CPU) or ``package.module:Class``."""
    window_s: Annotated[float, msgspec.Meta(gt=0)] = 4.0
    """How much of the turn (its end) the model and the recogniser see."""
    recogniser: TranscriberOptions | None = None
    """Recognise the turn so far at each pause (pocketsphinx, off the event loop);
    null: no words, prosody only."""
    interrupt_min_ms: _Ms = 900
    """Speech over the agent must last this long before it interrupts."""
    interrupt_min_words: _Ms = 0
    """With a recogniser: content words (not backchannels, fillers or function words)
    that make speech over the agent an interruption, even one shorter than
    ``interrupt_min_ms`` ("Stop."); 0: the duration alone decides."""
    interrupt_voicing: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.7
    """Voiced frames (peak autocorrelation in the pitch range at least this) count as
    speech of an interruption even where the VAD hears none (speech under noise);
    0: only the VAD's speech counts."""
    interrupt_sure_ms: _Ms = 1500
    """Speech this long interrupts whatever the words."""
    resume_after_ms: _Ms = 400
    """The longest the agent stays paused after an unconfirmed burst ends (a cough, a
    "mhmm") before it is judged on what was heard; the turn's commit judges it sooner."""
    onset_margin_db: Annotated[float, msgspec.Meta(ge=0)] = 6.0
    """Caller audio this far (dB) above the background for ``onset_ms`` pauses the agent
    at once, before the VAD has heard ``min_speech_ms`` of speech (the barge-in
    reaction); 0: only the VAD's onset pauses. Audio that the VAD never calls speech
    resumes the agent after ``resume_after_ms``."""
    onset_ms: Annotated[int, msgspec.Meta(ge=10)] = 20
    """How long (in 10 ms windows) the level must stay above ``onset_margin_db``."""
    onset_min_dbfs: float = -50.0
    """Audio quieter than this never opens an onset (a silent line's hiss)."""
    backchannels: tuple[str, ...] = BACKCHANNELS
    """What a listener says to show they follow; never an interruption on its own."""
    commands: tuple[str, ...] = COMMANDS
    """With a recogniser: phrases that interrupt however short ("stop", "hold on").
    A burst over the agent shorter than ``interrupt_min_ms`` is decoded against a
    grammar of one phrase (a command, a backchannel, a filler or garbage) when it
    pauses; a command confirms it. []: duration (and ``interrupt_min_words``) only."""
    command_voicing: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.5
    """A command must have a periodic frame (a vowel: peak autocorrelation in the pitch
    range at least this); a noise burst heard as "no" has none."""
    command_wait_ms: _Ms = 600
    """How long past ``resume_after_ms`` (or the turn's commit) a burst stays paused
    for the command decode still running on it."""

    def __post_init__(self) -> None:
        if self.max_delay_ms < self.min_delay_ms:
            raise ConfigError(f"end_of_turn option max_delay_ms ({self.max_delay_ms}) must be "
                              f"at least min_delay_ms ({self.min_delay_ms}).")
        if self.interrupt_sure_ms < self.interrupt_min_ms:
            raise ConfigError(f"end_of_turn option interrupt_sure_ms ({self.interrupt_sure_ms})"
                              f" must be at least interrupt_min_ms ({self.interrupt_min_ms}).")
