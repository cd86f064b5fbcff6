"""The JobContext: what one job (one call) owns while a worker runs it.

A worker runs each job in its own asyncio task with its own ``JobContext``.
The context is the job's lifetime in one object: who takes part in the call
(participants), what runs in the background for it (tasks started with
``start_task``) and what must be undone when it ends (shutdown hooks). When
the job ends, whatever way it ends, ``shutdown`` cancels and awaits its tasks
and runs its hooks, last added first, so one job never leaves work running
behind it.

A job entry point is ``async def entry(ctx: JobContext) -> Any``; its return
value is the job's result (anything msgspec can encode). A pipeline entry
point is the same thing written in YAML: ``ctx.run_pipeline(path)``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import msgspec

from pipeflow.build import Changes
from pipeflow.callables import call_function
from pipeflow.config import load_config
from pipeflow.errors import ConfigError
from pipeflow.frames import Frame, Metric
from pipeflow.pipeline import Pipeline, RunResult

__all__ = [
    "JobContext",
    "Participant",
    "ShutdownHook",
    "call_function",
    "current_job_id",
    "params_to_overrides",
]

log = logging.getLogger("pipeflow.job")

current_job_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "pipeflow_job_id", default="")
"""The id of the job the running code belongs to ('' outside jobs). Set by the
worker for each job; tasks a job starts (its pipeline's stages, ``start_task``)
inherit it, which is how the watchdog tells whose code blocked the loop."""

ShutdownHook = Callable[[str], Awaitable[None] | None] | Callable[[], Awaitable[None] | None]


class Participant(msgspec.Struct, kw_only=True, frozen=True):
    """Someone (or something) taking part in a job's conversation."""

    identity: str
    """Unique within the job: a phone number, a user id, 'agent'."""
    name: str = ""
    """A display name for logs and transcripts."""
    kind: str = "caller"
    """'caller', 'agent', 'operator'... free text for your own routing."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Anything else the entry point wants to keep about them."""
    joined_at: float = 0.0
    """Wall-clock time (epoch seconds) the participant was added."""


class _JobLogAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra.get('job_id')}] {msg}", kwargs


class JobContext:
    """One job's id, parameters, participants, background tasks and hooks.

    Args:
        job_id: the job's unique id (also the pipeline's session id).
        params: the job's parameters as submitted (``--param k=v``).
        info: facts about where it runs: worker id, agent name, attempt.
        secrets: credentials for the job (API keys); kept out of ``repr``.
        on_metric: called with ``(name, seconds)`` for latency samples the
            job reports (the worker feeds them to its histograms).

    Attributes:
        job_id: the job's id.
        params: the job's parameters.
        info: worker-supplied facts (read-only by convention).
        secrets: credentials the worker hands the job (never logged).
        log: a logger whose records carry ``job_id``.
    """

    def __init__(
        self,
        job_id: str,
        params: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        on_metric: Callable[[str, float], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.params: dict[str, Any] = dict(params or {})
        self.info: dict[str, Any] = dict(info or {})
        self.secrets: dict[str, str] = dict(secrets or {})
        self.log = _JobLogAdapter(logging.getLogger("pipeflow.job"), {"job_id": job_id})
        self._participants: dict[str, Participant] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hooks: list[ShutdownHook] = []
        self._on_metric = on_metric
        self._shutdown_reason: str | None = None
        self._shutdown_done: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"JobContext(job_id={self.job_id!r}, participants={len(self._participants)})"

    def get_info(self) -> dict[str, Any]:
        """The job's facts in one dict (the reference library's ``get_info()``).

        Returns:
            ``job_id``, ``params``, the participants' identities, whether it
            is shutting down, and every entry of ``info`` (worker id, agent
            name, attempt, idempotency key, server URL...). Secrets are left out.
        """
        return {
            **self.info,
            "job_id": self.job_id,
            "params": dict(self.params),
            "participants": [p.identity for p in self.participants],
            "shutting_down": self.shutting_down,
        }

    # --- participants ------------------------------------------------------

    def add_participant(
        self,
        identity: str,
        *,
        name: str = "",
        kind: str = "caller",
        metadata: Mapping[str, Any] | None = None,
    ) -> Participant:
        """Record that ``identity`` joined the job; returns the participant.

        Raises:
            ConfigError: ``identity`` is empty or already taking part.
        """
        if not identity:
            raise ConfigError(f"job {self.job_id}: a participant needs a non-empty identity")
        if identity in self._participants:
            raise ConfigError(f"job {self.job_id}: participant {identity!r} has already joined")
        participant = Participant(
            identity=identity,
            name=name,
            kind=kind,
            metadata=dict(metadata or {}),
            joined_at=time.time(),
        )
        self._participants[identity] = participant
        self.log.info("participant %s joined", identity)
        return participant

    def remove_participant(self, identity: str) -> Participant | None:
        """Forget ``identity``; returns who left, or None when it was not there."""
        participant = self._participants.pop(identity, None)
        if participant is not None:
            self.log.info("participant %s left", identity)
        return participant

    @property
    def participants(self) -> list[Participant]:
        """Everyone taking part now, in the order they joined."""
        return list(self._participants.values())

    def participant(self, identity: str) -> Participant | None:
        """The participant with that identity, or None."""
        return self._participants.get(identity)

    # --- tasks and hooks -----------------------------------------------------

    def start_task(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background for as long as the job lives.

        The task is cancelled and awaited by ``shutdown``; an exception in it
        is logged with the job id (it does not fail the job on its own).

        Raises:
            RuntimeError: the job is already shutting down.
        """
        if self._shutdown_reason is not None:
            coro.close()
            raise RuntimeError(f"job {self.job_id} is shutting down; no new tasks may start")
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "background task %s failed: %s", task.get_name(), task.exception(),
                exc_info=task.exception(),
            )

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        """Background tasks still running."""
        return [t for t in self._tasks if not t.done()]

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Call ``hook`` when the job ends (last added runs first).

        ``hook`` may be sync or async and may take the shutdown reason as its
        one argument. Its errors are logged, never raised: one failing hook
        does not keep the others from running.
        """
        if not callable(hook):
            raise TypeError(f"a shutdown hook must be callable, got {type(hook).__name__}")
        self._hooks.append(hook)

    @property
    def shutting_down(self) -> bool:
        """True once ``shutdown`` has been called."""
        return self._shutdown_reason is not None

    @property
    def shutdown_reason(self) -> str | None:
        """Why the job ended ('completed', 'failed', 'cancelled'...), once it has."""
        return self._shutdown_reason

    async def shutdown(self, reason: str = "completed") -> None:
        """End the job: cancel and await its tasks, then run its hooks in reverse.

        Safe to call more than once: later calls wait for the first to finish.
        """
        if self._shutdown_done is not None:
            await self._shutdown_done.wait()
            return
        self._shutdown_reason = reason
        self._shutdown_done = asyncio.Event()
        try:
            while self._tasks:
                tasks = list(self._tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._tasks.difference_update(tasks)
            for hook in reversed(self._hooks):
                await self._run_hook(hook, reason)
        finally:
            self._shutdown_done.set()

    async def _run_hook(self, hook: ShutdownHook, reason: str) -> None:
        try:
            takes_reason = _takes_argument(hook)
            result = hook(reason) if takes_reason else hook()  # type: ignore[call-arg]
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("shutdown hook %r failed: %s", hook, exc, exc_info=exc)

    # --- telemetry -------------------------------------------------------------

    def observe_latency(self, name: str, seconds: float) -> None:
        """Report a latency sample (frame lateness, first audio out...) to the worker."""
        if self._on_metric is not None:
            self._on_metric(name, seconds)

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Metric) and ("latency" in frame.name or "late" in frame.name):
            scale = {"ms": 0.001, "us": 1e-6, "s": 1.0, "": 1.0}.get(frame.unit)
            if scale is not None:
                self.observe_latency(frame.name, frame.value * scale)

    # --- pipelines -------------------------------------------------------------

    def output_folder(self, base: str | Path) -> Path:
        """This run's folder under ``base``: ``JOB_ID`` for the first attempt,
        ``JOB_ID.attempt-N`` for attempt N (a job reclaimed from a worker that
        died runs again), and the next free attempt number where a folder of
        that name already holds files, so no run's recording is overwritten."""
        attempt = self.info.get("attempt", 1)
        attempt = attempt if isinstance(attempt, int) and attempt > 0 else 1
        while True:
            name = self.job_id if attempt == 1 else f"{self.job_id}.attempt-{attempt}"
            folder = Path(base) / name
            if not folder.is_dir() or not any(folder.iterdir()):
                return folder
            attempt += 1

    async def run_pipeline(self, path: str | Path, **params: Any) -> RunResult:
        """Build this job's pipeline from a YAML file and run it to the end.

        Each keyword ``stage__option=value`` (or ``**{"stage.option": value}``)
        overrides that option like ``pipeflow run --set stage.option=value``;
        the job's own ``params`` naming a ``stage.option`` are applied first.
        The pipeline's session id is the job id, its ``output_dir`` gets a
        sub-folder per job and attempt (``output_folder``: concurrent jobs
        never share files, and a rerun never overwrites the first run's) and
        its stages can reach this context as ``ctx.pipeline.job``.

        Returns:
            The run's ``RunResult`` (``.ok``, ``.errors``, ``.duration``...).

        Raises:
            ConfigError: the file or an override is invalid.
        """
        merged = {k: v for k, v in self.params.items() if "." in k or "__" in k}
        merged.update(params)
        config = load_config(path, params_to_overrides(merged, where=f"job {self.job_id}"))
        changes = Changes(output_dir=str(self.output_folder(config.output_dir)))
        pipeline = Pipeline.from_config(config, changes, session_id=self.job_id, job=self)
        return await pipeline.run(on_frame=self._on_frame)


def params_to_overrides(params: Mapping[str, Any], where: str = "job") -> list[str]:
    """Turn ``{"stage.option": value}`` into ``["stage.option=<json>"]`` overrides.

    ``stage__option`` (a keyword-friendly spelling) means ``stage.option``.
    Values are written as JSON (which YAML reads back unchanged), so the
    string ``"yes"`` stays a string and ``3`` stays a number.

    Raises:
        ConfigError: a key does not look like ``STAGE.OPTION`` or a value
            cannot be written as JSON.
    """
    overrides = []
    for name, value in params.items():
        key = name if "." in name else name.replace("__", ".", 1)
        stage, dot, option = key.partition(".")
        if not dot or not stage or not option:
            raise ConfigError(
                f"{where}: parameter {key!r} is not a pipeline override; "
                "expected STAGE.OPTION (a stage id, type or index, a dot and an option name)"
            )
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigError(
                f"{where}: parameter {key!r} has a value of type {type(value).__name__} "
                "that cannot be written as JSON"
            ) from exc
        overrides.append(f"{key}={text}")
    return overrides


def _takes_argument(hook: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):
        return False
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD, param.VAR_POSITIONAL):
            return True
    return False

