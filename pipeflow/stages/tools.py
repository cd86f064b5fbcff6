"""The ``tools`` stage: runs the model's function calls, concurrently.

Placed after the realtime transport. Each ``ToolCall`` is passed on at once
(callbacks see ``tool_called``) and run in its own task, so several calls of
one response run side by side and audio keeps flowing. When a call finishes,
its ``ToolResult`` goes back upstream to the transport (which sends it to the
model) and downstream too (callbacks see ``tool_result``). Failures of any
kind become error results for the model; the session goes on.

At the end of the stream, calls still running get ``drain_timeout_s`` to
finish before the end is passed on; the rest are cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec

from pipeflow.frames import EndOfStream, ToolCall, ToolResult
from pipeflow.stage import Frames, Stage, StageContext
from pipeflow.tools import FunctionCall, RunContext, ToolSet, default_registry, invoke

__all__ = ["ToolDispatch", "ToolsOptions"]


class ToolsOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``tools`` stage."""

    tools: list[str] = msgspec.field(default_factory=list)
    """Tool references ('package.module:function' or a whole 'package.module');
    empty: the agent's tools, or every @tool imported when there is no agent."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = 30.0
    """Seconds a call may run when its tool sets no timeout_s (null: no limit)."""
    max_concurrent: Annotated[int, msgspec.Meta(ge=1)] = 8
    """Calls run at the same time; later ones wait for a free slot."""
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """At the end of the stream, how long running calls may still take."""


class ToolDispatch(Stage):
    """Runs tool calls from the model and sends the results back to it."""

    name = "tools"
    Options = ToolsOptions
    duplex = True
    consumes = (ToolCall,)
    produces = (ToolCall, ToolResult)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        opts = self.options
        # References are resolved now, so a bad one fails when the pipeline is built.
        self.toolset: ToolSet | None = ToolSet.from_refs(opts.tools) if opts.tools else None
        self._running: set[asyncio.Task[None]] = set()
        self._dispatched: ToolSet = default_registry

    def bind(self, ctx: StageContext) -> None:
        """Offer the tools this stage dispatches: the model is told exactly these.

        Its own ``tools`` option, else the agent's tools, else every ``@tool``
        imported; the transport reads them from ``ctx.pipeline.tools``.
        """
        super().bind(ctx)
        agent = ctx.pipeline.agent
        self._dispatched = (self.toolset if self.toolset is not None
                            else agent.tools if agent is not None else default_registry)
        ctx.pipeline.tools = self._dispatched

    async def process(self, frames: Frames) -> Frames:
        tools = self._dispatched
        slots = asyncio.Semaphore(self.options.max_concurrent)
        deadline = EndOfStream()  # our own marker: the drain time is over
        held: EndOfStream | None = None
        async for frame in frames:
            if isinstance(frame, ToolCall):
                yield frame
                self._start(tools, frame, slots)
            elif isinstance(frame, EndOfStream):
                if frame is deadline or not self._running:
                    yield held or frame
                    return
                held = frame
                self.ctx.spawn(self._drain(deadline), name=f"{self.ctx.name}.drain")
            else:
                yield frame
                if held is not None and isinstance(frame, ToolResult) and not self._running:
                    yield held
                    return

    def _start(self, tools: ToolSet, call: ToolCall, slots: asyncio.Semaphore) -> None:
        task = self.ctx.spawn(self._call(tools, call, slots), name=f"tool:{call.name}")
        self._running.add(task)

    async def _call(self, tools: ToolSet, call: ToolCall, slots: asyncio.Semaphore) -> None:
        pipeline = self.ctx.pipeline
        run_context: RunContext[Any] = RunContext(
            call_id=call.call_id,
            function_call=FunctionCall(name=call.name, arguments=call.arguments),
            userdata=pipeline.userdata,
            session=pipeline.session,
            session_id=pipeline.session_id,
        )
        task = asyncio.current_task()
        try:
            async with slots:
                result = await invoke(tools, call, run_context, self.options.timeout_s)
        finally:
            # Leave the running set before the result is read, so the loop
            # knows no call is left when it sees the last result.
            self._running.discard(task)  # type: ignore[arg-type]
        self.ctx.send_upstream(result)
        self.ctx.emit_nowait(result)

    async def _drain(self, deadline: EndOfStream) -> None:
        pending = set(self._running)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.options.drain_timeout_s)
            for task in late:
                self.ctx.log.warning("the stream ended; cancelling unfinished tool call %s",
                                     task.get_name())
                task.cancel()
            self._running.clear()
        self.ctx.emit_nowait(deadline)
