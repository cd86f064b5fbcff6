"""The ``llm`` stage: a Chat Completions model with tools, on the conversation engine.

The ``ConversationEngine`` decides everything (turns, responses, tool round
trips, barge-in, truncation to what was heard), as in the ``realtime``
stage; this stage carries its commands out over a streamed chat completion:

- ``CommitAudio``: the turn's words come from the ``stt`` stage before it,
  as a user ``Transcript``; the response asked for waits for them;
- ``StartResponse``: a streamed completion over the history (instructions,
  user words, assistant answers and their tool calls, tool results); each
  text delta goes downstream as an agent ``Transcript`` (the ``tts`` stage
  after it speaks each sentence as soon as it is complete); the tool calls
  become ``ToolCall``s for the ``tools`` stage, dispatched unchanged;
- the speech comes back from ``tts`` as ``SpeechAudio``: the engine emits it
  as the agent's audio, and the response ends when ``SpeechDone`` says it
  is all spoken (a barge-in until then cancels it);
- ``CancelResponse`` (barge-in): the completion stops at once, the history
  keeps what was spoken, ``TruncateItem`` cuts it to what the caller heard;
- ``SendToolResult`` / ``AddMessage``: messages of the history;
- after each answer, what the caller is expected to say next (the offline
  script's dialogue state: a phone number, an address) goes upstream to the
  ``stt`` stage as ``Expecting``, for its recogniser to listen for.

Where the model is: ``base_url`` (OpenAI, Azure, Groq, vLLM, llama.cpp,
Ollama...), else OpenAI when the key is set, else the local server's script
engine in-process, offline. A request that fails before its answer began is
retried as ``retry`` says; a failure is an ``ErrorFrame`` and the call goes on, but a
refused key (401, 403) ends the call with a fatal error: every later request would fail.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Annotated, Any

import msgspec

from pipeflow.cascade.chat import ChatError, ChatHistory, ChatStream
from pipeflow.cascade.endpoint import endpoint
from pipeflow.cascade.frames import Expecting, SpeechAudio, SpeechDone
from pipeflow.cascade.llm import ChatClient, HttpChat, OfflineChat
from pipeflow.cascade.retry import RetryPolicy, retry_delay
from pipeflow.cascade.script_llm import ScriptChat
from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.events import (
    AddMessage,
    AudioOut,
    CancelResponse,
    Command,
    CommitAudio,
    ModelError,
    ModelInput,
    ResponseBegan,
    ResponseEnded,
    SendToolResult,
    StartResponse,
    TextOut,
    ToolCalled,
    TruncateItem,
    UserTranscript,
)
from pipeflow.conversation.timers import EngineTimers
from pipeflow.errors import RemoteError
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
    TextInput,
    ToolCall,
    ToolResult,
    Transcript,
    TurnCommitted,
)
from pipeflow.realtime.script import DEFAULT_SCRIPT, load_script
from pipeflow.stage import Frames, Stage
from pipeflow.turns import TurnMachine

__all__ = ["ChatModel", "LlmOptions"]

KEY_REFUSED = frozenset({"http_401", "http_403"})
"""Error codes that end the call: a refused key refuses every later request too."""


class LlmOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``llm`` stage."""

    base_url: str = ""
    """Chat Completions API root (``.../v1``); empty: OpenAI's when the key is set, else
    the offline script engine."""
    model: str = "gpt-4o-mini"
    """Chat model name sent to ``base_url``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written in YAML)."""
    instructions: str | None = None
    """System message (default: the agent's instructions)."""
    script: str | None = None
    """Offline: the local server's script to play (empty: its demo script)."""
    response_on_start: bool = False
    """The agent speaks first (a greeting)."""
    tool_timeout_s: float | None = 60.0
    """A tool with no result after this long gets an error result."""
    drain_timeout_s: float = 10.0
    """How long the end of input waits for the answer in progress."""
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    """Retries of a request that failed before its answer began (429, 5xx, no connection)."""
    offline_chunk_delay_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Offline only: delay between streamed chunks (a model's token rate)."""


class _FromTask(Frame, tag="llm_engine_input"):
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
        self.completed = False  # the whole answer is in the history
        self.spoken: list[str] = []
        self.spoken_ms = 0.0
        self.speech_done = asyncio.Event()


class ChatModel(Stage):
    """A conversation over a Chat Completions model, on the conversation engine."""

    name = "llm"
    Options = LlmOptions
    accepts = (ToolResult, PlayoutPosition, Interrupt, TextInput, Say, TurnCommitted,
               SpeechAudio, SpeechDone)
    consumes = (AudioFrame, TurnCommitted, Transcript, TextInput, Say, SpeechStarted, Interrupt,
                ToolResult, PlayoutPosition, SpeechAudio, SpeechDone)
    produces = (SessionStarted, ResponseStarted, AudioFrame, Transcript, ToolCall, ResponseDone,
                Interrupt, ErrorFrame, Metric, Expecting)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.options: LlmOptions
        self.turns = TurnMachine()
        self.engine: ConversationEngine | None = None
        self.history: ChatHistory | None = None
        self.llm: ChatClient | None = None
        self._timers: EngineTimers | None = None
        self._response: _Response | None = None
        self._dropped: set[str] = set()  # responses cancelled: their queued inputs are stale
        self._items = itertools.count(1)
        self._commits = 0  # turns committed ...
        self._heard = 0  # ... and their words received from the stt stage
        self._words = asyncio.Event()
        self._spoken_by_tts = False
        self._expect: str | None = None  # the expectation last told upstream

    # -- set-up --------------------------------------------------------------------

    def _make_llm(self) -> ChatClient:
        opts = self.options
        where = endpoint(opts.base_url, opts.api_key_env)
        if where.base_url:
            return HttpChat(where.base_url, opts.model, where.api_key)
        script = load_script(opts.script) if opts.script else DEFAULT_SCRIPT
        return OfflineChat(ScriptChat(script), opts.offline_chunk_delay_ms / 1000)

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
        self.llm = await asyncio.to_thread(self._make_llm)
        self._tell_expect()
        self._spoken_by_tts = any(getattr(s, "speaks", False)
                                  for s in self.ctx.downstream_stages())
        tools = self._tools()
        timers = self._timers = EngineTimers(self.ctx.emit_nowait,
                                             lambda event: _FromTask(event=event))
        try:
            yield SessionStarted(session_id=self.ctx.pipeline.session_id)
            engine.start(time.perf_counter())
            self._run(engine.commands_to_send(), tools)
            async for frame in frames:
                now = time.perf_counter()
                kind = type(frame)
                if kind is _FromTask:
                    if frame.response in self._dropped:  # type: ignore[attr-defined]
                        continue  # made by a cancelled response before it stopped
                    engine.receive_event(frame.event, now)  # type: ignore[attr-defined]
                    event = frame.event  # type: ignore[attr-defined]
                    if isinstance(event, ModelError) and event.code in KEY_REFUSED:
                        raise RemoteError(f"{event.message}; every later request would be "
                                          "refused too, so the call ends")
                elif kind is SpeechAudio:
                    self._speech(frame, engine, now)  # type: ignore[arg-type]
                elif kind is SpeechDone:
                    response = self._response
                    if response is not None and response.item_id == frame.item_id:  # type: ignore[attr-defined]
                        response.speech_done.set()
                elif kind is Transcript and frame.role == "user":  # type: ignore[attr-defined]
                    self._user_words(frame, engine, now)  # type: ignore[arg-type]
                else:
                    engine.receive_frame(frame, now)
                self._run(engine.commands_to_send(), tools)
                timers.arm(engine.timers_to_set())
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
        if self._timers is not None:
            self._timers.cancel_all()
        response, self._response = self._response, None
        if response is not None and response.task is not None:
            response.task.cancel()
        llm, self.llm = self.llm, None
        if llm is not None:
            await llm.aclose()

    def _user_words(self, frame: Transcript, engine: ConversationEngine, now: float) -> None:
        """The stt stage's words of a committed turn: a user message of the history."""
        assert self.history is not None
        self.history.add_message(frame.text, "user")
        self._heard += 1
        self._words.set()
        engine.receive_event(UserTranscript(item_id=frame.item_id, text=frame.text), now)

    def _speech(self, frame: SpeechAudio, engine: ConversationEngine, now: float) -> None:
        """Speech of the answer, back from the tts stage: the engine emits it as audio."""
        response = self._response
        if response is None or response.item_id != frame.item_id:
            return  # of an answer cancelled meanwhile
        assert self.history is not None
        response.spoken_ms += len(frame.pcm) / 2 / frame.sample_rate * 1000
        # Recorded before its audio goes out: a barge-in mid-sentence keeps it,
        # and the truncation to the played position cuts it to the words heard.
        if frame.sentence:
            response.spoken.append(frame.sentence)
            self.history.spoken(frame.item_id, frame.sentence, response.spoken_ms)
        else:
            self.history.spoken_until(frame.item_id, response.spoken_ms)
        engine.receive_event(AudioOut(item_id=frame.item_id, pcm=frame.pcm,
                                      sample_rate=frame.sample_rate), now)

    # -- commands ------------------------------------------------------------------

    def _run(self, commands: list[Command], tools: list[dict[str, Any]]) -> None:
        history = self.history
        engine = self.engine
        assert history is not None and engine is not None
        for command in commands:
            match command:
                case CommitAudio():
                    self._commits += 1
                case AddMessage(text=text, role=role):
                    history.add_message(text, role)
                case SendToolResult(call_id=call_id, output=output):
                    history.add_tool_result(call_id, output)
                case StartResponse(request_id=request_id, say=say):
                    response = _Response(request_id, f"item_{next(self._items)}")
                    self._response = response
                    response.task = self.ctx.spawn(
                        self._respond(response, say, tools, self._commits),
                        name=f"{self.ctx.name}.response")
                case CancelResponse():
                    self._cancel(engine)
                case TruncateItem(item_id=item_id, audio_end_ms=end):
                    history.truncate(item_id, end)
                case _:
                    pass  # AppendAudio: the stt stage before this one keeps the audio

    def _cancel(self, engine: ConversationEngine) -> None:
        """Barge-in: stop the completion now; keep what was spoken."""
        response, self._response = self._response, None
        if response is None:
            return
        if response.task is not None:
            response.task.cancel()
        self._dropped.add(response.request_id)
        if not response.completed:
            assert self.history is not None
            self.history.add_assistant(response.item_id, " ".join(response.spoken))
        engine.receive_event(ResponseEnded(response_id=response.request_id, status="cancelled"),
                             time.perf_counter())

    # -- the model -----------------------------------------------------------------

    async def _emit(self, event: ModelInput, response: _Response | None = None) -> None:
        await self.ctx.emit(_FromTask(event=event,
                                      response=response.request_id if response else ""))

    async def _respond(self, response: _Response, say: str | None,
                       tools: list[dict[str, Any]], commits: int) -> None:
        """One response: wait for the caller's words, stream the answer, wait for its speech."""
        while say is None and self._heard < commits:
            self._words.clear()
            await self._words.wait()  # the words of the turn come first
        item = response.item_id
        history = self.history
        assert history is not None
        try:
            if say is not None:
                await self._began(response)
                await self._emit(TextOut(item_id=item, text=say), response)
                text, calls, usage = say, [], {}
            else:
                stream = await self._complete_retrying(response, tools)
                text, calls, usage = stream.text, stream.tool_calls(), stream.usage
                self._tell_expect()
                await self._began(response)
            history.add_assistant(item, text, calls)
            response.completed = True
            await self._emit(TextOut(item_id=item, text=text, final=True), response)
            for call in calls:
                await self._emit(ToolCalled(call_id=call.call_id, name=call.name,
                                            arguments=call.arguments), response)
            if self._spoken_by_tts:
                await response.speech_done.wait()
            await self._emit(ResponseEnded(response_id=response.request_id, usage=usage),
                             response)
        except ChatError as exc:
            await self._emit(ModelError(message=str(exc), code=exc.code,
                                        request_id=response.request_id), response)
            if response.began:
                if not response.completed:
                    history.add_assistant(item, " ".join(response.spoken))
                    response.completed = True
                await self._emit(TextOut(item_id=item, text="", final=True), response)
                await self._emit(ResponseEnded(response_id=response.request_id,
                                               status="failed"), response)
        finally:
            if self._response is response:
                self._response = None

    async def _complete_retrying(self, response: _Response,
                                 tools: list[dict[str, Any]]) -> ChatStream:
        """``_complete``, tried again while nothing of the answer was streamed."""
        attempt = 1
        while True:
            stream = ChatStream()
            try:
                await self._complete(response, stream, tools)
                if not stream.done:
                    raise ChatError("the chat model's stream ended before the answer was "
                                    "complete (no finish_reason, no [DONE])", "stream_cut")
                return stream
            except ChatError as exc:
                delay = None if response.began else retry_delay(exc, attempt,
                                                                self.options.retry)
                if delay is None:
                    raise
                self.ctx.log.warning("%s; trying again in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _complete(self, response: _Response, stream: ChatStream,
                        tools: list[dict[str, Any]]) -> None:
        """Stream one completion: its text downstream as it comes, one delta for the
        chunks that arrived together (not one per token: each costs every stage after)."""
        assert self.history is not None and self.llm is not None
        first = True
        started = time.perf_counter()
        async for batch in self.llm.batches(self.history.messages, tools):
            delta = "".join([stream.feed_data(data) for data in batch])
            if delta:
                took = time.perf_counter() - started
                await self._began(response)
                await self._emit(TextOut(item_id=response.item_id, text=delta), response)
                if first:  # after the text: the voice does not wait behind the metric
                    first = False
                    await self._emit_metric("llm_first_token_s", took)

    def _tell_expect(self) -> None:
        """Tell the stt stage what the caller is expected to say next, when it changed."""
        expect = self.llm.expect if self.llm is not None else None
        if expect != self._expect:
            self._expect = expect
            self.ctx.send_upstream(Expecting(expect=expect))

    async def _emit_metric(self, name: str, value: float) -> None:
        await self.ctx.emit(Metric(stage=self.ctx.name, name=name, value=value, unit="s"))

    async def _began(self, response: _Response) -> None:
        if not response.began:
            response.began = True
            await self._emit(ResponseBegan(response_id=response.request_id), response)
