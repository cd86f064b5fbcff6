"""The ``end_of_turn`` stage: commits the caller's turn when they are done, and says
when their speech over the agent is meant.

It follows a ``vad`` stage (``commit_on_silence: false``, a short
``min_silence_ms``: the VAD only finds the pauses) and runs the I/O-free
``TurnTracker`` on the caller's audio and the VAD's boundaries: the VAD's
``SpeechStarted`` / ``SpeechStopped`` become tentative speech episodes with
``SpeechConfirmed`` when meant, and ``TurnCommitted`` comes when the
end-of-turn model says the turn is over. With a ``recogniser``, the turn so
far is decoded at each pause in a worker thread (never on the event loop),
and in a child process where the process serves calls
(``pipeflow.asr.process``: pocketsphinx holds the GIL while it decodes, so a
thread alone still stalls the loop); its words are used once they come, the
audio keeps flowing meanwhile. With a recogniser and ``commands``, a short
burst over the agent is also decoded against a one-phrase grammar
(``CommandSpotter``, in worker threads): a command ("stop", "hold on")
interrupts however short it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from pipeflow.asr.process import transcriber_for
from pipeflow.audio.pcm import mix_down, view
from pipeflow.errors import ConfigError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Frame,
    SpeechConfirmed,
    SpeechStarted,
    SpeechStopped,
    TurnCommitted,
)
from pipeflow.registry import import_ref
from pipeflow.stage import Frames, Stage
from pipeflow.turn_detect.commands import CommandSpotter, command_spotter
from pipeflow.turn_detect.model import EndOfTurnModel, ProsodyModel
from pipeflow.turn_detect.options import TurnOptions
from pipeflow.turn_detect.tracker import TurnTracker

__all__ = ["EndOfTurn", "build_model"]


def build_model(ref: str) -> EndOfTurnModel:
    """The end-of-turn model ``ref`` names: ``prosody`` or ``package.module:Class``.

    Raises:
        ConfigError: the class cannot be imported, or has no ``probability`` method.
    """
    if ref == "prosody":
        return ProsodyModel()
    found = import_ref(ref, "end-of-turn model")
    model = found() if isinstance(found, type) else found
    if not callable(getattr(model, "probability", None)):
        raise ConfigError(f"end_of_turn option model: {ref} has no probability(turn) method")
    return model  # type: ignore[no-any-return]


class EndOfTurn(Stage):
    """Adaptive end of turn and confirmed interruptions after a ``vad`` stage."""

    name = "end_of_turn"
    Options = TurnOptions
    consumes = (AudioFrame, SpeechStarted, SpeechStopped, TurnCommitted)
    produces = (SpeechStarted, SpeechStopped, SpeechConfirmed, TurnCommitted)

    async def process(self, frames: Frames) -> Frames:
        self._check_vad()
        options: TurnOptions = self.options
        transcriber: Any = None
        spotter: CommandSpotter | None = None
        if options.recogniser is not None:
            transcriber = transcriber_for(options.recogniser, f"stage {self.ctx.name}")
            if options.commands:
                spotter = command_spotter(options.commands, options.backchannels)
        tracker = TurnTracker(options, build_model(options.model), transcriber is not None,
                              spotter is not None)
        running: dict[int, asyncio.Future[str]] = {}
        loop = asyncio.get_running_loop()
        async for frame in frames:
            out: list[Frame] = []
            for token in [t for t, f in running.items() if f.done()]:
                out += tracker.words(token, running.pop(token).result())
            kind = type(frame)
            held = tracker.holding_for()
            if held is not None and held in running:
                out += tracker.words(held, await running.pop(held))
            if kind is AudioFrame and not frame.item_id:  # type: ignore[attr-defined]
                yield frame
                out += tracker.audio(_samples(frame), frame.sample_rate,  # type: ignore[attr-defined]
                                     frame.pts)  # type: ignore[attr-defined]
            elif kind is SpeechStarted and not frame.item_id:  # type: ignore[attr-defined]
                out += tracker.speech_started(frame)  # type: ignore[arg-type]
            elif kind is SpeechStopped and not frame.item_id:  # type: ignore[attr-defined]
                out += tracker.speech_stopped(frame)  # type: ignore[arg-type]
            elif kind is TurnCommitted:
                out += tracker.committed()
                out.append(frame)
            elif isinstance(frame, EndOfStream):
                out += tracker.finish()
                out.append(frame)
            else:
                yield frame
            for item in out:
                yield item
            for decode in tracker.decodes_to_run():
                pcm = decode.audio.astype("<i2").tobytes()
                decoder = spotter.spot if decode.kind == "command" else transcriber.transcribe
                running[decode.token] = loop.run_in_executor(
                    None, decoder, pcm, decode.sample_rate)
        for future in running.values():
            future.cancel()

    def _check_vad(self) -> None:
        for stage in self.ctx.upstream_stages():
            if stage.name == "vad" and getattr(stage.options, "commit_on_silence", False):
                raise ConfigError(
                    f"stage {self.ctx.name}: the vad stage before it commits turns itself; "
                    "set its commit_on_silence: false (end_of_turn decides when a turn ends)")


def _samples(frame: AudioFrame) -> np.ndarray:
    where = f"end_of_turn input frame at pts {frame.pts:.3f} s"
    samples = view(frame.pcm, where)
    return samples if frame.channels == 1 else mix_down(samples, frame.channels, where)
