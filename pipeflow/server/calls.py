"""Calls: one ``AgentSession`` per call id, and the registry that owns them.

A call runs the gateway's pipeline file between the call's edge stages
(``pipeflow.server.edges``): the caller's source first (the session's push
source, or a Twilio Media Stream's) and the caller's audio sink in place of
the file's audio sinks (speaker, null, wav_sink), so a call has one playout
clock and its feedback runs through the pipeline. Other file sinks are kept
and write under ``<output_dir>/<call_id>/``, so every call is recorded
apart; the audio sink records what the caller heard to ``gateway_agent.wav``
there. A call's record is written to ``call.json`` in that folder when the
call starts, rewritten as it goes (after each turn and tool call, at most
once per ``record_interval_s``; state ``active`` with ``updated_at``) and
written whole when it ends (asked for, idle too long, or the gateway
stops); each write goes to a temporary file renamed over the old one, so a
gateway killed outright (SIGKILL) leaves every live call's record as of its
last moments, never a torn file. The registry keeps the ended call's record,
so ``GET /api/calls/{id}`` still answers. What the agent's
domain state is (an order...) the gateway does not know: the call record
shows what the agent's ``summary(userdata)`` hook returns, under ``agent``.

Call states move along a table (``TRANSITIONS``); the registry refuses an
existing id (409), an id that is not ``[A-Za-z0-9_-]{1,64}`` (400) and a
call over ``max_calls`` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pipeflow.build import Changes, playout_realtime
from pipeflow.errors import ConfigError, LocalError, PipeflowError
from pipeflow.frames import TextInput, ToolCall, ToolResult, Transcript, TurnCommitted
from pipeflow.server.edges import CallAudioOut
from pipeflow.server.local import SharedModelServers, local_server_key
from pipeflow.server.options import GatewayOptions
from pipeflow.session import AgentSession
from pipeflow.stage import Stage
from pipeflow.stages.sources import PushSource

__all__ = [
    "CALL_ID",
    "TRANSITIONS",
    "Call",
    "CallEdge",
    "CallError",
    "CallRegistry",
    "check_call_id",
]

log = logging.getLogger("pipeflow.server")

CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a call id may look like: safe as a URL segment and a folder name."""

TRANSITIONS: dict[str, frozenset[str]] = {
    "starting": frozenset({"active", "failed"}),
    "active": frozenset({"ending"}),
    "ending": frozenset({"ended"}),
    "ended": frozenset(),
    "failed": frozenset(),
}
"""Allowed call state changes."""

AGENT_AUDIO = "gateway_agent.wav"
"""The agent's audio as played to the caller, recorded in the call folder by its audio sink."""

LIVE_STATES = frozenset({"starting", "active", "ending"})


BRIEF_FIELDS = ("id", "state", "created_at", "ended_at", "end_reason", "session_state")
"""The fields of a call in listings: no transcript, agent summary or error text."""


class CallError(PipeflowError):
    """A request about a call cannot be served; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def check_call_id(call_id: str) -> str:
    """Return ``call_id`` when it is a valid id.

    Raises:
        CallError: (400) it is empty, too long or holds other characters.
    """
    if not CALL_ID.fullmatch(call_id):
        shown = call_id if len(call_id) <= 80 else call_id[:77] + "..."
        raise CallError(
            f"Call id {shown!r} is not valid: use 1 to 64 letters, digits, '_' or '-'.", 400
        )
    return call_id


class Call:
    """One call: its session while it runs, its record once it has ended.

    Attributes:
        id: the call id.
        state: starting, active, ending, ended or failed.
        folder: where the call's files go.
        created_at / ended_at: wall-clock times (seconds since the epoch).
        end_reason: why it ended (``ended``, ``idle``, ``shutdown``, ``failed``...).
        sample_rate: the rate caller audio is sent at unless a request says otherwise.
    """

    def __init__(self, call_id: str, folder: Path, sample_rate: int, now: float) -> None:
        self.id = call_id
        self.folder = folder
        self.sample_rate = sample_rate
        self.state = "starting"
        self.session: AgentSession | None = None
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.end_reason = ""
        self.error = ""
        self.last_activity = now
        self._seen = 0
        self._streamed = False
        self._record: dict[str, Any] | None = None
        self._on_disk = False
        self._ended = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None
        self.updated_at: float | None = None
        """When ``call.json`` was last written (wall clock)."""
        self.audio_out: CallAudioOut | None = None
        """The call's audio sink, for WebSocket and HTTP listeners (None on Twilio calls)."""
        self.edge: CallEdge | None = None

    # -- state -----------------------------------------------------------------

    def move(self, state: str) -> None:
        """Change state along ``TRANSITIONS``.

        Raises:
            LocalError: the change is not allowed from the current state.
        """
        if state not in TRANSITIONS[self.state]:
            raise LocalError(f"call {self.id}: cannot go from {self.state} to {state}")
        self.state = state

    @property
    def live(self) -> bool:
        """Whether the call still holds a slot (starting, active or ending)."""
        return self.state in LIVE_STATES

    def touch(self, now: float) -> None:
        """Note activity (a request, audio, agent output) for the idle timeout."""
        self.last_activity = now

    def running_session(self) -> AgentSession:
        """The session of an active call.

        Raises:
            CallError: (409) the call is not active (still starting, or over).
        """
        if self.state != "active" or self.session is None or not self.session.running:
            raise CallError(f"Call {self.id} is {self._state_word()}; it takes no more input.",
                            409)
        return self.session

    def _state_word(self) -> str:
        if self.state == "active":
            return "closed"
        return "still starting" if self.state == "starting" else self.state

    def backlog_start(self) -> int | None:
        """Where the first audio client's stream starts: 0 for the first one, so
        it gets what the agent said before it connected (the greeting); ``None``
        (live frames only) for later ones."""
        if self._streamed:
            return None
        self._streamed = True
        return 0

    async def wait_ended(self) -> None:
        """Return once the call has ended or failed."""
        await self._ended.wait()

    # -- what the API shows ----------------------------------------------------

    def agent_summary(self) -> Any:
        """The agent's ``summary(userdata)`` as data (an order line's order...), or None.

        The gateway names no domain fields: this is what the agent says of itself.
        """
        if self._record is not None:
            return self.record().get("agent")
        session = self.session
        agent = session.context.agent if session is not None else None
        hook = agent.summary if agent is not None else None
        if hook is None or session is None:
            return None
        try:
            return _as_data(hook(session.userdata))
        except Exception as exc:  # a domain hook must not break the gateway's answer
            log.warning("call %s: the agent's summary hook failed: %s", self.id, exc)
            return {"error": f"the agent's summary hook failed: {exc}"}

    def agent_audio(self) -> tuple[bytes, int]:
        """The agent's audio so far as PCM16 mono and its rate (24 kHz when none yet)."""
        if self._record is not None:
            path = self.folder / AGENT_AUDIO
            if path.exists():
                from pipeflow.audio.wav import read_wav

                audio = read_wav(path)
                return audio.pcm, audio.sample_rate
            return b"", 24000
        recorded = getattr(self.edge.sink if self.edge is not None else None, "recorded", None)
        return recorded() if recorded is not None else (b"", 24000)

    def summary(self, brief: bool = False) -> dict[str, Any]:
        """The call as JSON-ready data.

        ``brief`` (listings, anyone holding the token sees them) keeps only
        the fields in ``BRIEF_FIELDS``: what a caller said or gave (the
        transcript, the agent's summary with a phone or address) is shown by
        call id only.
        """
        record = self.record() if self._record is not None else self._build_record()
        record["state"] = self.state
        if brief:
            return {key: record[key] for key in BRIEF_FIELDS if key in record}
        return record

    def record(self) -> dict[str, Any]:
        """The ended call's record: from ``call.json`` when it was written there
        (a gateway that runs for days keeps only each finished call's brief
        fields in memory), else the copy kept in memory."""
        record = self._record or {}
        if self._on_disk:
            try:
                return dict(msgspec.json.decode((self.folder / "call.json").read_bytes()))
            except (OSError, msgspec.DecodeError) as exc:
                log.warning("call %s: its record %s cannot be read back (%s); only its brief "
                            "fields remain", self.id, self.folder / "call.json", exc)
        return dict(record)

    def _build_record(self) -> dict[str, Any]:
        session = self.session
        conversation = session.conversation.to_dict() if session is not None else {}
        return {
            "id": self.id,
            "state": self.state,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "error": self.error,
            "session_state": session.state if session is not None else "idle",
            "transcript": session.conversation.transcript() if session is not None else "",
            "turns": conversation.get("turns", []),
            "tool_calls": conversation.get("tool_calls", []),
            "agent": self.agent_summary(),
            "updated_at": self.updated_at,
        }

    # -- the record on disk --------------------------------------------------------

    def _write_record(self, record: dict[str, Any]) -> bool:
        """Write ``record`` to ``call.json`` atomically (a temporary file renamed over
        it); False, logged, when the folder cannot be written."""
        path = self.folder / "call.json"
        partial = path.with_name("call.json.partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(msgspec.json.format(msgspec.json.encode(record), indent=2))
            os.replace(partial, path)
        except OSError as exc:
            log.error("call %s: cannot write its record under %s: %s", self.id, self.folder, exc)
            return False
        return True

    def checkpoint(self) -> None:
        """Write the live call's record as it stands (state ``active``, ``updated_at``)."""
        if self.state != "active" or self.session is None:
            return
        self.updated_at = time.time()
        self._write_record(self._build_record())

    def keep_record(self, interval_s: float) -> None:
        """Write the record now, then after each turn and tool call, at most once per
        ``interval_s``, until the call ends."""
        self.checkpoint()
        if self.session is not None:
            self._recorder = asyncio.create_task(self._record_as_it_goes(interval_s),
                                                 name=f"call-{self.id}-record")

    async def _record_as_it_goes(self, interval_s: float) -> None:
        session = self.session
        assert session is not None
        marks = (Transcript, TextInput, TurnCommitted, ToolCall, ToolResult)
        changed = asyncio.Event()

        async def watch() -> None:
            async for frame in session.subscribe(audio=False):
                if isinstance(frame, marks) and getattr(frame, "final", True):
                    changed.set()

        watcher = asyncio.create_task(watch(), name=f"call-{self.id}-changes")
        written = time.monotonic()
        try:
            while True:
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not changed.is_set():  # the session ended (finish writes the rest)
                    return
                await asyncio.sleep(max(0.0, written + interval_s - time.monotonic()))
                changed.clear()
                self.checkpoint()
                written = time.monotonic()
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):  # ended, cancelled or cut off (lagging)
                await watcher

    async def _stop_recording(self) -> None:
        task, self._recorder = self._recorder, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- ending ------------------------------------------------------------------

    async def finish(self, reason: str, timeout_s: float) -> None:
        """End the session, write the record and the agent audio, keep the record."""
        await self._stop_recording()
        session = self.session
        if session is not None:
            try:
                await session.close(timeout_s)
            except Exception as exc:  # a stage failing at shutdown must not lose the record
                log.warning("call %s: error while closing: %s", self.id, exc)
                self.error = self.error or str(exc)
            if session.error is not None and not self.error:
                self.error = f"{session.error.stage}: {session.error.message}"
        self.ended_at = self.updated_at = time.time()
        self.end_reason = reason
        self.move("ended")
        record = self._build_record()
        self._record = record
        self.session = None
        self.audio_out = self.edge = None
        if self._write_record(record):  # read back from the file when asked: memory stays flat
            self._record = {key: record[key] for key in BRIEF_FIELDS if key in record}
            self._on_disk = True
        self._ended.set()

    def fail(self, message: str) -> None:
        """Mark a call that could not start."""
        self.error = message
        self.end_reason = "failed"
        self.ended_at = time.time()
        self.move("failed")
        self._record = self._build_record()
        self.session = None
        self.audio_out = self.edge = None
        self._ended.set()


def _as_data(value: Any) -> Any:
    if value is None:
        return None
    try:
        return msgspec.to_builtins(value)
    except (TypeError, msgspec.EncodeError):
        return str(value)


@dataclass
class CallEdge:
    """The stages a call's caller is reached through.

    Attributes:
        sink: the caller's audio sink; it takes the place of the file's audio sinks.
        source: the caller's source (a push source); None keeps the session's own.
    """

    sink: Stage
    source: PushSource | None = None


class CallRegistry:
    """Every call of one gateway: starts them, finds them, ends them, reaps idle ones.

    Args:
        pipeline_path: the pipeline file each call runs.
        options: the gateway's limits and folders.
        clock: monotonic seconds (a fake one in tests of the idle timeout).
    """

    def __init__(
        self,
        pipeline_path: str | Path,
        options: GatewayOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from pipeflow.config import load_config

        self.pipeline_path = str(pipeline_path)
        self.options = options or GatewayOptions()
        self.clock = clock
        # Parsed once: reading the YAML again took most of a call start's loop time.
        config = load_config(self.pipeline_path, self.options.overrides)
        self._config = config
        self.output_dir = Path(self.options.output_dir or config.output_dir)
        self._calls: OrderedDict[str, Call] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        # Offline model stages share one local Realtime server (see server/local.py).
        self._model_keys = {
            key for spec in config.stages if (key := local_server_key(spec.options)) is not None
        }
        self.models = SharedModelServers()

    # -- lookup ----------------------------------------------------------------

    def get(self, call_id: str) -> Call:
        """The call with this id.

        Raises:
            CallError: 400 for a malformed id, 404 for an unknown one.
        """
        check_call_id(call_id)
        call = self._calls.get(call_id)
        if call is None:
            raise CallError(f"There is no call {call_id!r}.", 404)
        return call

    def calls(self) -> list[Call]:
        """Every known call, oldest first."""
        return list(self._calls.values())

    @property
    def live_count(self) -> int:
        """Calls holding a slot (starting, active or ending)."""
        return sum(1 for call in self._calls.values() if call.live)

    # -- lifecycle -------------------------------------------------------------

    async def start(self, call_id: str, sample_rate: int = 16000,
                    edge: CallEdge | None = None) -> Call:
        """Start a call: build its session and wait until the model session is up.

        Args:
            call_id: the new call's id.
            sample_rate: the rate of caller audio unless a request says otherwise.
            edge: how the caller is reached (a Twilio Media Stream's stages);
                by default the push source and a ``CallAudioOut`` sink that
                WebSocket and HTTP clients listen to.

        Raises:
            CallError: 400 bad id, 409 the id exists, 503 the gateway is full,
                502 the session could not start.
        """
        check_call_id(call_id)
        if call_id in self._calls:
            raise CallError(f"Call {call_id!r} already exists; use another id.", 409)
        if self.live_count >= self.options.max_calls:
            raise CallError(
                f"The gateway is at its limit of {self.options.max_calls} live calls; "
                "try again later.", 503, retry_after=self.options.retry_after_s,
            )
        call = Call(call_id, self.output_dir / call_id, sample_rate, self.clock())
        self._calls[call_id] = call  # reserve the id before any await
        try:
            await self.models.open(self._model_keys)
            session = self._session(call, edge)
            call.session = session
            await session.start()
        except PipeflowError as exc:
            call.fail(str(exc))
            self._trim()
            raise CallError(f"Call {call_id} could not start: {exc}", 502) from exc
        except BaseException:
            call.fail("start was cancelled")
            raise
        call.move("active")
        call.touch(self.clock())
        call.keep_record(self.options.record_interval_s)
        return call

    def _session(self, call: Call, edge: CallEdge | None) -> AgentSession:
        """The call's session, built without reading the pipeline file again."""
        if edge is None:
            edge = CallEdge(CallAudioOut(realtime=playout_realtime(self._config), drain=False,
                                         record=AGENT_AUDIO))
            call.audio_out = edge.sink  # type: ignore[assignment]
        call.edge = edge
        changes = Changes(output_dir=str(call.folder), contain_outputs=True,
                          model_url=self.models.url_for, source=edge.source,
                          audio_sink=edge.sink)
        return AgentSession.from_config(
            self._config, session_id=call.id, changes=changes,
            start_timeout_s=self.options.start_timeout_s,
        )

    async def end(self, call_id: str, reason: str = "ended") -> Call:
        """End a live call; ending an ended call just returns it.

        Raises:
            CallError: 400 bad id, 404 unknown id.
        """
        call = self.get(call_id)
        await self._end(call, reason)
        return call

    async def _end(self, call: Call, reason: str) -> None:
        if call.state == "active":
            call.move("ending")
            await call.finish(reason, self.options.close_timeout_s)
            self._trim()
        elif call.state in ("starting", "ending"):
            await call.wait_ended()

    def _trim(self) -> None:
        """Forget the oldest finished calls beyond ``keep_finished`` (their files stay)."""
        finished = [c for c in self._calls.values() if not c.live]
        for call in finished[: max(0, len(finished) - self.options.keep_finished)]:
            del self._calls[call.id]

    # -- idle calls --------------------------------------------------------------

    async def reap(self, now: float | None = None) -> list[str]:
        """End every call idle for ``idle_timeout_s``; return their ids.

        A call is busy while frames leave its pipeline (the agent talking)
        or requests come in.
        """
        now = self.clock() if now is None else now
        idle = []
        for call in list(self._calls.values()):
            if call.state != "active" or call.session is None:
                continue
            if not call.session.running:  # the pipeline ended on its own
                idle.append(call)
                continue
            seen = call.session.frames_out
            if seen != call._seen:
                call._seen = seen
                call.touch(now)
            elif now - call.last_activity >= self.options.idle_timeout_s:
                idle.append(call)
        await asyncio.gather(*(
            self._end(call, "idle" if call.session and call.session.running else "finished")
            for call in idle
        ))
        return [call.id for call in idle]

    async def open(self) -> None:
        """Get ready for calls: start the shared local model server (if the pipeline
        needs one) and the idle reaper, so the first call pays for neither.

        Raises:
            ConfigError: the model stage's script is invalid.
            LocalError: the local model server cannot listen.
        """
        await self.models.open(self._model_keys)
        self.start_reaper()

    def start_reaper(self) -> None:
        """Look for idle calls every ``reap_interval_s`` in the background."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="gateway-reaper")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.reap_interval_s)
            try:
                ended = await self.reap()
            except Exception:  # one bad call must not stop the reaper
                log.exception("reaping idle calls failed")
                continue
            for call_id in ended:
                log.info("call %s ended after %.0f s idle", call_id, self.options.idle_timeout_s)

    async def close(self) -> None:
        """Stop the reaper and end every live call (gateway shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self.end_all("shutdown")
        await self.models.close()

    async def end_all(self, reason: str) -> None:
        """End every live call and write its record (what a server's shutdown does
        first, so streams to clients, the event streams, end with their calls)."""
        await asyncio.gather(
            *(self._end(call, reason) for call in list(self._calls.values()) if call.live)
        )


MIN_RATE, MAX_RATE = 8000, 192000
"""Sample rates the gateway takes from clients (the query parameter and JSON bodies alike)."""


def check_rate_param(value: Any, where: str) -> int:
    """A sample rate from a request (query or JSON), as an int.

    Raises:
        ConfigError: not a whole number of Hz in range.
    """
    from pipeflow.audio.pcm import check_rate

    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{where}: the sample rate must be a whole number of Hz, "
                              f"got {value!r}.") from None
    rate = check_rate(value, where)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ConfigError(f"{where}: the sample rate must be {MIN_RATE} to {MAX_RATE} Hz, "
                          f"got {rate}.")
    return rate
