"""The ``cascade`` stage: speech-to-text, a Chat Completions LLM and text-to-speech.

The same conversation engine as the ``realtime`` stage decides everything
(turns, responses, tool round trips, barge-in, truncation); this stage only
carries its commands out with three models instead of one:

- ``AppendAudio`` / ``CommitAudio``: the caller's audio of a turn is kept,
  then transcribed offline by pocketsphinx in a worker thread; the words
  become a user message and a ``UserTranscript``;
- ``StartResponse``: a streamed chat completion over the history (system
  instructions, user words, assistant answers and tool calls, tool
  results); each sentence is spoken by espeak-ng (in a worker thread) as
  soon as it is complete, so the first audio follows the first sentence;
  the completion's tool calls become ``ToolCalled`` for the ``tools`` stage;
- ``CancelResponse`` (barge-in): the completion and the speech stop at
  once, and what was spoken is kept in the history; ``TruncateItem`` then
  cuts it to what the caller heard;
- ``SendToolResult`` / ``AddMessage``: messages of the history.

Where the LLM is: ``base_url`` (any OpenAI-compatible server: OpenAI,
Azure, Groq, vLLM, llama.cpp, Ollama...), else the OpenAI API when
``OPENAI_API_KEY`` is set, else the local server's script engine in-process
(``script``), offline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Annotated, Any

import msgspec

from pipeflow.asr.options import TranscriberOptions, build_transcriber
from pipeflow.audio.tts import synthesize_async
from pipeflow.cascade.chat import ChatError, ChatHistory, ChatStream, SentenceSplitter
from pipeflow.cascade.llm import ChatClient, HttpChat, OfflineChat
from pipeflow.cascade.script_llm import ScriptChat
from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.events import (
    AddMessage,
    AppendAudio,
    AudioOut,
    CancelResponse,
    Command,
    CommitAudio,
    ModelError,
    ModelInput,
    ResponseBegan,
    ResponseEnded,
    SendToolResult,
    SetTimer,
    StartResponse,
    TextOut,
    TimerCommand,
    TimerFired,
    ToolCalled,
    TruncateItem,
    UserTranscript,
)
from pipeflow.errors import ConfigError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
    PlayoutPosition,
    ResponseDone,
    ResponseStarted,
    Say,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.realtime.script import DEFAULT_SCRIPT, load_script
from pipeflow.stage import Frames, Stage
from pipeflow.turns import TurnMachine

__all__ = ["CascadeOptions", "CascadeTransport"]

OPENAI_BASE_URL = "https://api.openai.com/v1"


class CascadeOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``cascade`` stage."""

    base_url: str = ""
    """Chat Completions API root (``.../v1``); empty: the OpenAI API when the key is
    set, else the offline script engine."""
    model: str = "gpt-4o-mini"
    """Chat model name sent to ``base_url``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written in YAML)."""
    instructions: str | None = None
    """System message (default: the agent's instructions)."""
    script: str | None = None
    """Offline LLM: the local server's script to play (empty: its demo script)."""
    transcriber: TranscriberOptions | None = None
    """Offline STT: pocketsphinx with these sentences (default: the script's
    ``transcriber`` section, else the general English model)."""
    voice: str = "en-us"
    """espeak-ng voice of the answers."""
    words_per_minute: Annotated[int, msgspec.Meta(ge=80, le=450)] = 175
    """Speaking rate of the answers."""
    output_rate: Annotated[int, msgspec.Meta(gt=0)] = 24000
    """Sample rate of the agent audio produced."""
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100
    """Agent audio is emitted in frames this long."""
    response_on_start: bool = False
    """The agent speaks first (a greeting)."""
    tool_timeout_s: float | None = 60.0
    """A tool with no result after this long gets an error result."""
    drain_timeout_s: float = 10.0
    """How long the end of input waits for the answer in progress."""
    rate_limit_wait_max_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """On a 429 before the answer began, wait the ``retry-after`` asked for and try once
    more when it is at most this long (0: report the 429 at once)."""
    offline_chunk_delay_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Offline LLM only: delay between streamed chunks (a model's token rate)."""


class _FromModel(Frame, tag="cascade_engine_input"):
    """Internal: an engine input from one of the stage's tasks, through its input."""

    kind = "system"
    event: Any
    response: str = ""


class _Response:
    """One response in flight: its task, and what was spoken of its item."""

    def __init__(self, request_id: str, item_id: str) -> None:
        self.request_id = request_id
        self.item_id = item_id
        self.task: asyncio.Task[None] | None = None
        self.began = False
        self.spoken: list[str] = []
        self.calls_reported = False


class CascadeTransport(Stage):
    """A conversation over STT + Chat Completions + TTS, on the conversation engine."""

    name = "cascade"
    Options = CascadeOptions
    accepts = (ToolResult, PlayoutPosition, Interrupt, TextInput, Say, TurnCommitted)
    consumes = (AudioFrame, TurnCommitted, TextInput, Say, SpeechStarted, Interrupt,
                ToolResult, PlayoutPosition)
    produces = (SessionStarted, ResponseStarted, AudioFrame, Transcript, ToolCall, ResponseDone,
                SpeechStarted, SpeechStopped, Interrupt, ErrorFrame, Metric)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)  # keyword mappings (transcriber={...}) as in YAML
        self.options: CascadeOptions
        self.turns = TurnMachine()
        self.engine: ConversationEngine | None = None
        self.history: ChatHistory | None = None
        self.llm: ChatClient | None = None
        self.transcriber: Any = None
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._audio = bytearray()
        self._audio_rate = 0
        self._stt: asyncio.Task[str] | None = None
        self._response: _Response | None = None
        self._dropped: set[str] = set()  # responses cancelled: their queued inputs are stale
        self._items = itertools.count(1)
        self._turn_items = itertools.count(1)

    @property
    def input_rate(self) -> int:
        """Caller audio rate wanted: the recogniser's (16 kHz), so a resample before it
        converts once, not twice."""
        return 16000

    # -- set-up --------------------------------------------------------------------

    def _make_llm(self) -> tuple[ChatClient, Any]:
        """The chat client, and the script (offline) for the transcriber default."""
        opts = self.options
        key = os.environ.get(opts.api_key_env, "")
        base_url = opts.base_url or (OPENAI_BASE_URL if key else "")
        if base_url:
            return HttpChat(base_url, opts.model, key), None
        script = load_script(opts.script) if opts.script else DEFAULT_SCRIPT
        chat = ScriptChat(script)
        return OfflineChat(chat, opts.offline_chunk_delay_ms / 1000), script

    def _make_transcriber(self, script: Any) -> Any:
        opts = self.options
        if opts.transcriber is not None:
            return build_transcriber(opts.transcriber, f"stage {self.ctx.name}")
        if script is not None and script.transcriber is not None:
            return build_transcriber(script.transcriber, script.source)
        from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

        return PocketsphinxTranscriber()

    def _tools(self) -> list[dict[str, Any]]:
        agent = self.ctx.pipeline.agent
        if agent is not None and hasattr(agent, "tool_schemas"):
            return list(agent.tool_schemas("chat"))
        return []

    # -- the loop ------------------------------------------------------------------

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        engine = self.engine = ConversationEngine(EngineOptions(
            name=self.ctx.name, model_turns=False, respond_on_start=opts.response_on_start,
            tool_timeout_s=opts.tool_timeout_s, drain_timeout_s=opts.drain_timeout_s),
            turns=self.turns)
        agent = self.ctx.pipeline.agent
        self.history = ChatHistory(opts.instructions or getattr(agent, "instructions", None))
        self.llm, script = self._make_llm()
        self.transcriber = await asyncio.to_thread(self._make_transcriber, script)
        tools = self._tools()
        try:
            yield SessionStarted(session_id=self.ctx.pipeline.session_id)
            engine.start(time.perf_counter())
            self._run(engine.commands_to_send(), tools)
            async for frame in frames:
                if type(frame) is _FromModel:
                    if frame.response in self._dropped:  # type: ignore[attr-defined]
                        continue  # made by a cancelled response before it stopped
                    engine.receive_event(frame.event, time.perf_counter())  # type: ignore[attr-defined]
                else:
                    engine.receive_frame(frame, time.perf_counter())
                self._run(engine.commands_to_send(), tools)
                self._arm(engine.timers_to_set())
                for item in engine.frames_to_emit():
                    yield item
                if engine.finished:
                    break
            engine.close()
            await self._close()
            yield EndOfStream()
        except BaseException:
            engine.fail()
            raise
        finally:
            await self._close()

    async def _close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        response, self._response = self._response, None
        if response is not None and response.task is not None:
            response.task.cancel()
        llm, self.llm = self.llm, None
        if llm is not None:
            await llm.aclose()

    # -- commands ------------------------------------------------------------------

    def _run(self, commands: list[Command], tools: list[dict[str, Any]]) -> None:
        history = self.history
        engine = self.engine
        assert history is not None and engine is not None
        for command in commands:
            match command:
                case AppendAudio(pcm=pcm, sample_rate=rate):
                    if self._audio and rate != self._audio_rate:
                        raise ConfigError(
                            f"stage {self.ctx.name}: caller audio changed rate mid-turn "
                            f"({self._audio_rate} Hz to {rate} Hz)")
                    self._audio_rate = rate
                    self._audio += pcm
                case CommitAudio():
                    pcm, self._audio = bytes(self._audio), bytearray()
                    self._stt = self.ctx.spawn(self._transcribe(pcm, self._audio_rate),
                                               name=f"{self.ctx.name}.stt")
                case AddMessage(text=text, role=role):
                    history.add_message(text, role)
                case SendToolResult(call_id=call_id, output=output):
                    history.add_tool_result(call_id, output)
                case StartResponse(request_id=request_id, say=say):
                    response = _Response(request_id, f"item_{next(self._items)}")
                    self._response = response
                    response.task = self.ctx.spawn(self._respond(response, say, tools),
                                                   name=f"{self.ctx.name}.response")
                case CancelResponse():
                    self._cancel(engine)
                case TruncateItem(item_id=item_id, audio_end_ms=end):
                    history.truncate(item_id, end)

    def _cancel(self, engine: ConversationEngine) -> None:
        """Barge-in: stop the completion and the speech now; keep what was spoken."""
        response, self._response = self._response, None
        if response is None:
            return
        if response.task is not None:
            response.task.cancel()
        self._dropped.add(response.request_id)
        if not response.calls_reported:
            assert self.history is not None
            self.history.add_assistant(response.item_id, " ".join(response.spoken))
        engine.receive_event(ResponseEnded(response_id=response.request_id, status="cancelled"),
                             time.perf_counter())

    # -- the models ----------------------------------------------------------------

    async def _emit(self, event: ModelInput, response: _Response | None = None) -> None:
        await self.ctx.emit(_FromModel(event=event,
                                       response=response.request_id if response else ""))

    async def _transcribe(self, pcm: bytes, rate: int) -> str:
        """STT of one committed turn, off the event loop; the words join the history."""
        item_id = f"input_{next(self._turn_items)}"
        words = ""
        if pcm:
            # Offline, the script says what the caller is expected to say next.
            expect = self.llm.chat.dialogue.expect if isinstance(self.llm, OfflineChat) else None
            words = await asyncio.to_thread(self.transcriber.transcribe, pcm, rate, expect=expect)
        assert self.history is not None
        self.history.add_message(words, "user")
        await self._emit(UserTranscript(item_id=item_id, text=words))
        return words

    async def _respond(self, response: _Response, say: str | None,
                       tools: list[dict[str, Any]]) -> None:
        """One response: the caller's words, the streamed answer, spoken by sentence."""
        stt = self._stt
        if stt is not None and say is None:
            await asyncio.shield(stt)  # the words of the turn come first
            if self._stt is stt:
                self._stt = None
        item = response.item_id
        history = self.history
        assert history is not None and self.llm is not None
        stream = ChatStream()
        splitter = SentenceSplitter()
        speech: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.ensure_future(self._speak(response, speech))
        try:
            if say is not None:
                await self._began(response)
                await self._emit(TextOut(item_id=item, text=say), response)
                stream.text = say
                speech.put_nowait(say)
            else:
                try:
                    await self._complete(response, stream, splitter, speech, tools)
                except ChatError as exc:
                    wait = exc.retry_after
                    if (exc.status != 429 or response.began or wait is None
                            or wait > self.options.rate_limit_wait_max_s):
                        raise
                    await asyncio.sleep(wait)
                    await self._complete(response, stream, splitter, speech, tools)
                if not stream.done:
                    raise ChatError("the chat model's stream ended before the answer was "
                                    "complete (no finish_reason, no [DONE])", "stream_cut")
                for sentence in splitter.flush():
                    speech.put_nowait(sentence)
            speech.put_nowait(None)
            await speaker
            calls = stream.tool_calls()
            history.add_assistant(item, stream.text, calls)
            response.calls_reported = True
            await self._emit(TextOut(item_id=item, text=stream.text, final=True), response)
            for call in calls:
                await self._emit(ToolCalled(call_id=call.call_id, name=call.name,
                                            arguments=call.arguments), response)
            await self._emit(ResponseEnded(response_id=response.request_id,
                                           usage=stream.usage), response)
        except ChatError as exc:
            speaker.cancel()
            await self._emit(ModelError(message=str(exc), code=exc.code,
                                        request_id=response.request_id), response)
            if response.began:
                history.add_assistant(item, " ".join(response.spoken))
                response.calls_reported = True
                await self._emit(ResponseEnded(response_id=response.request_id,
                                               status="failed"), response)
        finally:
            speaker.cancel()
            if self._response is response:
                self._response = None

    async def _complete(self, response: _Response, stream: ChatStream,
                        splitter: SentenceSplitter, speech: asyncio.Queue[str | None],
                        tools: list[dict[str, Any]]) -> None:
        """Stream one completion: text deltas out, finished sentences to the speaker."""
        assert self.history is not None and self.llm is not None
        async for data in self.llm.stream(self.history.messages, tools):
            delta = stream.feed_data(data)
            await self._began(response)
            if delta:
                await self._emit(TextOut(item_id=response.item_id, text=delta), response)
                for sentence in splitter.feed(delta):
                    speech.put_nowait(sentence)

    async def _began(self, response: _Response) -> None:
        if not response.began:
            response.began = True
            await self._emit(ResponseBegan(response_id=response.request_id), response)

    async def _speak(self, response: _Response, sentences: asyncio.Queue[str | None]) -> None:
        """TTS of each sentence as it comes, in a worker thread; audio in ``chunk_ms`` frames."""
        opts = self.options
        assert self.history is not None
        rate = opts.output_rate
        step = rate * opts.chunk_ms // 1000 * 2
        spoken_ms = 0.0
        while (sentence := await sentences.get()) is not None:
            samples = await synthesize_async(sentence, rate, opts.voice, opts.words_per_minute)
            pcm = samples.tobytes()
            # Recorded before its audio goes out: a barge-in mid-sentence keeps it, and
            # the truncation to the played position cuts it to the words heard.
            spoken_ms += len(pcm) / 2 / rate * 1000
            response.spoken.append(sentence)
            self.history.spoken(response.item_id, sentence, spoken_ms)
            for start in range(0, len(pcm), step):
                await self._emit(AudioOut(item_id=response.item_id, pcm=pcm[start:start + step],
                                          sample_rate=rate), response)

    # -- timers ----------------------------------------------------------------------

    def _arm(self, timers: list[TimerCommand]) -> None:
        for timer in timers:
            old = self._timers.pop(timer.name, None)
            if old is not None:
                old.cancel()
            if isinstance(timer, SetTimer):
                self._timers[timer.name] = self.ctx.spawn(
                    self._fire(timer), name=f"{self.ctx.name}.timer")

    async def _fire(self, timer: SetTimer) -> None:
        await asyncio.sleep(max(0.0, timer.at - time.perf_counter()))
        self._timers.pop(timer.name, None)
        self.ctx.emit_nowait(_FromModel(event=TimerFired(name=timer.name)))
