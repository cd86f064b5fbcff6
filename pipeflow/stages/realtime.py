"""The ``realtime`` stage: a conversation with an OpenAI Realtime model.

Caller audio goes to the model (``input_audio_buffer.append``) as it comes;
a committed turn, a text input or a ``Say`` asks for a response; the model's
audio, transcripts and function calls come out as frames. The stage is
duplex: tool results and played positions come back from later stages, and
a reader task feeds the model's events into the same merged input, so one
loop owns all the state and the turn machine (``pipeflow.turns``) decides
what a barge-in does.

Where it connects: the ``url`` option, else ``OAI_REALTIME_URL``, else the
OpenAI API when a key is set, else a local Realtime server started
in-process (offline, scripted: ``script``, ``speed``, ``first_audio_delay_ms``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from pipeflow.audio import g711
from pipeflow.errors import ConfigError, RemoteError
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    Metric,
    ModelEvent,
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
from pipeflow.realtime import events as ev
from pipeflow.realtime.client import RealtimeClient, Reconnected
from pipeflow.realtime.options import RealtimeOptions, resolve_url
from pipeflow.realtime.protocol import SessionConfig
from pipeflow.stage import Frames, Stage
from pipeflow.turns import Action, Input, Turn, TurnMachine

log = logging.getLogger("pipeflow.stages.realtime")

__all__ = ["RealtimeTransport"]

_ENCODERS = {"g711_ulaw": g711.ulaw_encode, "g711_alaw": g711.alaw_encode}
_DECODERS = {"g711_ulaw": g711.ulaw_decode, "g711_alaw": g711.alaw_decode}


class _FromModel(Frame, tag="realtime_server_event"):
    """Internal: a server event carried through the stage's own input."""

    kind = "system"
    event: Any


class _Lost(msgspec.Struct):
    """Internal: the connection is gone for good."""

    message: str


_SILENT: frozenset[type] = frozenset({
    ev.SessionCreated, ev.SessionUpdated, ev.ConversationItemAdded, ev.ConversationItemCreated,
    ev.ConversationItemDone, ev.ConversationItemTruncated, ev.ConversationItemDeleted,
    ev.ResponseContentPartAdded, ev.ResponseContentPartDone, ev.OutputAudioDone,
    ev.OutputAudioDoneBeta, ev.ResponseFunctionCallArgumentsDelta, ev.InputTranscriptionDelta,
    ev.InputAudioBufferCleared, ev.RateLimitsUpdated,
})
"""Server events that make no frame: the reader drops them."""


class RealtimeTransport(Stage):
    """Talks to an OpenAI Realtime model (or the local stand-in) over WebSocket."""

    name = "realtime"
    Options = RealtimeOptions
    accepts = (ToolResult, PlayoutPosition, Interrupt, TextInput, Say, TurnCommitted)
    consumes = (
        AudioFrame,
        TurnCommitted,
        TextInput,
        Say,
        SpeechStarted,
        Interrupt,
        ToolResult,
        PlayoutPosition,
    )
    produces = (
        SessionStarted,
        ResponseStarted,
        AudioFrame,
        Transcript,
        ToolCall,
        ResponseDone,
        SpeechStarted,
        SpeechStopped,
        Interrupt,
        ErrorFrame,
        ModelEvent,
        Metric,
    )

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        if options is None:
            # Keyword options may hold plain mappings (reconnect={...}), as in YAML.
            try:
                options = msgspec.convert(kwargs, RealtimeOptions)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"stage realtime: {exc}") from None
            kwargs = {}
        super().__init__(options, **kwargs)
        self.options: RealtimeOptions
        self.turns = TurnMachine()
        self.client: RealtimeClient | None = None
        self.server: Any = None
        self._reset_conversation()
        self._appended = False
        self._ending = False
        self._lost = False
        self._drain_deadline = EndOfStream()
        self._next_request = 0
        self._timers: dict[str, asyncio.Task[None]] = {}

    def _reset_conversation(self) -> None:
        """Forget per-connection state (start, or after a reconnect)."""
        # State as this loop has seen it (the protocol object runs ahead: the
        # reader task decodes events before this loop handles them).
        self._active: str | None = None  # the response in progress
        self._requested: str | None = None  # event id of a response.create not yet answered
        self._deferred: list[dict[str, Any] | None] = []  # requests made while busy
        self._muted = False  # drop audio of a cancelled response until it is done
        self._cancels = 0  # response.cancel sent whose answer may be a "not active" error
        self._asked_at: float | None = None  # when the next answer was asked for
        self._timing: float | None = None  # ...and for the response in progress
        self._unplayed: set[str] = set()
        self._item_ms: dict[str, float] = {}
        self._calls: dict[str, ToolCall] = {}
        self._results: dict[str, ToolResult] = {}
        self._call_names: dict[str, str] = {}
        self._seen_calls: set[str] = set()
        self._calls_done = False  # the response that made the pending calls has ended

    @property
    def input_rate(self) -> int:
        """Sample rate the model takes (24000 for pcm16, 8000 for G.711)."""
        return self.options.input_rate

    # -- lifecycle ---------------------------------------------------------------

    def _session_config(self) -> SessionConfig:
        opts = self.options
        agent = self.ctx.pipeline.agent
        tools: list[dict[str, Any]] = []
        if agent is not None and hasattr(agent, "tool_schemas"):
            tools = list(agent.tool_schemas("realtime"))
        return SessionConfig(
            instructions=opts.instructions or getattr(agent, "instructions", None),
            voice=opts.voice or getattr(agent, "voice", None),
            tools=tools,
            tool_choice=opts.tool_choice,
            input_format=opts.input_format,
            output_format=opts.output_format,
            turn_detection=opts.turn_detection,
            transcription_model=opts.transcription_model
            or getattr(agent, "transcription_model", None),
        )

    async def _start_local_server(self) -> str:
        try:
            from pipeflow.realtime.server import LocalRealtimeServer
        except ImportError as exc:
            raise ConfigError(
                f"stage {self.ctx.name}: no Realtime URL and no API key, and the local "
                f"Realtime server is not available ({exc}); set 'url' or OPENAI_API_KEY"
            ) from exc
        opts = self.options
        self.server = LocalRealtimeServer(
            script=opts.script,
            port=0,
            first_audio_delay_ms=opts.first_audio_delay_ms,
            speed=opts.speed,
        )
        await self.server.__aenter__()
        return str(self.server.url)

    async def _connect(self) -> RealtimeClient:
        opts = self.options
        url = resolve_url(opts)
        if url is None:
            url = await self._start_local_server()
        client = RealtimeClient(opts, session=self._session_config(), url=url)
        agent = self.ctx.pipeline.agent
        client.model = opts.model_name(getattr(agent, "model", None))
        await client.connect()
        self.client = client
        return client

    async def _close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        server, self.server = self.server, None
        if server is not None:
            await server.__aexit__(None, None, None)

    async def _read(self, client: RealtimeClient) -> None:
        """Reader task: server events into the stage's input (waits when it is full).

        Events that make no frame and change no state are left out here, so
        they cost the stage's loop nothing (half of what precedes first audio).
        """
        emit = self.ctx.emit
        try:
            async for event in client.events():
                kind = type(event)
                if kind in _SILENT or (kind is ev.OutputItemAdded
                                       and event.item.type != "function_call"):  # type: ignore[union-attr]
                    continue
                await emit(_FromModel(event=event))
        except RemoteError as exc:
            self.ctx.emit_nowait(_FromModel(event=_Lost(str(exc))))

    # -- the loop ------------------------------------------------------------------

    async def process(self, frames: Frames) -> Frames:
        try:
            client = await self._connect()
            self.ctx.spawn(self._read(client), name=f"{self.ctx.name}.reader")
            yield SessionStarted(session_id=self.ctx.pipeline.session_id)
            if self.options.response_on_start:
                self._request()
                await client.flush()
            inbox = self.ctx.inbox
            assert inbox is not None  # a duplex stage
            proto = client.protocol
            async for frame in frames:
                kind = type(frame)
                if kind is _FromModel:
                    out = self._on_event(frame.event)  # type: ignore[attr-defined]
                elif kind is AudioFrame and not frame.item_id:  # type: ignore[attr-defined]
                    self._append(frame)  # type: ignore[arg-type]
                    out = (frame,)
                elif isinstance(frame, EndOfStream):
                    out = self._on_end(frame)
                else:
                    out = self._on_frame(frame)
                # Events queued behind this frame go out with what it made (one await
                # for a burst), bounded so a busy input never holds sends back.
                if proto.pending and (not len(inbox) or proto.pending >= 8):
                    await client.flush()
                for item in out:
                    yield item
                if self._lost:
                    return
                if self._ending and (self._idle() or frame is self._drain_deadline):
                    if frame is self._drain_deadline and not self._idle():
                        yield self._error(
                            "the model's answer did not finish within "
                            f"drain_timeout_s={self.options.drain_timeout_s:g} s;"
                            " closing the session"
                        )
                    break
            self.turns.close()
            await self._close()
            yield EndOfStream()
        except BaseException:
            self.turns.fail()
            raise
        finally:
            await self._close()

    def _idle(self) -> bool:
        return not (self.turns.busy or self._calls or self._requested or self._active is not None)

    def _error(
        self, message: str, *, fatal: bool = False, code: str = "", event_id: str = "",
        error_type: str = "",
    ) -> ErrorFrame:
        return ErrorFrame(
            stage=self.ctx.name, message=message, fatal=fatal, code=code, event_id=event_id,
            error_type=error_type,
        )

    # -- upstream and feedback frames -----------------------------------------------

    def _append(self, frame: AudioFrame) -> None:
        opts = self.options
        if frame.sample_rate != opts.input_rate:
            raise ConfigError(self._rate_hint(frame.sample_rate))
        pcm = frame.pcm
        if opts.input_format != "pcm16":
            pcm = _ENCODERS[opts.input_format](pcm)
        assert self.client is not None
        self.client.protocol.append_audio(pcm)
        self._appended = True

    def _rate_hint(self, rate: int) -> str:
        want = self.options.input_rate
        fmt = self.options.input_format
        base = (
            f"stage {self.ctx.name}: the model takes {want} Hz audio ({fmt}) but got "
            f"{rate} Hz audio"
        )
        if any(st.name == "resample" for st in self.ctx.upstream_stages()):
            return base + f"; set the resample stage before it to rate: {want} (or leave it empty)"
        return base + f"; add a 'resample' stage (rate: {want}) before it"

    def _on_frame(self, frame: Frame) -> tuple[Frame, ...]:
        assert self.client is not None
        proto = self.client.protocol
        if isinstance(frame, TurnCommitted):
            if self.options.turn_detection == "none":
                if not self._appended:
                    return (frame,)
                proto.commit()
                self._appended = False
                self.turns.feed(Input.COMMITTED)
                self._request()
            return (frame,)
        if isinstance(frame, TextInput):
            proto.create_text_item(frame.text, frame.role)
            if frame.role == "user":
                self._request()
            return (frame,)
        if isinstance(frame, Say):
            self._request(
                {
                    "instructions": "Say exactly the following text, word for word, and nothing "
                    f"else: {frame.text}",
                    "metadata": {"say": frame.text[:512]},
                }
            )
            return (frame,)
        if isinstance(frame, SpeechStarted):
            return (*self._apply(self.turns.feed(Input.SPEECH_STARTED), "barge_in"), frame)
        if isinstance(frame, SpeechStopped):
            self.turns.feed(Input.SPEECH_STOPPED)
            return (frame,)
        if isinstance(frame, Interrupt):
            return self._apply(self.turns.feed(Input.INTERRUPT), frame.reason, always=True)
        if isinstance(frame, ToolResult):
            self._on_result(frame)
            return ()
        if isinstance(frame, PlayoutPosition):
            self._unplayed.discard(frame.item_id)
            if frame.interrupted:
                proto.truncate(frame.item_id, frame.played_ms)
            return ()
        return (frame,)

    def _apply(
        self, actions: tuple[Action, ...], reason: str, always: bool = False
    ) -> tuple[Frame, ...]:
        """Carry out a transition's actions; returns the frames to yield."""
        assert self.client is not None
        proto = self.client.protocol
        out: tuple[Frame, ...] = ()
        if Action.CANCEL in actions and self._active is not None:
            proto.cancel_response()
            self._cancels += 1
            self._muted = True
        if Action.INTERRUPT in actions and (always or self._unplayed or self._muted):
            self._unplayed.clear()
            out = (Interrupt(reason=reason),)
        return out

    def _request(self, response: dict[str, Any] | None = None, deferred: bool = False) -> None:
        """Ask for a response now, or once the one in progress is done."""
        assert self.client is not None
        proto = self.client.protocol
        self.turns.feed(Input.REQUESTED)
        if not deferred:
            self._asked_at = time.perf_counter()
        if self._requested or self._active is not None:
            if response is not None or not self._deferred or self._deferred[-1] is not None:
                self._deferred.append(response)  # plain requests made while busy merge
            return
        self._next_request += 1
        self._requested = f"pf_response_{self._next_request}"
        proto.create_response(response, event_id=self._requested)

    def _on_end(self, frame: EndOfStream) -> tuple[Frame, ...]:
        if frame is self._drain_deadline:
            return ()
        self._ending = True
        if (self.options.turn_detection != "none" and self._appended
                and self.turns.state is Turn.LISTENING):
            # The caller was mid-turn when the input ended: server VAD will hear no
            # silence now, so end the turn here and have it answered.
            assert self.client is not None
            self.client.protocol.commit()
            self._appended = False
            self.turns.feed(Input.COMMITTED)
            self._request()
        if not self._idle():
            self.ctx.spawn(self._drain_timer(), name=f"{self.ctx.name}.drain")
        return ()

    async def _drain_timer(self) -> None:
        await asyncio.sleep(self.options.drain_timeout_s)
        self.ctx.emit_nowait(self._drain_deadline)

    # -- tools ---------------------------------------------------------------------

    def _on_call(self, call_id: str, name: str, arguments: str) -> tuple[Frame, ...]:
        if not call_id or call_id in self._seen_calls:
            return ()
        self._seen_calls.add(call_id)
        call = ToolCall(call_id=call_id, name=name, arguments=arguments or "{}")
        self._calls[call_id] = call
        self.turns.feed(Input.TOOL_PENDING)
        timeout = self.options.tool_timeout_s
        if timeout is not None:
            self._timers[call_id] = self.ctx.spawn(
                self._tool_timer(call, timeout), name=f"{self.ctx.name}.tool_timeout"
            )
        return (call,)

    async def _tool_timer(self, call: ToolCall, timeout: float) -> None:
        await asyncio.sleep(timeout)
        self._timers.pop(call.call_id, None)
        output = msgspec.json.encode(
            {"error": f"the tool {call.name!r} did not answer within {timeout:g} s"}
        ).decode()
        self.ctx.emit_nowait(
            self._error(
                f"tool {call.name!r} (call {call.call_id}) did not answer within "
                f"{timeout:g} s; the model gets an error result",
                code="tool_timeout",
            )
        )
        self.ctx.emit_nowait(
            ToolResult(call_id=call.call_id, name=call.name, output=output, is_error=True)
        )

    def _on_result(self, result: ToolResult) -> None:
        if result.call_id not in self._calls:
            return  # late (timed out), or from before a reconnect
        timer = self._timers.pop(result.call_id, None)
        if timer is not None:
            timer.cancel()
        self._results[result.call_id] = result
        self._send_results()

    def _send_results(self) -> None:
        """When every call of the response has its result and the response is done:
        one function_call_output per call, then one response.create."""
        if not self._calls or not self._calls_done or len(self._results) < len(self._calls):
            return
        assert self.client is not None
        proto = self.client.protocol
        for call_id in self._calls:
            result = self._results[call_id]
            output = result.output
            if result.is_error and not output:
                output = '{"error": "the tool failed"}'
            proto.create_function_output(call_id, output)
        self._calls.clear()
        self._results.clear()
        self._calls_done = False
        if self.turns.state.value != "listening":  # the caller took the floor: they go first
            self._request()

    # -- server events ---------------------------------------------------------------

    def _on_event(self, event: Any) -> tuple[Frame, ...]:
        if isinstance(event, ev.OutputAudioDelta):
            return self._on_audio(event)
        if isinstance(event, ev.OutputAudioTranscriptDelta | ev.OutputTextDelta):
            return (Transcript(role="agent", text=event.delta, final=False, item_id=event.item_id),)
        if isinstance(event, ev.OutputAudioTranscriptDone):
            return (Transcript(role="agent", text=event.transcript, item_id=event.item_id),)
        if isinstance(event, ev.OutputTextDone):
            return (Transcript(role="agent", text=event.text, item_id=event.item_id),)
        if isinstance(event, ev.ResponseCreated):
            return self._on_response_created(event)
        if isinstance(event, ev.ResponseDone):
            return self._on_response_done(event)
        if isinstance(event, ev.OutputItemAdded):
            if event.item.type == "function_call" and event.item.call_id:
                self._call_names[event.item.call_id] = event.item.name or ""
            return ()
        if isinstance(event, ev.ResponseFunctionCallArgumentsDone):
            name = event.name or self._call_names.get(event.call_id, "")
            return self._on_call(event.call_id, name, event.arguments)
        if isinstance(event, ev.OutputItemDone):
            item = event.item
            if item.type == "function_call" and item.call_id:
                return self._on_call(item.call_id, item.name or "", item.arguments or "")
            return ()
        if isinstance(event, ev.InputTranscriptionCompleted):
            return (Transcript(role="user", text=event.transcript, item_id=event.item_id),)
        if isinstance(event, ev.InputAudioBufferSpeechStarted):
            frame = SpeechStarted(at=event.audio_start_ms / 1000, item_id=event.item_id)
            return (*self._apply(self.turns.feed(Input.SPEECH_STARTED), "barge_in"), frame)
        if isinstance(event, ev.InputAudioBufferSpeechStopped):
            self.turns.feed(Input.SPEECH_STOPPED)
            return (SpeechStopped(at=event.audio_end_ms / 1000, item_id=event.item_id),)
        if isinstance(event, ev.InputAudioBufferCommitted):
            if self.options.turn_detection != "none":
                self._appended = False
                self.turns.feed(Input.COMMITTED)
                self._asked_at = time.perf_counter()
            return ()
        if isinstance(event, ev.ErrorEvent):
            return self._on_error(event)
        if isinstance(event, ev.UnknownEvent):
            return (ModelEvent(event=event.type, data=event.data),)
        if isinstance(event, Reconnected):
            return self._on_reconnected(event)
        if isinstance(event, _Lost):
            return self._on_lost(event)
        return ()

    def _on_audio(self, event: ev.OutputAudioDelta) -> tuple[Frame, ...]:
        if self._muted or not event.delta:
            return ()
        opts = self.options
        pcm = event.delta
        if opts.output_format != "pcm16":
            pcm = _DECODERS[opts.output_format](pcm)
        rate = opts.output_rate
        item_id = event.item_id
        pts = self._item_ms.get(item_id, 0.0)
        self._item_ms[item_id] = pts + len(pcm) / (2 * rate)
        self._unplayed.add(item_id)
        frame = AudioFrame(pcm=pcm, sample_rate=rate, pts=pts, item_id=item_id)
        asked, self._timing = self._timing, None
        if asked is None:
            return (frame,)
        metric = Metric(
            stage=self.ctx.name,
            name="commit_to_first_audio",
            value=time.perf_counter() - asked,
            unit="s",
        )
        return (metric, frame)

    def _on_response_created(self, event: ev.ResponseCreated) -> tuple[Frame, ...]:
        self._requested = None
        self._active = event.response.id or "response"
        self._muted = False
        self._calls_done = False
        self._seen_calls.clear()
        self._timing, self._asked_at = self._asked_at, None
        actions = self.turns.feed(Input.RESPONSE_STARTED)
        out = self._apply(actions, "barge_in")
        return (ResponseStarted(response_id=event.response.id), *out)

    def _on_response_done(self, event: ev.ResponseDone) -> tuple[Frame, ...]:
        response = event.response
        self._active = None
        self._muted = False
        self._timing = None
        self._item_ms.clear()
        self.turns.feed(Input.RESPONSE_DONE)
        if self._calls:
            self.turns.feed(Input.TOOL_PENDING)
            self._calls_done = True
            self._send_results()
        elif self._deferred:
            self._request(self._deferred.pop(0), deferred=True)
        usage = {k: v for k, v in (response.usage or {}).items() if type(v) is int}
        return (ResponseDone(response_id=response.id, status=response.status, usage=usage),)

    def _on_error(self, event: ev.ErrorEvent) -> tuple[Frame, ...]:
        error = event.error
        if error.code == "response_cancel_not_active" and self._cancels:
            # A barge-in raced the end of the answer: the server finished it just
            # before our response.cancel arrived. Nothing was lost.
            self._cancels -= 1
            log.debug("%s: response.cancel arrived after the response ended", self.ctx.name)
            return ()
        if self._requested and error.event_id == self._requested:
            self._requested = None  # that response will never come
            self.turns.feed(Input.RESPONSE_DONE)
        code = error.code or error.type
        return (
            self._error(
                f"the model server reported an error ({error.type}): {error.message}",
                code=code,
                event_id=error.event_id or event.event_id,
                error_type=error.type,
            ),
        )

    def _on_reconnected(self, event: Reconnected) -> tuple[Frame, ...]:
        lost = not self._idle()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._reset_conversation()
        self._appended = False
        out: list[Frame] = [
            self._error(
                f"the connection to the model was lost ({event.reason}) and restored "
                f"(attempt {event.attempt}); the session was set up again"
                + ("; the answer in progress was lost" if lost else ""),
                code="reconnected",
            )
        ]
        if lost:
            self.turns.feed(Input.RESPONSE_DONE)
            self.turns.feed(Input.INTERRUPT)
            out.append(ResponseDone(status="failed"))
        return tuple(out)

    def _on_lost(self, event: _Lost) -> tuple[Frame, ...]:
        self.turns.fail()
        out: list[Frame] = []
        if self._active is not None:
            out.append(ResponseDone(status="failed"))
        out.append(self._error(event.message, fatal=True, code="connection_lost"))
        out.append(EndOfStream())
        self._lost = True
        return tuple(out)
