"""Frames between the cascade's stages: feedback from ``tts`` to ``llm``, ``llm`` to ``stt``.

The conversation engine lives in the ``llm`` stage and decides which agent
audio goes downstream (a cancelled answer's tail is dropped, positions and
the first-audio metric are its), so the ``tts`` stage does not emit its
speech itself: it sends it upstream as ``SpeechAudio``, and the engine
emits it as the agent's ``AudioFrame``. ``SpeechDone`` says an item is
wholly spoken: only then is the response over, so a barge-in during the
last sentences still cancels it.

``Expecting`` tells the ``stt`` stage what the caller is expected to say
next (a phone number, an address), as the offline chat model's dialogue
knows after each answer: the offline recogniser decodes the next turn
against that expectation's sentences, as the local Realtime server's does.
"""

from __future__ import annotations

from typing import ClassVar

from pipeflow.frames import Frame

__all__ = ["Expecting", "SpeechAudio", "SpeechDone"]


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


class Expecting(Frame, tag="expecting"):
    """What the caller is expected to say next, upstream from ``llm`` to ``stt``.

    ``expect`` names an expectation of the recogniser (``"phone"``); None:
    nothing in particular (a real chat model gives no expectation).
    """

    kind: ClassVar[str] = "control"
    expect: str | None = None
