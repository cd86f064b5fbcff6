"""Offline transcription with pocketsphinx and a small domain language model.

pocketsphinx's general English language model mishears synthetic or phone
speech badly, and a free-order grammar over a word list is slow. A trigram
model trained on the domain's own sentences (``pipeflow.asr.corpus``) is
both fast and accurate: the decoder only weighs word sequences a caller of
that domain would say. The model and a dictionary of just its words (from
the CMU dictionary shipped with pocketsphinx) are built once per set of
inputs and cached on disk, keyed by a hash of those inputs.

A transcriber may hold more than one language model: besides the default
one, a model per *expectation* ("phone", "address"...), the sentences a
caller says when the agent has just asked for that. ``transcribe(...,
expect="phone")`` decodes with it, so a phone number is heard against digit
sequences only, not against every sentence of the domain.

The acoustic model is the package's 16 kHz US English one; audio at any
other rate is resampled with soxr. Decoders are not thread safe, so each
call borrows one from a small pool per model (a new one is made when all
are busy). A decoder's feature extraction keeps state from the audio it
heard before (noise and mean estimates), so the same utterance decoded
after different ones could give different words; it is reset before every
utterance (``reinit_feat``) and a decode depends on its own audio only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeflow.asr.corpus import normalize
from pipeflow.audio.pcm import check_pcm, check_rate
from pipeflow.audio.resampler import resample
from pipeflow.errors import ConfigError, LocalError

__all__ = ["CACHE_ENV", "PocketsphinxTranscriber", "word_error_rate"]

log = logging.getLogger("pipeflow.asr")

CACHE_ENV = "PIPEFLOW_ASR_CACHE"
"""Environment variable naming the folder for built models (default: a temp folder)."""

_MODEL_RATE = 16000
_PAD_S = 0.3
_QUIET = 10 ** (-40 / 20)  # frames this far below the loudest are not speech
_NOISE_WIDE = 0.04  # dither level, relative to the speech RMS
_NOISE_NARROW = 0.1
_SHIFTS = (0, 53, 107)  # samples: the decoder's 10 ms frame (160) laid at thirds
_DISCOUNT = 0.1  # probability mass kept for unseen word sequences
# An expectation's sentences cover its answers in every place (each number
# before each street...), so a sequence they never have is a misrecognition,
# not new phrasing: "twelve main street" came out as "two willow way in
# street" with 0.1 (and 0.01), right with 0.001.
_EXPECT_DISCOUNT = 0.001
_DEFAULT = ""  # the model used with no expectation
_FORMAT = 1  # bump when the files built change, so old caches are not reused


class PocketsphinxTranscriber:
    """Words from PCM16 speech, recognised offline against a domain language model.

    Args:
        vocabulary: extra words the caller may say (each becomes a one-word
            sentence, so it can be recognised on its own).
        sentences: what callers say in this domain, one sentence each
            (any case; digits are spelled out). With none at all, the
            package's general English model is used.
        sample_rate: rate the decoder works at: 16000, its acoustic
            model's (phone audio at 8 kHz is brought up to it, see ``prepare``).
        cache_dir: where built models are kept (default: ``$PIPEFLOW_ASR_CACHE``
            or ``pipeflow-asr`` in the temp folder).
        decoder_options: more ``pocketsphinx.Decoder`` settings (``lw``,
            ``beam``, ``wip``...), for tuning.
        expectations: name -> the sentences callers say when that is what
            is expected next (``{"phone": [...digit sequences...]}``); each
            becomes a model of its own, used by ``transcribe(..., expect=name)``.

    Raises:
        ConfigError: a bad sample rate, an expectation with no sentences, or
            no word of a model's sentences is in the pronunciation dictionary.
        LocalError: pocketsphinx is not installed or cannot load its model.
    """

    def __init__(
        self,
        vocabulary: Iterable[str] = (),
        sentences: Iterable[str] = (),
        sample_rate: int = _MODEL_RATE,
        cache_dir: str | os.PathLike[str] | None = None,
        decoder_options: Mapping[str, Any] | None = None,
        expectations: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        if sample_rate != _MODEL_RATE:
            raise ConfigError(f"the pocketsphinx transcriber decodes at 16000 Hz, the rate of "
                              f"its acoustic model (audio at other rates is resampled), got "
                              f"sample_rate={sample_rate!r}")
        self.sample_rate = sample_rate
        self.decoder_options = dict(decoder_options or {})
        words = [normalize(w) for w in vocabulary]
        self._vocabulary = {x for w in words for x in w.split()}
        lines = [normalize(s) for s in sentences] + words
        self.sentences = list(dict.fromkeys(line for line in lines if line))
        self.unknown_words: list[str] = []
        """Words of the sentences with no pronunciation, left out of the model."""
        ps = _pocketsphinx()
        self._model_dir = Path(ps.get_model_path())
        cache = Path(cache_dir or _default_cache())
        self._pronunciations: dict[str, list[str]] | None = None
        self._models: dict[str, tuple[Path, Path] | None] = {_DEFAULT: None}
        if self.sentences:
            self._models[_DEFAULT] = self._build(cache, self.sentences, self._vocabulary, "",
                                                 _DISCOUNT)
        for name, lines in (expectations or {}).items():
            if not name or name == _DEFAULT:
                raise ConfigError("an expectation needs a name, got an empty one")
            said = list(dict.fromkeys(x for x in (normalize(s) for s in lines) if x))
            if not said:
                raise ConfigError(f"the expectation {name!r} has no sentences: give the words "
                                  "callers say when it is expected")
            self._models[name] = self._build(cache, said, set(), f" for {name!r}",
                                             _EXPECT_DISCOUNT)
        self._idle: dict[str, list[Any]] = {name: [] for name in self._models}
        self._lock = threading.Lock()
        for name in self._models:  # fail now, not on the first call
            self._release(name, self._new_decoder(name))

    @property
    def expectations(self) -> tuple[str, ...]:
        """Names of the expectations with a model of their own."""
        return tuple(name for name in self._models if name != _DEFAULT)

    # -- building --------------------------------------------------------------------

    def _build(self, cache: Path, sentences: list[str], named: set[str], what: str,
               discount: float) -> tuple[Path, Path]:
        """The language model and dictionary of ``sentences`` (built once, then cached)."""
        if self._pronunciations is None:
            self._pronunciations = _read_dictionary(
                self._model_dir / "en-us" / "cmudict-en-us.dict")
        pronunciations = self._pronunciations
        words = sorted({w for s in sentences for w in s.split()})
        unknown_words = [w for w in words if w not in pronunciations]
        self.unknown_words = list(dict.fromkeys([*self.unknown_words, *unknown_words]))
        if unknown_words:  # a warning for words asked for by name, else a note
            level = logging.WARNING if set(unknown_words) & named else logging.INFO
            log.log(level, "pocketsphinx: no pronunciation for %s; sentences with them are "
                    "left out%s", ", ".join(unknown_words), what)
        unknown = set(unknown_words)
        usable = [s for s in sentences if unknown.isdisjoint(s.split())]
        if not usable:
            raise ConfigError(f"the pocketsphinx transcriber has no sentence it can use{what}: "
                              "no word is in the CMU pronunciation dictionary")
        head = f"{_FORMAT} {discount}"
        key = hashlib.sha256("\n".join([head, *usable]).encode()).hexdigest()[:20]
        folder = cache / key
        lm, dic = folder / "domain.lm", folder / "domain.dict"
        if lm.exists() and dic.exists():
            return lm, dic
        folder.mkdir(parents=True, exist_ok=True)
        known = sorted({w for s in usable for w in s.split()})
        entries = [line for w in known for line in pronunciations[w]]
        _write_atomic(dic, "\n".join(entries) + "\n")
        _write_atomic(lm, _arpa(usable, discount))
        log.info("pocketsphinx: built a %d-word language model%s from %d sentences in %s",
                 len(known), what, len(usable), folder)
        return lm, dic

    def _new_decoder(self, model: str) -> Any:
        ps = _pocketsphinx()
        kwargs: dict[str, Any] = {"hmm": str(self._model_dir / "en-us" / "en-us"),
                                  "loglevel": "FATAL", "samprate": self.sample_rate}
        files = self._models[model]
        if files is not None:
            kwargs.update(lm=str(files[0]), dict=str(files[1]))
        kwargs.update(self.decoder_options)
        try:
            return ps.Decoder(**kwargs)
        except (RuntimeError, ValueError) as exc:
            raise LocalError(f"pocketsphinx could not load its models ({exc}).") from exc

    @contextmanager
    def _decoder(self, model: str = _DEFAULT) -> Iterator[Any]:
        """A decoder of ``model`` with no memory of earlier audio, for one utterance."""
        with self._lock:
            idle = self._idle[model]
            decoder = idle.pop() if idle else None
        if decoder is None:
            decoder = self._new_decoder(model)
        try:
            # Noise and cepstral mean estimates carry over from the last utterance;
            # measured: 2 of 30 utterances heard differently after other audio.
            decoder.reinit_feat()
            yield decoder
        finally:
            self._release(model, decoder)

    def _release(self, model: str, decoder: Any) -> None:
        with self._lock:
            self._idle[model].append(decoder)

    # -- decoding --------------------------------------------------------------------

    def transcribe(self, pcm: bytes, sample_rate: int = 24000, *, expect: str | None = None) -> str:
        """The words spoken in ``pcm``, lower case, digits as words ("two pizzas").

        Safe to call from several threads at once; the words depend on
        ``pcm`` and ``expect`` only, not on what was decoded before.

        Args:
            pcm: PCM16 little-endian mono speech (one utterance).
            sample_rate: its rate in Hz (24000, the Realtime API's, by default).
            expect: what the caller is expected to say: the name of an
                expectation decodes with its model; None, or a name with no
                model of its own, with the default model.

        Returns:
            The words heard, separated by single spaces; "" for silence.

        Raises:
            ConfigError: ``pcm`` is not whole PCM16 samples, or a bad rate.
        """
        check_rate(sample_rate, "transcriber input")
        check_pcm(pcm, where="transcriber input")
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size == 0:
            return ""
        if sample_rate != _MODEL_RATE:
            samples = resample(samples, sample_rate, _MODEL_RATE)
        samples = trim(samples)
        narrowband = sample_rate <= 8000 or _narrowband(samples)
        model = expect if expect in self._models else _DEFAULT
        best: tuple[float, list[str]] | None = None
        with self._decoder(model) as decoder:
            # Where the 10 ms frames fall on the speech changes what is heard
            # (measured: a one-sample shift turned "twelve main street" into
            # "twenty oak lane street"); the frames are laid at a few offsets
            # and the best-scoring hypothesis is kept.
            for shift in _SHIFTS:
                shifted = np.concatenate([samples[shift:], np.zeros(shift, samples.dtype)])
                decoder.reinit_feat()
                decoder.start_utt()
                decoder.process_raw(prepare(shifted, narrowband), no_search=False, full_utt=True)
                decoder.end_utt()
                hyp = decoder.hyp()
                if hyp is None:
                    continue
                words = [seg.word for seg in decoder.seg()]
                if best is None or hyp.score > best[0]:
                    best = (hyp.score, words)
        words = best[1] if best is not None else []
        return " ".join(_clean(w) for w in words if _is_word(w))


def trim(samples: np.ndarray, margin_s: float = 0.2) -> np.ndarray:
    """16 kHz samples of the speech alone, ``margin_s`` of quiet kept (or added) each side.

    A turn committed by voice activity detection carries a pause at each
    end, of a length that depends on timing; long pauses skew the decoder's
    cepstral mean, and where the decoder's 10 ms frames fall on the speech
    changes what it hears. So the cut is made at the sample: from
    ``margin_s`` before the first sample louder than 1% of the peak to
    ``margin_s`` after the last, padded with zeros where the turn had less,
    and the same speech gives the same samples however much pause was
    around it. Quiet 10 ms frames 40 dB below the loudest one are no speech.
    """
    frame = _MODEL_RATE // 100
    count = samples.size // frame
    if count < 3:
        return samples
    frames = samples[: count * frame].astype(np.float64).reshape(count, frame)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    loud = np.flatnonzero(energy > max(energy.max() * _QUIET, 1.0))
    if loud.size == 0:
        return samples[:0]
    span = samples[loud[0] * frame : (loud[-1] + 1) * frame].astype(np.int32)
    above = np.flatnonzero(np.abs(span) > 0.01 * np.abs(span).max())
    first, last = loud[0] * frame + above[0], loud[0] * frame + above[-1] + 1
    margin = round(margin_s * _MODEL_RATE)
    start, stop = first - margin, last + margin
    head = np.zeros(max(-start, 0), dtype=samples.dtype)
    tail = np.zeros(max(stop - samples.size, 0), dtype=samples.dtype)
    return np.concatenate([head, samples[max(start, 0) : stop], tail])


def prepare(samples: np.ndarray, narrowband: bool) -> bytes:
    """16 kHz samples as the decoder hears them best: padded and dithered.

    The acoustic model learnt from recordings with a noise floor. Digital
    silence, and the empty band above 4 kHz of phone audio brought up to
    16 kHz, give filter-bank energies it never saw, and words at the edges
    or the whole utterance are misheard (measured: word error 19% -> 5% on
    wide-band synthetic speech, 49% -> 18% on phone audio). A little white
    noise, relative to the speech level and stronger for narrow-band audio,
    plus a short pause at both ends, fixes that. The noise is seeded, so the
    same audio always gives the same words.
    """
    pad = np.zeros(round(_PAD_S * _MODEL_RATE), dtype=np.float64)
    signal = np.concatenate([pad, samples.astype(np.float64), pad])
    level = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
    scale = max(level, 1000.0) * (_NOISE_NARROW if narrowband else _NOISE_WIDE)
    signal += np.random.default_rng(0).normal(0.0, scale, signal.size)
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def _narrowband(samples: np.ndarray) -> bool:
    """Whether 16 kHz audio has next to nothing above 4 kHz (phone audio resampled)."""
    if samples.size < 512:
        return False
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    total = float(power.sum())
    high = float(power[int(power.size * 4200 / 8000):].sum())
    return total > 0 and high / total < 1e-5


def _clean(word: str) -> str:
    """``"pizza(2)"`` (a pronunciation variant) -> ``"pizza"``."""
    return word.split("(", 1)[0]


def _is_word(word: str) -> bool:
    return not (word.startswith(("<", "[")) or word in ("<s>", "</s>", "<sil>"))


def _arpa(sentences: list[str], discount: float) -> str:
    from pocketsphinx.lm import ArpaBoLM

    model = ArpaBoLM(text="\n".join(sentences), add_start=True, discount_mass=discount)
    model.compute()
    out = io.StringIO()
    model.write(out)
    return out.getvalue()


def _read_dictionary(path: Path) -> dict[str, list[str]]:
    """Word -> its dictionary lines (``pizza P IY T S AH``, ``pizza(2) ...``)."""
    entries: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            head = line.split(" ", 1)[0]
            if head:
                entries.setdefault(_clean(head), []).append(line.rstrip("\n").split(" #")[0])
    return entries


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, so a concurrent reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def _default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "pipeflow-asr"


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:
        raise LocalError("offline transcription needs the 'pocketsphinx' package; install it "
                         "with 'pip install pocketsphinx'.") from exc
    return pocketsphinx


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits (substitutions, insertions, deletions) per reference word.

    Both texts are normalised first (case, punctuation, digits as words).
    An empty reference gives 0.0 for an empty hypothesis, else 1.0 per word.
    """
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref:
        return float(len(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
