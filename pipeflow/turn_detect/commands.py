"""Command words over the agent: "stop", "wait", "hold on" told from "mhmm" and "okay".

A short command is as short as a backchannel ("Stop." 0.4 s, "Mhmm." 0.4-0.8 s),
so no duration or voicing rule tells them apart; words do. The domain
language model of the turn recogniser hears a hum as words, so a burst over
the agent is decoded against a grammar of one phrase only: one command, one
backchannel, a filler, or garbage (the acoustic model's speech and noise
models). The decoder has to pick the phrase that fits best, and a cough or a
"mhmm" fits a backchannel or garbage better than "stop". A command heard
is decoded again with the 10 ms frames laid at other offsets, and counts only
when one of them agrees.

The grammar and its dictionary (CMU pronunciations) are written to a temporary
folder; decoders are pooled (they are not thread safe), so ``spot`` may run in
worker threads.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pipeflow.errors import ConfigError, LocalError
from pipeflow.turn_detect.lexicon import words_of

__all__ = ["COMMANDS", "CommandSpotter", "command_spotter"]

log = logging.getLogger("pipeflow.turn_detect")

COMMANDS = ("stop", "wait", "hold on", "no", "no wait", "cancel", "excuse me", "one moment",
            "just a moment")
"""Phrases that stop the agent however short they are. Not "hang on": the acoustic
model hears it in coughs (a breathy /h/, a buzz and a nasal), in the corpus too."""

_FILLERS = ("um", "uh", "hmm", "mm", "mhm", "hum")
_GARBAGE = ("garbage +SPN+", "noise +NSN+")  # the acoustic model's filler phones as words
_MODEL_RATE = 16000
_SHIFTS = (0, 53, 107)
"""The decoder's 10 ms frames laid at thirds: a command heard with the first must be
heard again with one of the others, so one lucky alignment does not turn a "sure"
into a "no"."""


class CommandSpotter:
    """Which phrase a short burst of caller speech is: a command, or not.

    Args:
        commands: phrases that interrupt the agent (YAML ``commands``).
        backchannels: phrases that do not (YAML ``backchannels``); with the
            fillers and garbage they are what a non-command is heard as.

    Raises:
        ConfigError: no command, or a command word with no pronunciation.
        LocalError: pocketsphinx is missing or cannot load its models.
    """

    def __init__(self, commands: tuple[str, ...], backchannels: tuple[str, ...]) -> None:
        from pipeflow.asr.pocketsphinx import _pocketsphinx

        self._model = Path(_pocketsphinx().get_model_path()) / "en-us"
        pronunciations = _dictionary(str(self._model / "cmudict-en-us.dict"))
        self.commands = tuple(dict.fromkeys(" ".join(words_of(c)) for c in commands if
                                            words_of(c)))
        if not self.commands:
            raise ConfigError("end_of_turn option commands: give at least one phrase, or "
                              "set it to [] to turn command spotting off")
        for phrase in self.commands:
            missing = [w for w in phrase.split() if w not in pronunciations]
            if missing:
                raise ConfigError(f"end_of_turn option commands: no pronunciation for "
                                  f"{', '.join(missing)} (in {phrase!r})")
        others = []
        for phrase in dict.fromkeys(" ".join(words_of(b)) for b in (*backchannels, *_FILLERS)):
            if phrase and phrase not in self.commands:
                if all(w in pronunciations for w in phrase.split()):
                    others.append(phrase)
                else:
                    log.info("command spotting: no pronunciation for %r; left out", phrase)
        words = sorted({w for p in (*self.commands, *others) for w in p.split()})
        lines = [line for w in words for line in pronunciations[w]] + list(_GARBAGE)
        junk = " | ".join(g.split()[0] for g in _GARBAGE)
        choices = [*self.commands, *others, "<junk> <junk>*"]
        self._dir = tempfile.TemporaryDirectory(prefix="pipeflow-commands-")
        folder = Path(self._dir.name)
        (folder / "commands.dict").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / "commands.gram").write_text(
            "#JSGF V1.0;\ngrammar commands;\npublic <phrase> = "
            + " | ".join(f"( {c} )" for c in choices) + f" ;\n<junk> = {junk} ;\n",
            encoding="utf-8")
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._release(self._new_decoder())  # fail now, not on the first burst

    def _new_decoder(self) -> Any:
        from pipeflow.asr.pocketsphinx import _pocketsphinx

        folder = Path(self._dir.name)
        try:
            return _pocketsphinx().Decoder(
                hmm=str(self._model / "en-us"), jsgf=str(folder / "commands.gram"),
                dict=str(folder / "commands.dict"), loglevel="FATAL", samprate=_MODEL_RATE)
        except (RuntimeError, ValueError) as exc:
            raise LocalError(f"pocketsphinx could not load the command grammar ({exc}).") from exc

    def _release(self, decoder: Any) -> None:
        with self._lock:
            self._idle.append(decoder)

    def spot(self, pcm: bytes, sample_rate: int) -> str:
        """The phrase heard in ``pcm`` (PCM16 mono) if it is a command, else ""."""
        from pipeflow.asr.pocketsphinx import _narrowband, trim
        from pipeflow.audio.resampler import resample

        samples = np.frombuffer(pcm, "<i2")
        if samples.size < sample_rate // 20:
            return ""
        if sample_rate != _MODEL_RATE:
            samples = resample(samples, sample_rate, _MODEL_RATE)
        narrowband = sample_rate <= 8000 or _narrowband(samples)
        samples = trim(samples)
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            decoder = self._new_decoder()
        try:
            first = self._decode(decoder, samples, narrowband, _SHIFTS[0])
            if first not in self.commands:
                return ""  # most bursts (a "mhmm", a cough): one decode
            for shift in _SHIFTS[1:]:
                if self._decode(decoder, samples, narrowband, shift) == first:
                    return first
            return ""
        finally:
            self._release(decoder)

    @staticmethod
    def _decode(decoder: Any, samples: np.ndarray, narrowband: bool, shift: int) -> str:
        from pipeflow.asr.pocketsphinx import prepare

        shifted = np.concatenate([samples[shift:], np.zeros(shift, samples.dtype)])
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(prepare(shifted, narrowband), no_search=False, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return " ".join(words_of(hyp.hypstr)) if hyp is not None else ""


@functools.lru_cache(maxsize=1)
def _dictionary(path: str) -> dict[str, list[str]]:
    """The CMU dictionary's lines per word (read once: it has 130,000 words)."""
    from pipeflow.asr.pocketsphinx import _read_dictionary

    return _read_dictionary(Path(path))


@functools.lru_cache(maxsize=8)
def command_spotter(commands: tuple[str, ...], backchannels: tuple[str, ...]) -> CommandSpotter:
    """The spotter of these phrases, built once per process (calls share its decoders)."""
    return CommandSpotter(commands, backchannels)
