"""The turn tracker: when a caller's turn ends, and when their speech is meant to interrupt.

No I/O and no clock: stream time comes with the audio (``pts``), the VAD's
boundaries and the recogniser's words are fed in, frames come out. The
``end_of_turn`` stage is a thin loop around it; tests and the turn
benchmark drive it directly.

End of turn: at each pause (the VAD's ``SpeechStopped``) the model scores
the turn so far; the turn is committed once the silence since the last
word reaches ``max_delay - p * (max_delay - min_delay)``. Speech before
that cancels the wait: the pause was mid-sentence. When a recogniser runs,
the turn so far is decoded at each pause (``decodes_to_run``); its words
re-score the pause when they come.

Interruptions: speech opens an *episode*, announced downstream as a
tentative ``SpeechStarted`` at its onset (an agent that is talking pauses
there and then). The episode is confirmed (``SpeechConfirmed``) once its
speech lasts ``interrupt_min_ms`` and, with a recogniser, has
``interrupt_min_words`` words that are not backchannels, or lasts
``interrupt_sure_ms`` whatever the words. An episode ends with
``SpeechStopped`` once ``resume_after_ms`` of silence follow its last word:
unconfirmed, the agent plays on from where it paused.

How long the speech of an episode lasts is not the VAD's contiguous speech:
under noise the VAD hears only the loudest syllables. Every frame of an open
episode that is voiced (periodic in the pitch range, ``interrupt_voicing``)
and above the background also counts as speech, and gaps shorter than
``resume_after_ms`` are bridged: the episode's speech runs from its onset to
its last loud or voiced frame. Noise bursts and the hiss of a cough are not
periodic, so they do not grow it.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from pipeflow.frames import Frame, SpeechConfirmed, SpeechStarted, SpeechStopped, TurnCommitted
from pipeflow.turn_detect.lexicon import meaningful_words
from pipeflow.turn_detect.model import EndOfTurnModel, TurnContext
from pipeflow.turn_detect.options import TurnOptions
from pipeflow.turn_detect.prosody import voicing

__all__ = ["Decode", "TurnTracker"]

_LOUD_DB = 8.0
"""A frame this far above the background counts as speech (for interruption length)."""
_FULL_SCALE_DB = 20 * float(np.log10(32768.0))
"""0 dBFS in the tracker's level units (dB of PCM16 power)."""
_VOICED_DB = 3.0
"""A voiced frame this far above the background counts as speech (for interruption length)."""


class Decode(NamedTuple):
    """Audio to recognise off the event loop; hand the words back with ``token``."""

    token: int
    audio: np.ndarray
    sample_rate: int
    end: float
    """Stream time the audio ends at."""
    kind: str = "turn"
    """``turn``: the turn so far, for the recogniser; ``command``: a burst over the
    agent, for the command spotter (the phrase heard if a command, else "")."""


class TurnTracker:
    """Turn ends and interruptions of one caller, in stream time.

    Args:
        options: delays and interruption thresholds.
        model: scores pauses.
        recognising: words will be fed back for the decodes asked for.
        spotting: command decodes (``Decode.kind == "command"``) will be answered.
    """

    def __init__(self, options: TurnOptions, model: EndOfTurnModel,
                 recognising: bool = False, spotting: bool = False) -> None:
        self.options = options
        self.model = model
        self.recognising = recognising
        self.spotting = spotting and bool(options.commands)
        self._command_token: int | None = None  # the command decode in flight
        self._command_again = False
        self._command = ""  # the command heard in the open episode
        self.now = 0.0
        self.rate = 0
        self._audio: deque[tuple[float, np.ndarray]] = deque()
        self._audio_s = 0.0
        self._decodes: list[Decode] = []
        self._token = 0
        self._in_flight: int | None = None
        self._decode_end = 0.0
        self._again = False
        self.probabilities: list[float] = []
        """The end-of-turn probability of each pause scored (for benchmarks and logs)."""
        self._new_turn()
        self._episode_open = False
        self._episode_start = 0.0
        self._confirmed = False
        self._peak_voicing = 0.0  # the open episode's most periodic frame
        self._background: float | None = None  # dB (PCM16 units) of the audio outside speech
        self._onset_run = 0.0  # seconds of 10 ms windows above the onset level, in a row
        self._onset_from = 0.0  # where that run began
        self._last_active = 0.0  # end of the last window above the onset level, in an episode
        self._previous = np.zeros(0, np.int16)  # the frame before, for a 40 ms voicing window

    def _new_turn(self) -> None:
        self._open = False  # speech since the last commit
        self._speaking = False  # the VAD hears speech now
        self._turn_start = 0.0
        self._seg_start = 0.0
        self._speech_s = 0.0
        self._last_stop = 0.0
        self._deadline: float | None = None
        self._words: str | None = None  # words of the turn, from the latest decode
        self._words_end = 0.0  # ...which cover the turn up to here
        self._last_loud = 0.0  # end of the last frame clearly above the background
        self._last_voiced = 0.0  # end of the last voiced frame of the open episode

    # -- inputs ---------------------------------------------------------------------

    def speech_started(self, frame: SpeechStarted) -> list[Frame]:
        """The VAD heard speech begin at ``frame.at``."""
        out: list[Frame] = []
        if not self._open:
            self._open = True
            self._turn_start = frame.at
        self._speaking = True
        self._seg_start = frame.at
        self._last_loud = max(self._last_loud, self.now)
        self._deadline = None  # the pause was mid-turn
        if not self._episode_open:
            self._open_episode(frame.at, out, frame.item_id)
        return out

    def _open_episode(self, at: float, out: list[Frame], item_id: str = "") -> None:
        self._episode_open = True
        self._episode_start = at
        self._last_voiced = 0.0
        self._last_active = self.now
        self._confirmed = False
        self._command = ""
        self._peak_voicing = 0.0
        out.append(SpeechStarted(at=round(at, 6), item_id=item_id, tentative=True))

    def speech_stopped(self, frame: SpeechStopped) -> list[Frame]:
        """The VAD heard speech end at ``frame.at``: a pause began."""
        if not self._speaking:
            return []
        self._speaking = False
        length = max(0.0, frame.at - self._seg_start)
        self._speech_s += length
        self._last_stop = frame.at
        self._words = None  # stale: they describe an earlier part of the turn
        self._ask_decode()
        self._ask_command()
        self._score()
        out: list[Frame] = []
        self._check_confirm(out)
        return out

    def audio(self, samples: np.ndarray, sample_rate: int, pts: float) -> list[Frame]:
        """Caller audio (int16) from stream time ``pts``: time moves on to its end."""
        if sample_rate != self.rate:
            self._audio.clear()
            self._audio_s = 0.0
            self.rate = sample_rate
        self._audio.append((pts, samples))
        self._audio_s += samples.size / sample_rate
        while self._audio and self._audio_s - self._audio[0][1].size / sample_rate \
                >= self.options.window_s:
            self._audio_s -= self._audio.popleft()[1].size / sample_rate
        self.now = pts + samples.size / sample_rate
        out: list[Frame] = []
        self._onset(samples, pts, out)
        self._level(samples)
        self._check_confirm(out)
        self._check_time(out)
        return out

    def words(self, token: int, text: str) -> list[Frame]:
        """The recogniser's words for the decode ``token``; stale answers are ignored."""
        if token == self._command_token:
            return self._command_heard(text)
        if token != self._in_flight:
            return []
        self._in_flight = None
        out: list[Frame] = []
        if self._open:
            self._words = text
            self._words_end = self._decode_end
            if not self._speaking and self._deadline is not None \
                    and self._words_end >= self._last_stop - 0.05:
                self._score()  # words of the whole turn so far: a better score
            self._check_confirm(out)
            self._check_time(out)
        if self._again:
            self._again = False
            self._ask_decode()
        return out

    def committed(self) -> list[Frame]:
        """The turn was committed upstream (by hand): start afresh."""
        out: list[Frame] = []
        self._close_episode(out)
        self._new_turn()
        return out

    def finish(self) -> list[Frame]:
        """End of input: close the turn in progress."""
        out: list[Frame] = []
        if self._open:
            if self._speaking:
                self.speech_stopped(SpeechStopped(at=self.now))
            self._commit(out)
        return out

    def holding_for(self) -> int | None:
        """The command decode that alone keeps the open episode paused (its burst ended
        ``resume_after_ms`` ago), or None. A stage fed faster than real time (a file, a
        replay) waits for it here; live, it has long answered by then."""
        if self._command_token is None or not self._episode_open or self._speaking:
            return None
        silence = self.now - max(self._last_stop, self._last_voiced, self._last_active)
        return self._command_token if silence * 1000 >= self.options.resume_after_ms - 1e-6 \
            else None

    def decodes_to_run(self) -> list[Decode]:
        """Recognitions asked for since the last call (at most one in flight)."""
        out, self._decodes = self._decodes, []
        return out

    # -- decisions ------------------------------------------------------------------

    def delay_for(self, probability: float) -> float:
        """Seconds of silence to wait at a pause scored ``probability``."""
        lo, hi = self.options.min_delay_ms / 1000, self.options.max_delay_ms / 1000
        return hi - max(0.0, min(1.0, probability)) * (hi - lo)

    def _turn_audio(self) -> np.ndarray:
        start = self._turn_start - 0.05
        parts = [s for pts, s in self._audio if pts + s.size / self.rate > start]
        if not parts:
            return np.zeros(0, np.int16)
        audio = np.concatenate(parts)
        first = next(pts for pts, s in self._audio if pts + s.size / self.rate > start)
        skip = max(0, round((start - first) * self.rate))
        end = audio.size - max(0, round((self.now - self._last_stop) * self.rate)) \
            if not self._speaking else audio.size
        return audio[skip:max(skip, end)]

    def _score(self) -> None:
        if not self.rate:
            return
        words = self._words if self._words_end >= self._last_stop - 0.05 else None
        turn = TurnContext(audio=self._turn_audio(), sample_rate=self.rate,
                           speech_s=self._speech_s, words=words)
        probability = float(self.model.probability(turn))
        self.probabilities.append(probability)
        self._deadline = self._last_stop + self.delay_for(probability)

    def _ask_decode(self) -> None:
        if not self.recognising or not self.rate:
            return
        if self._in_flight is not None:
            self._again = True
            return
        self._token += 1
        self._in_flight = self._token
        audio = self._turn_audio() if not self._speaking else self._live_audio()
        self._decode_end = self._last_stop if not self._speaking else self.now
        self._decodes.append(Decode(self._token, audio, self.rate, self._decode_end))

    def _ask_command(self) -> None:
        """Decode the open episode's burst for a command, if it is short of meant."""
        if not self.spotting or not self._episode_open or self._confirmed or not self.rate \
                or self._span() * 1000 > self.options.interrupt_min_ms:
            return  # (a longer burst is judged on its length: commands are short)
        if self._command_token is not None:
            self._command_again = True
            return
        start = self._episode_start - 0.05
        parts = [(pts, s) for pts, s in self._audio if pts + s.size / self.rate > start]
        if not parts:
            return
        audio = np.concatenate([s for _, s in parts])
        skip = max(0, round((start - parts[0][0]) * self.rate))
        end = audio.size - max(0, round((self.now - self._last_stop - 0.1) * self.rate))
        self._token += 1
        self._command_token = self._token
        self._decodes.append(Decode(self._token, audio[skip:max(skip, end)], self.rate,
                                    self._last_stop, "command"))

    def _command_heard(self, text: str) -> list[Frame]:
        self._command_token = None
        out: list[Frame] = []
        if self._episode_open and not self._confirmed and text \
                and self._peak_voicing >= self.options.command_voicing:
            self._command = text
            self._confirm(out)
        if self._command_again:
            self._command_again = False
            self._ask_command()
        self._check_time(out)
        return out

    def _live_audio(self) -> np.ndarray:
        start = self._turn_start - 0.05
        parts = [s for pts, s in self._audio if pts + s.size / self.rate > start]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def _span(self) -> float:
        """Seconds from the episode's onset to its last loud frame (not the VAD's hangover)."""
        end = max(self._last_loud, self._last_stop) if self._speaking else self._last_stop
        return max(0.0, max(end, self._last_voiced) - self._episode_start)

    def _meant(self, final: bool) -> bool | None:
        """Whether the episode is meant: True, False, or None (not yet known).

        While speech goes on (``final`` false) it is meant once it lasts
        ``interrupt_min_ms`` with enough words (when words come), or
        ``interrupt_sure_ms`` whatever they are. When it ends (``final``),
        enough words suffice however short it was ("Stop."), and with no
        recogniser ``interrupt_min_ms`` of speech does.
        """
        options = self.options
        span_ms = self._span() * 1000
        if span_ms >= options.interrupt_sure_ms - 1e-6 or self._command:
            return True
        long_enough = span_ms >= options.interrupt_min_ms - 1e-6
        if not (self.recognising and options.interrupt_min_words):
            return long_enough if long_enough or final else None
        if self._words is None:
            return False if final else None
        enough = meaningful_words(self._words, options.backchannels) \
            >= options.interrupt_min_words
        if final:
            return enough
        return True if enough and long_enough else None

    def _check_confirm(self, out: list[Frame]) -> None:
        if not self._episode_open or self._confirmed:
            return
        if self._span() * 1000 < self.options.interrupt_min_ms - 1e-6:
            return
        if self.recognising and self._words is None and self._in_flight is None:
            self._ask_decode()
        if self._meant(final=False):
            self._confirm(out)

    def _confirm(self, out: list[Frame]) -> None:
        self._confirmed = True
        out.append(SpeechConfirmed(at=round(self._episode_start, 6),
                                   words=self._command or self._words or ""))

    def _level(self, samples: np.ndarray) -> None:
        """Track the background level between speech, and the last frame above it
        (or voiced and above it, while an episode is judged)."""
        if not samples.size:
            return
        x = samples.astype(np.float32)
        level = 10.0 * float(np.log10(float(x @ x) / x.size + 1.0))
        previous, self._previous = self._previous, samples
        if self._background is None:
            self._background = level
        judged = self.options.interrupt_voicing or self.spotting
        if self._episode_open and judged and level > self._background + _VOICED_DB \
                and previous.size:  # (confirmed too: voiced speech holds the commit)
            window = np.concatenate((previous, samples))
            periodic = voicing(window, self.rate)
            self._peak_voicing = max(self._peak_voicing, periodic)
            if self.options.interrupt_voicing and periodic >= self.options.interrupt_voicing:
                self._last_voiced = self.now
        if self._speaking:
            if level > self._background + _LOUD_DB:
                self._last_loud = self.now
        elif self.now - self._last_stop > 0.3:
            self._background += 0.05 * (level - self._background)

    def _onset(self, samples: np.ndarray, pts: float, out: list[Frame]) -> None:
        """Open an episode where the level first stays ``onset_margin_db`` above the
        background for ``onset_ms``: sooner than the VAD's ``min_speech_ms`` of speech,
        and relative to the background, so it hears a word's onset under noise (where
        the VAD's fixed margin waits for the loudest syllable)."""
        options = self.options
        if not options.onset_margin_db or self._background is None or (
                self._speaking and not self._episode_open):
            self._onset_run = 0.0
            return
        window = max(1, self.rate // 100)
        count = samples.size // window
        if not count:
            return
        x = samples[: count * window].reshape(count, window).astype(np.float32)
        levels = 10.0 * np.log10(np.einsum("ij,ij->i", x, x) / window + 1.0)
        floor = max(self._background + options.onset_margin_db,
                    options.onset_min_dbfs + _FULL_SCALE_DB)
        step = window / self.rate
        for index, level in enumerate(levels.tolist()):
            start = pts + index * step
            if level < floor:
                self._onset_run = 0.0
                continue
            if self._episode_open:
                self._last_active = start + step
                continue
            if not self._onset_run:
                self._onset_from = start
            self._onset_run += step
            if self._onset_run * 1000 >= options.onset_ms - 1e-6:
                self._open_episode(self._onset_from, out)
                self._last_active = start + step

    def _check_time(self, out: list[Frame]) -> None:
        if self._speaking:
            return
        silence = self.now - max(self._last_stop, self._last_voiced, self._last_active)
        spotting = self._episode_open and self._command_token is not None \
            and silence * 1000 < self.options.resume_after_ms + self.options.command_wait_ms
        if self._episode_open and silence * 1000 >= self.options.resume_after_ms - 1e-6 \
                and not spotting:
            self._close_episode(out)  # held long enough: decide on what was heard
        held = self.now - self._last_voiced < self.options.min_delay_ms / 1000 - 1e-9
        if self._open and self._deadline is not None and self.now >= self._deadline - 1e-9 \
                and not (self._episode_open and (held or spotting)):
            self._commit(out)  # (not while voiced speech the VAD missed, or a command, is due)

    def _close_episode(self, out: list[Frame]) -> None:
        """End the episode: confirmed first if what was heard is meant, then stopped."""
        if self._episode_open:
            if not self._confirmed and self._meant(final=True):
                self._confirm(out)
            self._episode_open = False
            out.append(SpeechStopped(at=round(max(self._last_stop, self._episode_start), 6)))

    def _commit(self, out: list[Frame]) -> None:
        self._close_episode(out)
        out.append(TurnCommitted(at=round(self.now, 6)))
        self._new_turn()
