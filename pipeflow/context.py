"""``PipelineContext``: what the stages of one conversation share, as typed fields.

Stages never reach each other through a bag of named objects: what one of
them needs from the run (the session handle, the event bus, the output
folder, the job, the tools on offer) is a field here, set by whoever owns it
(``Pipeline.from_config`` for the folder, userdata and job, ``AgentSession``
for itself, the ``tools`` stage for the tools it dispatches).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeflow.events import EventBus

if TYPE_CHECKING:
    from pipeflow.agent import Agent
    from pipeflow.inbox import Inbox
    from pipeflow.job import JobContext
    from pipeflow.session import AgentSession
    from pipeflow.stage import Stage
    from pipeflow.tools import ToolSet

__all__ = ["PipelineContext"]


@dataclass(eq=False)
class PipelineContext:
    """State shared by every stage of one running pipeline (one conversation).

    Attributes:
        name: the pipeline's name.
        session_id: unique per run; used as the call id by default.
        userdata: per-session state that tools read and write (an order...).
        agent: the ``Agent`` this pipeline serves, when there is one.
        output_dir: the folder relative output paths go under ('' for the
            current folder); see ``StageContext.output_path``.
        outputs: files the stages wrote, by label ('agent audio', 'transcript').
        session: the ``AgentSession`` driving this pipeline, when one does.
        job: the worker's ``JobContext`` when the pipeline runs as a job.
        events: the conversation's event bus (see ``event_bus``).
        tools: the tools on offer: what the ``tools`` stage dispatches when
            there is one, else the agent's; the model is told exactly these.
        stages: the chain, in order.
    """

    name: str = "pipeline"
    session_id: str = ""
    userdata: Any = None
    agent: Agent | None = None
    output_dir: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    session: AgentSession | None = None
    job: JobContext | None = None
    events: EventBus | None = None
    tools: ToolSet | None = None
    stages: list[Stage] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False, repr=False)
    _failure: BaseException | None = field(default=None, init=False, repr=False)
    _runner: asyncio.Task[Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.session_id = self.session_id or uuid.uuid4().hex[:12]
        if self.userdata is None:
            self.userdata = {}

    def event_bus(self) -> EventBus:
        """The conversation's event bus, made on first use with the agent's callbacks."""
        if self.events is None:
            self.events = EventBus()
            if self.agent is not None:
                self.events.extend(self.agent.callbacks)
        return self.events

    def offered_tools(self) -> ToolSet | None:
        """The tools the model is told about: ``tools``, else the agent's (None: none)."""
        if self.tools is not None:
            return self.tools
        return self.agent.tools if self.agent is not None else None

    def spawn(
        self, coro: Coroutine[Any, Any, Any], inbox: Inbox | None = None, name: str = ""
    ) -> asyncio.Task[Any]:
        """Start a task the pipeline owns (cancelled and awaited at the end).

        If it raises, the error goes to ``inbox`` (its stage re-raises it) or,
        with no inbox, fails the whole pipeline.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, inbox))
        return task

    def _task_done(self, task: asyncio.Task[Any], inbox: Inbox | None) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        if inbox is not None:
            inbox.fail(error)
        elif self._failure is None:
            self._failure = error
            if self._runner is not None:
                self._runner.cancel()

    async def cancel_tasks(self) -> None:
        """Cancel every task still running and wait for them all."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
