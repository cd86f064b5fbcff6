"""Runs one corpus case through the real turn-taking parts on a simulated clock.

The parts are the ones a pipeline runs (the VAD ``Segmenter``, the
``TurnTracker``, the ``ConversationEngine`` and the sink's ``Playout``),
wired as the ``vad`` -> ``end_of_turn`` -> ``realtime`` -> sink stages wire
them, with time moving one 20 ms caller frame at a time: a frame counts as
received when its last sample is. The recogniser really decodes; its words
arrive as late as the decode took on this machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.turn_corpus import Case, agent_audio
from pipeflow.audio.playout import Playout
from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.events import AudioOut, CancelResponse, CommitAudio, ResponseBegan
from pipeflow.frames import (
    AudioFrame,
    Frame,
    Interrupt,
    PausePlayout,
    ResumePlayout,
    SpeechStarted,
    SpeechStopped,
    TurnCommitted,
)
from pipeflow.turn_detect.model import EndOfTurnModel, ProsodyModel
from pipeflow.turn_detect.options import TurnOptions
from pipeflow.turn_detect.tracker import TurnTracker

__all__ = ["VAD", "CachedTranscriber", "Outcome", "percentile", "run_case"]

VAD = VadOptions(min_silence_ms=150, commit_on_silence=False)
"""The VAD in front of the end-of-turn stage: it only finds the pauses."""

FRAME_S = 0.02
END_SLACK_S = 0.2
"""A commit this close before the true end ends the turn: the last 1%-of-peak samples
of a word are buried under noise at 10 dB SNR, for a listener as for the VAD."""
AGENT_RATE = 24000
AGENT_STARTS = 0.5  # the agent's answer starts playing here; callers talk from LEAD_S on


@dataclass
class Outcome:
    """What happened in one case, in track seconds."""

    case: Case
    commits: list[float] = field(default_factory=list)
    interrupted_at: float | None = None
    stops: list[float] = field(default_factory=list)  # agent audio stopped (paused) at the sink
    resumes: list[float] = field(default_factory=list)
    turns_sent: int = 0  # caller turns committed to the model
    decode_s: list[float] = field(default_factory=list)

    @property
    def false_cutoff(self) -> bool:
        """A commit before the turn's end: the caller was cut off."""
        return any(t < self.case.end - END_SLACK_S for t in self.commits)

    @property
    def end_delay(self) -> float | None:
        """End of the last sound to the commit (slightly negative: in its quiet tail)."""
        after = [t for t in self.commits if t >= self.case.end - END_SLACK_S]
        return after[0] - self.case.end if after else None

    @property
    def reaction(self) -> float | None:
        """True onset to the agent's audio stopping for good (barge-ins that interrupted)."""
        if self.interrupted_at is None:
            return None
        stops = [t for t in self.stops if t <= self.interrupted_at + FRAME_S + 1e-9]
        lasting = [t for t in stops if not any(t < r <= self.interrupted_at for r in self.resumes)]
        stop = lasting[0] if lasting else self.interrupted_at
        return stop - self.case.onset

    @property
    def held_s(self) -> float:
        """How long the agent was paused and then played on (a false start)."""
        return sum(r - s for s, r in zip(self.stops, self.resumes, strict=False))


def run_case(case: Case, options: TurnOptions, transcriber: object | None = None,
             model: EndOfTurnModel | None = None, vad: VadOptions = VAD,
             decode_s: float | None = None, spotter: object | None = None) -> Outcome:
    """Feed ``case`` through the turn-taking parts; see the module docstring.

    ``decode_s``: words arrive this long after a decode is asked for, instead of
    as long as it took (a test on a loaded machine stays deterministic).
    ``spotter``: the command spotter (a ``transcribe(pcm, rate)`` of its own), which
    the stage runs when it has a recogniser and ``commands``.
    """
    rate = case.rate
    outcome = Outcome(case)
    segmenter = Segmenter(vad, rate)
    tracker = TurnTracker(options, model or ProsodyModel(), transcriber is not None,
                          spotter is not None)
    engine = ConversationEngine(EngineOptions())
    playout = Playout(AGENT_RATE)
    engine.start(0.0)
    if case.over_agent:
        engine.receive_event(ResponseBegan(response_id="answer"), 0.0)
        agent = agent_audio(AGENT_RATE)
        step = round(FRAME_S * AGENT_RATE)
        for start in range(0, agent.size, step):
            engine.receive_event(AudioOut(item_id="item_answer",
                                          pcm=agent[start : start + step].tobytes(),
                                          sample_rate=AGENT_RATE), 0.0)
    pending_words: list[tuple[float, int, str]] = []
    step = round(FRAME_S * rate)
    samples = case.samples

    def to_engine(frame: Frame, now: float) -> None:
        engine.receive_frame(frame, now)
        for command in engine.commands_to_send():
            if type(command) is CommitAudio:
                outcome.turns_sent += 1
            elif type(command) is CancelResponse:
                outcome.interrupted_at = now
        for out in engine.frames_to_emit():
            kind = type(out)
            if kind is AudioFrame and out.item_id:  # type: ignore[attr-defined]
                playout.add(out.pcm, out.item_id, max(now, AGENT_STARTS))  # type: ignore[attr-defined]
            elif kind is PausePlayout:
                playout.release(now)
                playing = [i.current.end for i in playout.items.values()
                           if i.current is not None and i.current.end > now]
                outcome.stops.append(max([now, *playing]))
                playout.pause(now)
            elif kind is ResumePlayout:
                outcome.resumes.append(now)
                playout.resume(now)
            elif kind is Interrupt:
                if not outcome.stops or len(outcome.resumes) >= len(outcome.stops):
                    outcome.stops.append(now)
                playout.interrupt(now)
            elif kind is TurnCommitted:
                outcome.commits.append(now)

    def from_tracker(frames: list[Frame], now: float) -> None:
        for frame in frames:
            to_engine(frame, now)
        for decode in tracker.decodes_to_run():
            began = time.perf_counter()
            decoder = spotter if decode.kind == "command" else transcriber
            text = decoder.transcribe(  # type: ignore[attr-defined]
                decode.audio.astype("<i2").tobytes(), decode.sample_rate)
            took = getattr(decoder, "last_took", time.perf_counter() - began)
            if decode_s is not None:
                took = decode_s
            outcome.decode_s.append(took)
            pending_words.append((now + took, decode.token, text))

    for index, start in enumerate(range(0, samples.size - step + 1, step)):
        pts = index * FRAME_S
        now = pts + FRAME_S
        due = [w for w in pending_words if w[0] <= now]
        for word in due:
            pending_words.remove(word)
            from_tracker(tracker.words(word[1], word[2]), now)
        chunk = samples[start : start + step]
        events = segmenter.feed(chunk.tobytes(), pts)
        to_engine(AudioFrame(pcm=chunk.tobytes(), sample_rate=rate, pts=pts), now)
        from_tracker(tracker.audio(chunk, rate, pts), now)
        for event in events:
            if type(event) is SpeechStarted:
                from_tracker(tracker.speech_started(event), now)  # type: ignore[arg-type]
            elif type(event) is SpeechStopped:
                from_tracker(tracker.speech_stopped(event), now)  # type: ignore[arg-type]
        playout.release(now)
    from_tracker(tracker.finish(), samples.size / rate)
    return outcome


class CachedTranscriber:
    """A transcriber whose answers (and the time each first took) are kept, so a
    threshold sweep decodes each piece of audio once and still waits as long."""

    def __init__(self, transcriber: object, method: str = "transcribe") -> None:
        self.transcriber = transcriber
        self._call = getattr(transcriber, method)
        self.last_took = 0.0
        self._seen: dict[tuple[bytes, int], tuple[str, float]] = {}

    def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        key = (pcm, sample_rate)
        if key not in self._seen:
            began = time.perf_counter()
            text = self._call(pcm, sample_rate)
            self._seen[key] = (text, time.perf_counter() - began)
        text, self.last_took = self._seen[key]
        return text


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``; ``None`` when there are none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return float(np.quantile(np.asarray(values), q))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
