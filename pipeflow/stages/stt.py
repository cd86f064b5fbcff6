"""The ``stt`` stage: each committed caller turn becomes the caller's words.

The caller's audio since the last commit is kept; on ``TurnCommitted`` it
is transcribed, while the audio and the commit go on downstream at once
(the ``llm`` stage's engine takes the turn and waits for its words). The
words come out as a final user ``Transcript`` (``item_id`` ``input_N``), in
turn order. Where the recogniser is: ``base_url``'s
``/audio/transcriptions`` (OpenAI, or a compatible server; with
``streaming``, its Realtime transcription session, fed while the caller
speaks), else OpenAI's when the key is set, else pocketsphinx in-process, off the event loop,
with the sentences of ``transcriber`` or of the script's ``transcriber``
section. A failed transcription is an ``ErrorFrame`` and an empty
transcript, so the turn is still answered ("sorry, I didn't catch that")
and the call goes on.

The ``llm`` stage after it says what the caller is expected to say next
(``Expecting``: a phone number, an address), as its offline script knows;
each turn is transcribed with the expectation last told before its commit,
so the offline recogniser listens for digits when a number is asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Annotated, Any

import msgspec

from pipeflow.asr.options import TranscriberOptions
from pipeflow.asr.process import transcriber_for
from pipeflow.cascade.audio import HttpTranscriber, OfflineTranscriber, SttClient
from pipeflow.cascade.chat import ChatError
from pipeflow.cascade.endpoint import endpoint, with_retries
from pipeflow.cascade.frames import Expecting
from pipeflow.cascade.retry import RetryPolicy
from pipeflow.cascade.stream_stt import RealtimeTranscriber
from pipeflow.errors import ConfigError
from pipeflow.frames import AudioFrame, EndOfStream, ErrorFrame, Metric, Transcript, TurnCommitted
from pipeflow.realtime.script import load_script
from pipeflow.stage import Frames, Stage

__all__ = ["SpeechToText", "SttOptions"]


class SttOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``stt`` stage."""

    base_url: str = ""
    """API root serving ``/audio/transcriptions``; empty: OpenAI's when the key is set,
    else pocketsphinx offline."""
    model: str = "gpt-4o-mini-transcribe"
    """Transcription model sent to ``base_url``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written in YAML)."""
    language: str = ""
    """ISO-639-1 code of the caller's language (empty: the model guesses)."""
    streaming: bool = False
    """Over a Realtime transcription session (``{base_url}/realtime?intent=transcription``,
    a WebSocket): the caller's audio is sent while they speak and only the commit is
    left at the end of the turn. Needs ``base_url`` or the key; offline, pocketsphinx
    in-process either way."""
    transcriber: TranscriberOptions | None = None
    """Offline: pocketsphinx with these sentences (default: the script's ``transcriber``
    section, else the general English model)."""
    script: str | None = None
    """Offline: the script whose ``transcriber`` section to use."""
    max_turn_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Longest turn kept: older audio of a longer one is dropped."""
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    """Retries of a failed request (429 after its retry-after, 5xx after a back-off)."""


class SpeechToText(Stage):
    """Caller turns in, caller words out (``Transcript(role="user")``)."""

    name = "stt"
    Options = SttOptions
    duplex = True
    accepts = (Expecting,)
    consumes = (AudioFrame, TurnCommitted, EndOfStream, Expecting)
    produces = (Transcript, ErrorFrame, Metric)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.options: SttOptions
        self.client: SttClient | None = None
        self._stream: RealtimeTranscriber | None = None  # the client, when it streams

    @property
    def input_rate(self) -> int:
        """The recogniser's rate (16 kHz), so a resample before it converts once."""
        return 16000

    def _make_client(self) -> SttClient:
        opts = self.options
        where = endpoint(opts.base_url, opts.api_key_env)
        if where.base_url and opts.streaming:
            return RealtimeTranscriber(where.base_url, opts.model, where.api_key, opts.language)
        if where.base_url:
            return HttpTranscriber(where.base_url, opts.model, where.api_key, opts.language)
        # In a process that serves calls (a worker), decoded in child processes as the
        # local server's are: pocketsphinx holds the GIL for tens of ms at a time.
        if opts.transcriber is not None:
            return OfflineTranscriber(transcriber_for(opts.transcriber,
                                                      f"stage {self.ctx.name}"))
        script = load_script(opts.script) if opts.script else None
        if script is not None and script.transcriber is not None:
            return OfflineTranscriber(transcriber_for(script.transcriber, script.source))
        from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

        return OfflineTranscriber(PocketsphinxTranscriber())

    async def process(self, frames: Frames) -> Frames:
        self.client = await asyncio.to_thread(self._make_client)
        stream = self._stream = (self.client if isinstance(self.client, RealtimeTranscriber)
                                 else None)
        turns = itertools.count(1)
        audio = bytearray()
        rate = 0
        last: asyncio.Task[None] | None = None
        waiting: set[str] = set()  # turns whose words are not out yet
        ending: EndOfStream | None = None
        expect: str | None = None  # what the llm stage said the caller will say next
        try:
            async for frame in frames:
                kind = type(frame)
                if kind is AudioFrame and not frame.item_id:  # type: ignore[attr-defined]
                    if audio and frame.sample_rate != rate:  # type: ignore[attr-defined]
                        raise ConfigError(
                            f"stage {self.ctx.name}: caller audio changed rate mid-turn "
                            f"({rate} Hz to {frame.sample_rate} Hz)")  # type: ignore[attr-defined]
                    rate = frame.sample_rate  # type: ignore[attr-defined]
                    audio += frame.pcm  # type: ignore[attr-defined]
                    if stream is not None:  # heard while the caller speaks
                        stream.append(frame.pcm, rate)  # type: ignore[attr-defined]
                    keep = int(self.options.max_turn_s * rate) * 2
                    if len(audio) > keep:
                        del audio[:len(audio) - keep]
                elif kind is Expecting:
                    expect = frame.expect  # type: ignore[attr-defined]
                elif kind is TurnCommitted and audio:
                    item_id = f"input_{next(turns)}"
                    waiting.add(item_id)
                    # Committed here, in order with the audio; the words are awaited apart.
                    committed = stream.commit(expect) if stream is not None else None
                    last = self.ctx.spawn(self._turn(bytes(audio), rate, item_id, last, expect,
                                                     committed),
                                          name=f"{self.ctx.name}.turn")
                    audio = bytearray()
                elif kind is Transcript:
                    waiting.discard(frame.item_id)  # type: ignore[attr-defined]
                elif kind is EndOfStream:
                    ending = frame  # type: ignore[assignment]
                    # held until the words of the last turns are out
                if kind is not EndOfStream and kind is not Expecting:
                    yield frame  # (feedback from downstream goes no further)
                if ending is not None and not waiting:
                    yield ending
                    break
        finally:
            if last is not None:
                last.cancel()
            client, self.client = self.client, None
            if client is not None:
                await client.aclose()

    async def _turn(self, pcm: bytes, rate: int, item_id: str,
                    before: asyncio.Task[None] | None, expect: str | None,
                    committed: asyncio.Future[str] | None = None) -> None:
        """Transcribe one turn; its words go out after those of the turn before.

        ``committed``: the streaming session's answer to this turn's commit (its
        audio is gone, so a failure is not retried).
        """
        assert self.client is not None
        client = self.client
        started = time.perf_counter()
        words = ""
        error: ErrorFrame | None = None
        try:
            if committed is not None and self._stream is not None:
                words = await self._stream.words(committed)
            else:
                words = await with_retries(lambda: client.transcribe(pcm, rate, expect),
                                           self.options.retry, self._retrying)
        except ChatError as exc:
            error = ErrorFrame(stage=self.ctx.name, message=str(exc), code=exc.code)
        took = time.perf_counter() - started
        if before is not None:
            await asyncio.shield(before)
        if error is not None:
            await self.ctx.emit(error)
        await self.ctx.emit(Metric(stage=self.ctx.name, name="stt_s", value=took, unit="s"))
        await self.ctx.emit(Transcript(role="user", text=words, final=True, item_id=item_id))

    def _retrying(self, error: ChatError, delay: float) -> None:
        self.ctx.log.warning("%s; trying again in %.2f s", error, delay)
