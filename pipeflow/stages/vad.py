"""The ``vad`` stage: marks where the caller starts and stops speaking.

Audio passes through undelayed and unchanged; the boundary frames found in
each audio frame follow it. ``SpeechStarted.at`` is the onset in stream
time, which lies a little before the frame that confirmed it (pre-roll):
consumers that buffer audio keep from ``at`` on, so the first syllable is
not lost. Only caller audio (no ``item_id``) is analysed.
"""

from __future__ import annotations

from pipeflow.audio.pcm import check_rate, mix_down, view
from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.frames import AudioFrame, EndOfStream, SpeechStarted, SpeechStopped, TurnCommitted
from pipeflow.stage import Frames, Stage

__all__ = ["Vad"]


class Vad(Stage):
    """Voice activity detection: inserts speech-started/stopped and turn-committed frames."""

    name = "vad"
    Options = VadOptions
    consumes = (AudioFrame,)
    produces = (AudioFrame, SpeechStarted, SpeechStopped, TurnCommitted)

    async def process(self, frames: Frames) -> Frames:
        segmenter: Segmenter | None = None
        async for frame in frames:
            if type(frame) is AudioFrame and not frame.item_id:
                yield frame
                if segmenter is None or segmenter.sample_rate != frame.sample_rate:
                    if segmenter is not None:
                        for event in segmenter.finish():
                            yield event
                    check_rate(frame.sample_rate, _where(frame))
                    segmenter = Segmenter(self.options, frame.sample_rate)
                pcm = frame.pcm if frame.channels == 1 else _mono(frame)
                for event in segmenter.feed(pcm, frame.pts):
                    yield event
                continue
            if isinstance(frame, EndOfStream) and segmenter is not None:
                for event in segmenter.finish():  # close an open turn before the end
                    yield event
                segmenter = None
            yield frame


def _where(frame: AudioFrame) -> str:
    return f"vad input frame at pts {frame.pts:.3f} s"


def _mono(frame: AudioFrame) -> bytes:
    """A multi-channel frame mixed down, so the detector never reads interleaved samples."""
    where = _where(frame)
    return mix_down(view(frame.pcm, where), frame.channels, where).tobytes()
