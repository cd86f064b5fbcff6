"""AgentSession: a handle on one running conversation.

A session owns one pipeline whose input is a ``push`` source, so Python code
(or the call gateway) can talk to the agent while it runs::

    async with AgentSession(agent) as session:
        await session.send_text("What does a pizza cost?")
        await session.wait_for("response_done")
        print(session.conversation.transcript())

Text, audio, turn commits and cancels go in through the push source, in
order with the audio (a cancel is an urgent ``Interrupt``: it overtakes
queued audio); nothing writes into another stage's inbox. Every frame
leaving the pipeline updates ``session.conversation`` and is offered to
subscribers. Memory stays bounded however long the call: the session keeps
a log of the last ``log_size`` non-audio frames (``pipeflow.framelog``),
never audio, and each subscriber's queue has a stated drop policy; agent
audio is recorded by a sink when it is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeflow.build import Changes, new_context
from pipeflow.config import PipelineConfig, load_config
from pipeflow.conversation import Conversation
from pipeflow.errors import ConfigError, LocalError
from pipeflow.events import EVENT_NAMES, EventBus, event_for
from pipeflow.framelog import FrameLog, Subscriber
from pipeflow.frames import (
    AudioFrame,
    ErrorFrame,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    Say,
    SessionStarted,
    TextInput,
    ToolCall,
    Transcript,
    TurnCommitted,
)
from pipeflow.pipeline import Pipeline, RunResult
from pipeflow.registry import registry
from pipeflow.stage import Stage

if TYPE_CHECKING:
    from pipeflow.agent import Agent

__all__ = ["AgentSession"]

log = logging.getLogger("pipeflow.session")


def _default_stages(agent: Agent | None, transport: dict[str, Any]) -> list[Stage]:
    def make(name: str, **options: Any) -> Stage:
        return registry.resolve(name)(**options)

    vad = {"commit_on_silence": True, **(agent.vad_options() if agent is not None else {})}
    return [
        make("push", sample_rate=24000),
        make("resample"),
        make("vad", **vad),
        make("realtime", **transport),
        make("tools"),
        make("callbacks"),
        make("null", realtime=True),
    ]


class AgentSession:
    """One conversation with an agent over a running pipeline.

    Args:
        agent: the agent; may be omitted when ``pipeline`` carries one.
        pipeline: a pipeline whose first stage is a ``push`` source; when
            omitted a default one is built: push -> resample -> vad ->
            realtime -> tools -> callbacks -> null sink with a playout clock.
        transport: options for the default pipeline's ``realtime`` stage
            (``url``, ``script``, ``speed``...).
        session_id: the call id; a random one when empty.
        output_dir: folder for the agent's ``setup`` hook and sinks.
        start_timeout_s: how long ``start`` waits for the model session.
        log_size: non-audio frames kept for ``frames``, ``wait_for(after=)``
            and ``subscribe(since=)``.
    """

    def __init__(
        self,
        agent: Agent | None = None,
        *,
        pipeline: Pipeline | None = None,
        transport: dict[str, Any] | None = None,
        session_id: str = "",
        output_dir: str = "out",
        start_timeout_s: float = 15.0,
        log_size: int = 1000,
    ) -> None:
        if pipeline is None:
            context = new_context("session", output_dir, session_id=session_id, agent=agent)
            pipeline = Pipeline(_default_stages(agent, transport or {}), name="session",
                                context=context)
        elif agent is not None:
            pipeline.context.agent = agent
        self.pipeline = pipeline
        self.context = pipeline.context
        self.context.session = self
        self.events: EventBus = self.context.event_bus()
        self.conversation = Conversation()
        self.start_timeout_s = start_timeout_s
        self.result: RunResult | None = None
        self.error: ErrorFrame | None = None
        self.closed: asyncio.Event | None = None
        self._push = self._find("push")
        self._transport = self._find("realtime")
        self._task: asyncio.Task[Any] | None = None
        self._subscribers: list[Subscriber] = []
        self._waiters: list[tuple[Callable[[Frame], bool], asyncio.Future[Frame]]] = []
        self._log = FrameLog(log_size)
        self._open_responses = 0
        self.frames_out = 0
        """Every frame that left the pipeline so far, audio included (a busy-ness count)."""
        self._has_callbacks_stage = any(st.name == "callbacks" for st in pipeline.stages)

    # -- construction --------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        overrides: Iterable[str] = (),
        session_id: str = "",
        output_dir: str | None = None,
        replace_sinks: list[Stage] | None = None,
        **kwargs: Any,
    ) -> AgentSession:
        """A session over a pipeline file, its source replaced by a ``push`` source
        (or a ``push`` source put first when the file has none).

        Args:
            path: the pipeline YAML.
            overrides: ``STAGE.OPTION=VALUE`` overrides.
            session_id: the call id.
            output_dir: overrides the file's ``output_dir``.
            replace_sinks: when given, the file's sink stages (``role =
                "sink"``) are replaced by these.
            kwargs: for ``from_config`` (``changes``) and the session.
        """
        config = load_config(path, overrides)
        return cls.from_config(config, session_id=session_id, output_dir=output_dir,
                               replace_sinks=replace_sinks, **kwargs)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig,
        *,
        session_id: str = "",
        output_dir: str | None = None,
        replace_sinks: list[Stage] | None = None,
        changes: Changes | None = None,
        **kwargs: Any,
    ) -> AgentSession:
        """``from_file`` for a pipeline file already parsed; ``config`` is left as it
        was, so one parsed file serves many sessions.

        Args:
            changes: further changes before building (``contain_outputs``,
                ``model_url``...); ``output_dir`` and ``replace_sinks`` win
                over its fields, and the push source is always put first.
        """
        changes = dataclasses.replace(
            changes or Changes(),
            push_source=True,
            **({} if output_dir is None else {"output_dir": output_dir}),
            **({} if replace_sinks is None else {"sinks": tuple(replace_sinks)}),
        )
        pipeline = Pipeline.from_config(config, changes, session_id=session_id)
        return cls(pipeline=pipeline, **kwargs)

    def _find(self, name: str) -> Any:
        for st in self.pipeline.stages:
            if st.name == name:
                return st
        return None

    # -- lifecycle -----------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The call id."""
        return self.context.session_id

    @property
    def userdata(self) -> Any:
        """Per-session state shared with tools."""
        return self.context.userdata

    @property
    def running(self) -> bool:
        """Whether the pipeline is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> AgentSession:
        """Start the pipeline and wait until the model session is up.

        Raises:
            LocalError: the session could not start (the error frame's text).
        """
        if self._task is not None:
            raise LocalError(f"session {self.session_id} was already started")
        self._transport = self._find("realtime")
        if self._push is None:
            raise ConfigError("an AgentSession needs a 'push' source stage in its pipeline")
        self.closed = asyncio.Event()
        started = self._future(lambda f: isinstance(f, SessionStarted | ErrorFrame))
        self._task = asyncio.create_task(self._run(), name=f"session-{self.session_id}")
        if self._transport is None:
            started.cancel()
            return self
        try:
            frame = await asyncio.wait_for(started, self.start_timeout_s)
        except TimeoutError:
            await self.close()
            raise LocalError(
                f"session {self.session_id}: the model session did not start within "
                f"{self.start_timeout_s:.0f} s"
            ) from None
        if isinstance(frame, ErrorFrame) and frame.fatal:
            await self.close()
            raise LocalError(f"session {self.session_id} failed to start: {frame.stage}: "
                             f"{frame.message}")
        return self

    async def __aenter__(self) -> AgentSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        # run(), not stream(): it reads the chain's output without a generator hop.
        try:
            await self.pipeline.run(on_frame=self._take)
        except asyncio.CancelledError:
            pass  # the summary says so
        finally:
            self.result = self.pipeline.result or RunResult(name=self.pipeline.name)
            for subscriber in self._subscribers:
                subscriber.close()
            for _, future in self._waiters:
                if not future.done():
                    future.cancel()
            self._waiters.clear()
            if self.closed is not None:
                self.closed.set()

    def _take(self, frame: Frame) -> None:
        self._observe(frame)
        if isinstance(frame, ErrorFrame) and frame.fatal:
            self.error = frame

    def _observe(self, frame: Frame) -> None:
        self.conversation.observe(frame)
        self.frames_out += 1
        if type(frame) is not AudioFrame:
            self._log.append(frame)
            if isinstance(frame, ResponseStarted):
                self._open_responses += 1
            elif isinstance(frame, ResponseDone):
                self._open_responses = max(0, self._open_responses - 1)
        for subscriber in self._subscribers:
            subscriber.put(frame)
        if self._waiters:
            still = []
            for predicate, future in self._waiters:
                if future.done():
                    continue
                if predicate(frame):
                    future.set_result(frame)
                else:
                    still.append((predicate, future))
            self._waiters = still

    async def close(self, timeout_s: float = 30.0) -> RunResult | None:
        """End the conversation: let the agent finish, then stop every stage.

        The push source ends, the transport drains the model's answer and
        pending tool calls, the sinks flush; after ``timeout_s`` the pipeline
        is cancelled. Safe to call twice.
        """
        task = self._task
        if task is None:
            return self.result
        if not task.done():
            self._push.end()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                log.warning("session %s did not finish in %.0f s; cancelling",
                            self.session_id, timeout_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.result

    # -- talking -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._task is None:
            raise LocalError(f"session {self.session_id} is not started; call start() first")
        if self._task.done():
            raise LocalError(f"session {self.session_id} is closed")

    async def send_text(self, text: str) -> None:
        """Send the caller's text (chat, DTMF or IVR input); the agent answers it."""
        self._check_open()
        self._push.push(TextInput(text=text))

    async def ask(self, text: str, timeout: float = 30.0) -> str:
        """Send the caller's ``text`` and wait for the agent's whole answer.

        Returns:
            What the agent said, its final transcripts joined by spaces.

        Raises:
            TimeoutError: no complete answer within ``timeout`` seconds.
            LocalError: the session is not running or ended first.
        """
        frames = await self.answer(text, timeout)
        return " ".join(f.text for f in frames
                        if isinstance(f, Transcript) and f.role == "agent" and f.final)

    async def answer(self, text: str, timeout: float = 30.0) -> list[Frame]:
        """Send the caller's ``text``; the non-audio frames of the agent's answer to it.

        Whatever the agent is doing when this is called (a greeting asked
        for at start and not begun yet, an answer in progress, tool calls)
        is let finish first, so the answer is the response to ``text``: its
        frames run from that response's start to the first response done
        with no tool call (a response that calls tools is followed by the
        one that uses their results).

        Raises:
            TimeoutError: no complete answer within ``timeout`` seconds.
            LocalError: the session is not running or ended first.
        """
        self._check_open()
        answer: list[Frame] = []
        async with asyncio.timeout(timeout):
            while not self._quiet():
                await self._next_frame()
            start = self.frames_seen
            await self.send_text(text)
            calls = 0
            async for frame in self.subscribe(since=start, audio=False):
                if not answer and not isinstance(frame, ResponseStarted):
                    continue
                answer.append(frame)
                if isinstance(frame, ToolCall):
                    calls += 1
                elif isinstance(frame, ResponseDone):
                    if not calls:
                        return answer
                    calls = 0
        raise LocalError(f"session {self.session_id} ended before the agent answered {text!r}")

    def _quiet(self) -> bool:
        """Nothing under way: no response open at the pipeline's end and the
        transport neither waiting for one nor for tool results."""
        return not self._open_responses and self.state not in _BUSY

    async def _next_frame(self) -> None:
        """Return once another frame has left the pipeline.

        Raises:
            LocalError: the session ended first.
        """
        future = self._future(lambda frame: True)
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled() and self._task is not None and self._task.done():
                raise LocalError(f"session {self.session_id} ended") from None
            raise

    async def say(self, text: str) -> None:
        """Make the agent speak ``text``."""
        self._check_open()
        self._push.push(Say(text=text))

    async def stream_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Feed caller audio (PCM16 mono at ``sample_rate``).

        Raises:
            ConfigError: odd-length PCM or a bad sample rate.
        """
        self._check_open()
        self._push.push_audio(pcm, sample_rate)

    async def commit_audio(self) -> None:
        """End the caller's turn now: the audio streamed so far is answered."""
        self._check_open()
        self._push.push(TurnCommitted())

    async def cancel_response(self) -> None:
        """Stop the agent now: cancel the response, flush the sink, truncate."""
        self._check_open()
        if self._transport is None:
            raise ConfigError("cancel_response needs a 'realtime' stage in the pipeline")
        self._push.push(Interrupt(reason="cancel"))

    # -- observing -----------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register a sync or async ``callback(event)`` for a conversation event.

        Needs a ``callbacks`` stage in the pipeline (the default one has it).
        """
        if not self._has_callbacks_stage:
            raise ConfigError("session.on() needs a 'callbacks' stage in the pipeline")
        return self.events.on(event, callback)

    def _future(self, predicate: Callable[[Frame], bool]) -> asyncio.Future[Frame]:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future

    async def wait_for(
        self,
        what: str | type[Frame] | Callable[[Frame], bool],
        timeout: float = 30.0,
        *,
        after: int | None = None,
    ) -> Frame:
        """Wait for the next frame matching ``what``.

        Args:
            what: an event name (``"response_done"``), a frame type, or a predicate.
            timeout: seconds before ``TimeoutError``.
            after: also match frames already seen from this index of
                ``frames_seen`` on (to avoid racing a fast answer), as far
                as the log still holds them; audio is never matched here.

        Raises:
            TimeoutError: nothing matched in time.
            LocalError: the session ended first.
        """
        predicate = _predicate(what)
        if after is not None:
            for frame in self._log.since(after):
                if predicate(frame):
                    return frame
        if self._task is None or self._task.done():
            raise LocalError(f"session {self.session_id} is not running")
        future = self._future(predicate)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.CancelledError:
            if future.cancelled() and self._task.done():
                raise LocalError(f"session {self.session_id} ended before {what!r}") from None
            raise

    @property
    def frames_seen(self) -> int:
        """How many non-audio frames have left the pipeline so far (the number of
        the next one; see ``wait_for(after=)``, ``frames_since`` and ``subscribe``)."""
        return self._log.total

    @property
    def frames(self) -> list[Frame]:
        """The non-audio frames still in the log (the last ``log_size``), in order."""
        return self._log.since(0)

    def frames_since(self, number: int) -> list[Frame]:
        """Logged frames numbered ``number`` on (see ``frames_seen``), as far as kept."""
        return self._log.since(number)

    async def subscribe(
        self,
        since: int | None = None,
        *,
        audio: bool = True,
        max_audio: int = 250,
        max_lag: int = 10000,
    ) -> AsyncIterator[Frame]:
        """Frames leaving the pipeline from now on, until the session ends.

        The queue behind it is bounded (``pipeflow.framelog.Subscriber``):
        past ``max_audio`` queued audio frames the oldest audio is dropped;
        other frames are never dropped, but a reader more than ``max_lag``
        behind is cut off with ``SubscriberLagged``.

        Args:
            since: first replay the logged frames from this number of
                ``frames_seen`` on (0: all the log holds), with no gap and no
                repeat before the live ones; audio is not logged, so not replayed.
            audio: also pass audio frames (false: events only).
            max_audio / max_lag: the queue's bounds.
        """
        subscriber = Subscriber(max_audio, max_lag, audio=audio)
        self._subscribers.append(subscriber)
        backlog = self._log.since(since) if since is not None else []
        try:
            for frame in backlog:
                yield frame
            if self._task is not None and self._task.done() and not len(subscriber):
                return
            while (frame := await subscriber.get()) is not None:
                yield frame
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

    @property
    def state(self) -> str:
        """The turn state: the transport's state machine when there is one."""
        if self._task is None:
            return "idle"
        if self._task.done():
            return "closed"
        turns = getattr(self._transport, "turns", None)
        state = getattr(turns, "state", None)
        return getattr(state, "value", str(state)) if state is not None else "running"


_BUSY = frozenset({"thinking", "speaking", "tools"})
"""Turn states in which a response is asked for, running, or waiting for tools."""


def _predicate(what: str | type[Frame] | Callable[[Frame], bool]) -> Callable[[Frame], bool]:
    if isinstance(what, str):
        if what not in EVENT_NAMES:
            from pipeflow.events import check_event_name

            check_event_name(what)
        return lambda frame: event_for(frame) == what
    if isinstance(what, type):
        return lambda frame: isinstance(frame, what)
    return what
