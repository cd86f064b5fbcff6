"""Frames between the cascade's stages: the ``tts`` stage's speech, fed back to ``llm``.

The conversation engine lives in the ``llm`` stage and decides which agent
audio goes downstream (a cancelled answer's tail is dropped, positions and
the first-audio metric are its), so the ``tts`` stage does not emit its
speech itself: it sends it upstream as ``SpeechAudio``, and the engine
emits it as the agent's ``AudioFrame``. ``SpeechDone`` says an item is
wholly spoken: only then is the response over, so a barge-in during the
last sentences still cancels it.
"""

from __future__ import annotations

from typing import ClassVar

from pipeflow.frames import Frame

__all__ = ["SpeechAudio", "SpeechDone"]


class SpeechAudio(Frame, tag="speech_audio"):
    """Synthesised agent audio of ``item_id``, upstream from ``tts`` to ``llm``.

    ``sentence`` is set on the first chunk of each sentence (the words the
    chunks that follow speak), so the history knows what was said by when.
    """

    kind: ClassVar[str] = "control"
    item_id: str
    pcm: bytes
    sample_rate: int
    sentence: str = ""


class SpeechDone(Frame, tag="speech_done"):
    """Every sentence of ``item_id`` has been synthesised (``failed``: the voice failed)."""

    kind: ClassVar[str] = "control"
    item_id: str
    failed: bool = False
