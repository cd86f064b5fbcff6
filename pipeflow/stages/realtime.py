"""The ``realtime`` stage: a conversation with an OpenAI Realtime model.

A thin shell: the conversation engine (``pipeflow.conversation.engine``)
decides everything (turns, responses, tool calls, cancels, truncation), the
Realtime adapter (``pipeflow.realtime.adapter``) maps its commands to client
events and server events to its inputs, and this stage connects, pumps the
socket's events and the pipeline's frames into the engine, sends what it
asks, yields the frames it makes and arms the timers it sets.

The stage is duplex: tool results and played positions come back from later
stages, and a reader task feeds the model's events into the same merged
input, so one loop owns all the state.

Where it connects: the ``url`` option, else ``OAI_REALTIME_URL``, else the
OpenAI API when a key is set, else a local Realtime server started
in-process (offline, scripted: ``script``, ``speed``, ``first_audio_delay_ms``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.events import ConnectionLost
from pipeflow.conversation.timers import EngineTimers
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
from pipeflow.realtime.adapter import RealtimeAdapter
from pipeflow.realtime.client import RealtimeClient
from pipeflow.realtime.options import RealtimeOptions, resolve_url
from pipeflow.realtime.protocol import SessionConfig
from pipeflow.stage import Frames, Stage
from pipeflow.turns import TurnMachine

__all__ = ["RealtimeTransport"]


class _FromModel(Frame, tag="realtime_engine_input"):
    """Internal: an engine input (a server event, a due timer) through the stage's input."""

    kind = "system"
    event: Any


class RealtimeTransport(Stage):
    """Talks to an OpenAI Realtime model (or the local stand-in) over WebSocket."""

    name = "realtime"
    Options = RealtimeOptions
    accepts = (ToolResult, PlayoutPosition, Interrupt, TextInput, Say, TurnCommitted)
    consumes = (AudioFrame, TurnCommitted, TextInput, Say, SpeechStarted, Interrupt,
                ToolResult, PlayoutPosition)
    produces = (SessionStarted, ResponseStarted, AudioFrame, Transcript, ToolCall, ResponseDone,
                SpeechStarted, SpeechStopped, Interrupt, ErrorFrame, ModelEvent, Metric)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)  # keyword mappings (reconnect={...}) as in YAML
        self.options: RealtimeOptions
        self.turns = TurnMachine()
        self.engine: ConversationEngine | None = None  # the running conversation's
        self.client: RealtimeClient | None = None
        self.server: Any = None
        self._timers: EngineTimers | None = None

    @property
    def input_rate(self) -> int:
        """Sample rate the model takes (24000 for pcm16, 8000 for G.711)."""
        return self.options.input_rate

    # -- lifecycle ---------------------------------------------------------------

    def _session_config(self) -> SessionConfig:
        opts = self.options
        agent = self.ctx.pipeline.agent
        offered = self.ctx.pipeline.offered_tools()  # what the tools stage dispatches
        tools = offered.to_openai_format("realtime") if offered is not None else []
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

    async def _connect(self) -> RealtimeClient:
        opts = self.options
        url = resolve_url(opts)
        if url is None:
            try:
                from pipeflow.realtime.server import LocalRealtimeServer
            except ImportError as exc:
                raise ConfigError(
                    f"stage {self.ctx.name}: no Realtime URL and no API key, and the local "
                    f"Realtime server is not available ({exc}); set 'url' or OPENAI_API_KEY"
                ) from exc
            self.server = LocalRealtimeServer(
                script=opts.script, port=0, first_audio_delay_ms=opts.first_audio_delay_ms,
                speed=opts.speed)
            await self.server.__aenter__()
            url = str(self.server.url)
        client = RealtimeClient(opts, session=self._session_config(), url=url)
        client.model = opts.model_name(getattr(self.ctx.pipeline.agent, "model", None))
        await client.connect()
        self.client = client
        return client

    async def _close(self) -> None:
        if self._timers is not None:
            self._timers.cancel_all()
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        server, self.server = self.server, None
        if server is not None:
            await server.__aexit__(None, None, None)

    async def _read(self, client: RealtimeClient, adapter: RealtimeAdapter) -> None:
        """Reader task: server events, as engine inputs, into the stage's input.

        Events that mean nothing to the conversation are left out here, so they
        cost the stage's loop nothing (half of what precedes first audio). An
        event that finds the stage idle is handed over at once: a burst (a whole
        answer's audio in one read) is decoded behind its first event, not in
        front of it.
        """
        emit = self.ctx.emit
        inbox = self.ctx.inbox
        assert inbox is not None  # a duplex stage
        try:
            async for event in client.events():
                item = adapter.translate(event)
                if item is not None:
                    idle = not len(inbox)
                    await emit(_FromModel(event=item))
                    if idle:
                        await asyncio.sleep(0)
        except RemoteError as exc:
            self.ctx.emit_nowait(_FromModel(event=ConnectionLost(message=str(exc))))

    # -- the loop ------------------------------------------------------------------

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        engine = self.engine = ConversationEngine(EngineOptions(
            name=self.ctx.name, model_turns=opts.turn_detection != "none",
            respond_on_start=opts.response_on_start, tool_timeout_s=opts.tool_timeout_s,
            drain_timeout_s=opts.drain_timeout_s), turns=self.turns)
        adapter = RealtimeAdapter(opts.input_format, opts.output_format, opts.output_rate)
        timers = self._timers = EngineTimers(self.ctx.emit_nowait,
                                             lambda event: _FromModel(event=event))
        try:
            client = await self._connect()
            self.ctx.spawn(self._read(client, adapter), name=f"{self.ctx.name}.reader")
            yield SessionStarted(session_id=self.ctx.pipeline.session_id)
            engine.start(time.perf_counter())
            adapter.send(engine.commands_to_send(), client.protocol)
            await client.flush()
            inbox = self.ctx.inbox
            assert inbox is not None  # a duplex stage
            proto = client.protocol
            async for frame in frames:
                if type(frame) is _FromModel:
                    engine.receive_event(frame.event, time.perf_counter())  # type: ignore[attr-defined]
                else:
                    if type(frame) is AudioFrame and not frame.item_id:  # type: ignore[attr-defined]
                        self._check_rate(frame.sample_rate)  # type: ignore[attr-defined]
                    engine.receive_frame(frame, time.perf_counter())
                adapter.send(engine.commands_to_send(), proto)
                timers.arm(engine.timers_to_set())
                # Events queued behind this frame go out with what it made (one await
                # for a burst), bounded so a busy input never holds sends back.
                if proto.pending and (not len(inbox) or proto.pending >= 8):
                    await client.flush()
                for item in engine.frames_to_emit():
                    yield item
                if engine.lost:
                    return
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

    def _check_rate(self, rate: int) -> None:
        want = self.options.input_rate
        if rate == want:
            return
        message = (f"stage {self.ctx.name}: the model takes {want} Hz audio "
                   f"({self.options.input_format}) but got {rate} Hz audio")
        if any(st.name == "resample" for st in self.ctx.upstream_stages()):
            raise ConfigError(message + f"; set the resample stage before it to rate: {want} "
                              "(or leave it empty)")
        raise ConfigError(message + f"; add a 'resample' stage (rate: {want}) before it")
