"""The ``tts`` stage: the agent's words become speech, sentence by sentence.

It reads the agent ``Transcript`` deltas the ``llm`` stage streams and
starts speaking each sentence as soon as it is complete, so the first audio
follows the first sentence, not the whole answer. The speech goes back
upstream to the ``llm`` stage as ``SpeechAudio`` (its conversation engine
emits it as the agent's audio, and drops the tail of an answer it
cancelled) and ``SpeechDone`` ends each item. An ``Interrupt`` (barge-in)
stops the voice at once and drops the sentences not spoken yet.

Where the voice is: ``base_url``'s ``/audio/speech`` (``response_format:
pcm``, 24 kHz, read as it streams), else OpenAI's when the key is set, else
espeak-ng in-process, off the event loop. A failed sentence is an
``ErrorFrame``; the rest of the answer is still spoken.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, ClassVar

import msgspec

from pipeflow.cascade.audio import SPEECH_RATE, HttpSpeech, OfflineSpeech, SpeechClient
from pipeflow.cascade.chat import ChatError, SentenceSplitter
from pipeflow.cascade.endpoint import endpoint
from pipeflow.cascade.frames import SpeechAudio, SpeechDone
from pipeflow.cascade.retry import RetryPolicy, retry_delay
from pipeflow.frames import EndOfStream, ErrorFrame, Interrupt, Metric, Transcript
from pipeflow.stage import Frames, Stage

__all__ = ["TextToSpeech", "TtsOptions"]


class TtsOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``tts`` stage."""

    base_url: str = ""
    """API root serving ``/audio/speech``; empty: OpenAI's when the key is set, else
    espeak-ng offline."""
    model: str = "gpt-4o-mini-tts"
    """Speech model sent to ``base_url``."""
    voice: str = ""
    """The voice: the provider's name (default: the agent's voice, else ``alloy``), or
    offline an espeak-ng voice (default ``en-us``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written in YAML)."""
    instructions: str = ""
    """How to speak (models that take it)."""
    words_per_minute: Annotated[int, msgspec.Meta(ge=80, le=450)] = 175
    """Offline: the speaking rate."""
    output_rate: Annotated[int, msgspec.Meta(gt=0)] = SPEECH_RATE
    """Offline: the sample rate made (the API's ``pcm`` is always 24 kHz)."""
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100
    """Speech goes out in pieces this long."""
    min_sentence_chars: Annotated[int, msgspec.Meta(ge=0)] = 12
    """A shorter sentence ("Hi.") waits to be spoken with the next one."""
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    """Retries of a sentence whose request failed before any of its audio came."""


class _Item:
    """The speech of one output item: its sentences, spoken in order by one task."""

    def __init__(self, item_id: str, min_chars: int) -> None:
        self.item_id = item_id
        self.splitter = SentenceSplitter(min_chars)
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class TextToSpeech(Stage):
    """Agent text in, agent speech out (back to the ``llm`` stage, which emits it)."""

    name = "tts"
    Options = TtsOptions
    duplex = True
    speaks: ClassVar[bool] = True
    """The ``llm`` stage before it waits for ``SpeechDone`` before ending a response."""
    consumes = (Transcript, Interrupt)
    produces = (SpeechAudio, SpeechDone, ErrorFrame, Metric)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.options: TtsOptions
        self.voice: SpeechClient | None = None
        self._item: _Item | None = None
        self._stopped: list[str] = []  # items barged in on: their late text is not spoken

    def _make_voice(self) -> SpeechClient:
        opts = self.options
        where = endpoint(opts.base_url, opts.api_key_env)
        if where.base_url:
            agent = self.ctx.pipeline.agent
            voice = opts.voice or getattr(agent, "voice", None) or "alloy"
            return HttpSpeech(where.base_url, opts.model, voice, where.api_key,
                              opts.instructions)
        return OfflineSpeech(opts.output_rate, opts.voice or "en-us", opts.words_per_minute)

    async def process(self, frames: Frames) -> Frames:
        self.voice = self._make_voice()
        try:
            async for frame in frames:
                kind = type(frame)
                if kind is Transcript and frame.role == "agent":  # type: ignore[attr-defined]
                    self._text(frame)  # type: ignore[arg-type]
                elif kind is Interrupt:
                    self._stop()
                yield frame
                if kind is EndOfStream:
                    break  # the llm stage ends only once every answer is spoken
        finally:
            self._stop()
            voice, self.voice = self.voice, None
            if voice is not None:
                await voice.aclose()

    def _text(self, frame: Transcript) -> None:
        item = self._item
        if frame.item_id in self._stopped:
            return
        if item is None or item.item_id != frame.item_id:
            self._stop()  # a new answer: what is left of the last one is stale
            item = self._item = _Item(frame.item_id, self.options.min_sentence_chars)
            item.task = self.ctx.spawn(self._speak(item), name=f"{self.ctx.name}.speak")
        if frame.final:
            for sentence in item.splitter.flush():
                item.sentences.put_nowait(sentence)
            item.sentences.put_nowait(None)
        else:
            for sentence in item.splitter.feed(frame.text):
                item.sentences.put_nowait(sentence)

    def _stop(self) -> None:
        """Barge-in: the voice stops now; nothing more of this item is spoken."""
        item, self._item = self._item, None
        if item is not None and item.task is not None:
            item.task.cancel()
            self._stopped = [*self._stopped[-7:], item.item_id]

    async def _speak(self, item: _Item) -> None:
        """Speak each sentence as it comes; the audio goes back upstream in pieces."""
        failed = False
        first = True
        while (sentence := await item.sentences.get()) is not None:
            try:
                await self._sentence(item.item_id, sentence,
                                     time.perf_counter() if first else None)
            except ChatError as exc:
                failed = True
                await self.ctx.emit(ErrorFrame(stage=self.ctx.name, message=str(exc),
                                               code=exc.code))
            first = False
        self.ctx.send_upstream(SpeechDone(item_id=item.item_id, failed=failed))
        if self._item is item:
            self._item = None

    async def _sentence(self, item_id: str, sentence: str, started: float | None) -> None:
        assert self.voice is not None
        voice = self.voice
        step = voice.sample_rate * self.options.chunk_ms // 1000 * 2
        attempt = 1
        while True:
            sent = False
            pending = b""
            try:
                async for pcm in voice.speak(sentence):
                    pending += pcm
                    view, at = memoryview(pending), 0  # pieces cut without copying the rest
                    # The first piece goes out as soon as any audio exists (a streamed
                    # voice's first read may be shorter than a piece); the rest in pieces.
                    while len(pending) - at >= step or (not sent and len(pending) > at):
                        piece = bytes(view[at:at + step])
                        self._send(item_id, piece, voice.sample_rate, "" if sent else sentence)
                        at += len(piece)
                        if not sent:
                            sent = True
                            if started is not None:
                                await self._first_audio(started)
                            # The first piece goes on through the llm stage and out before
                            # the rest of the sentence is queued behind it.
                            await asyncio.sleep(0)
                    view.release()
                    pending = pending[at:]
                if pending:
                    self._send(item_id, pending, voice.sample_rate, "" if sent else sentence)
                    if not sent and started is not None:
                        await self._first_audio(started)
                return
            except ChatError as exc:
                delay = None if sent or pending else retry_delay(exc, attempt,
                                                                 self.options.retry)
                if delay is None:
                    if pending:  # what came of a cut answer is still spoken
                        self._send(item_id, pending, voice.sample_rate, "" if sent else sentence)
                    raise
                self.ctx.log.warning("%s; trying again in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                attempt += 1

    def _send(self, item_id: str, pcm: bytes, rate: int, sentence: str) -> None:
        self.ctx.send_upstream(SpeechAudio(item_id=item_id, pcm=pcm, sample_rate=rate,
                                           sentence=sentence))

    async def _first_audio(self, started: float) -> None:
        await self.ctx.emit(Metric(stage=self.ctx.name, name="tts_first_audio_s",
                                   value=time.perf_counter() - started, unit="s"))
