"""Calls: one ``AgentSession`` per call id, and the registry that owns them.

A call runs the gateway's pipeline file with its source replaced by a push
source. File sinks are kept and write under ``<output_dir>/<call_id>/``, so
every call is recorded apart; a speaker sink (meaningless on a server)
becomes a null sink with the same playout clock. When a call ends (asked
for, idle too long, or the gateway stops) its record is written to
``call.json`` and its agent audio to ``gateway_agent.wav`` in that folder, and the
registry keeps the record, so ``GET /api/calls/{id}`` still answers.

Call states move along a table (``TRANSITIONS``); the registry refuses an
existing id (409), an id that is not ``[A-Za-z0-9_-]{1,64}`` (400) and a
call over ``max_calls`` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from pipeflow.audio.wav import WavWriter
from pipeflow.errors import ConfigError, LocalError, PipeflowError
from pipeflow.frames import AudioFrame, Frame, PlayoutPosition
from pipeflow.server.local import SharedModelServers, local_server_key
from pipeflow.server.options import GatewayOptions
from pipeflow.session import AgentSession

__all__ = [
    "CALL_ID",
    "TRANSITIONS",
    "Call",
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
"""The agent's audio as sent to the caller, written in the call folder at the end."""

LIVE_STATES = frozenset({"starting", "active", "ending"})


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
        self._ended = asyncio.Event()
        self._direct_feedback: dict[int, Callable[[Frame], None]] = {}

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

    def report_playout(self, position: PlayoutPosition) -> bool:
        """Tell the model transport how much of its item the caller heard (for truncation).

        Returns False when the pipeline has no stage that accepts it.
        """
        inbox = self._transport_inbox()
        if inbox is None:
            return False
        self._direct_feedback.get(id(inbox), inbox.put_feedback)(position)
        return True

    def take_over_playout(self) -> None:
        """From now on the client says where a barge-in cut the agent off (Twilio's marks).

        The pipeline's own sinks play the agent's audio on the gateway's clock,
        not the caller's: on a barge-in they too report an interrupted position,
        which would truncate the model's item a first time, at the wrong place
        (the Realtime API then refuses the client's truncation, or the two
        disagree). Their interrupted positions are dropped; the transport hears
        only ``report_playout``. Positions of items that played out still pass.
        """
        inbox = self._transport_inbox()
        if inbox is None or id(inbox) in self._direct_feedback:
            return
        direct = inbox.put_feedback
        self._direct_feedback[id(inbox)] = direct

        def put_feedback(frame: Frame) -> None:
            if isinstance(frame, PlayoutPosition) and frame.interrupted:
                return  # a sink's guess; the client reports what was really heard
            direct(frame)

        inbox.put_feedback = put_feedback  # type: ignore[method-assign]

    def _transport_inbox(self) -> Any:
        session = self.session
        if session is None:
            return None
        for stage in session.pipeline.stages:
            inbox = stage.ctx.inbox
            if inbox is not None and issubclass(PlayoutPosition, stage.accepts):
                return inbox
        return None

    async def wait_ended(self) -> None:
        """Return once the call has ended or failed."""
        await self._ended.wait()

    # -- what the API shows ----------------------------------------------------

    def order(self) -> Any:
        """The order taking shape in the session's userdata (``userdata["order"]``), as data."""
        return self._userdata_item("order")

    def _userdata_item(self, key: str) -> Any:
        if self._record is not None:
            return self._record.get(key)
        session = self.session
        userdata = session.userdata if session is not None else None
        return _as_data(userdata.get(key) if isinstance(userdata, dict) else None)

    def agent_audio(self) -> tuple[bytes, int]:
        """The agent's audio so far as PCM16 mono and its rate (24 kHz when none yet)."""
        if self._record is not None:
            path = self.folder / AGENT_AUDIO
            if path.exists():
                from pipeflow.audio.wav import read_wav

                audio = read_wav(path)
                return audio.pcm, audio.sample_rate
            return b"", 24000
        return _agent_pcm(self.session.frames if self.session is not None else [])

    def summary(self, brief: bool = False) -> dict[str, Any]:
        """The call as JSON-ready data; ``brief`` leaves out turns and tool calls."""
        record = dict(self._record) if self._record is not None else self._build_record()
        record["state"] = self.state
        if brief:
            for key in ("turns", "tool_calls", "transcript", "order", "placed"):
                record.pop(key, None)
        return record

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
            "order": self.order(),
            "placed": self._userdata_item("placed"),
        }

    # -- ending ------------------------------------------------------------------

    async def finish(self, reason: str, timeout_s: float) -> None:
        """End the session, write the record and the agent audio, keep the record."""
        session = self.session
        if session is not None:
            try:
                await session.close(timeout_s)
            except Exception as exc:  # a stage failing at shutdown must not lose the record
                log.warning("call %s: error while closing: %s", self.id, exc)
                self.error = self.error or str(exc)
            if session.error is not None and not self.error:
                self.error = f"{session.error.stage}: {session.error.message}"
        self.ended_at = time.time()
        self.end_reason = reason
        self.move("ended")
        record = self._build_record()
        pcm, rate = _agent_pcm(session.frames if session is not None else [])
        self._record = record
        self.session = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "call.json").write_bytes(msgspec.json.format(
                msgspec.json.encode(record), indent=2))
            if pcm:
                with WavWriter(self.folder / AGENT_AUDIO, rate) as writer:
                    writer.write(pcm)
        except OSError as exc:
            log.error("call %s: cannot write its record under %s: %s", self.id, self.folder, exc)
        self._ended.set()

    def fail(self, message: str) -> None:
        """Mark a call that could not start."""
        self.error = message
        self.end_reason = "failed"
        self.ended_at = time.time()
        self.move("failed")
        self._record = self._build_record()
        self.session = None
        self._ended.set()


def _as_data(value: Any) -> Any:
    if value is None:
        return None
    try:
        return msgspec.to_builtins(value)
    except (TypeError, msgspec.EncodeError):
        return str(value)


def _agent_pcm(frames: list[Frame]) -> tuple[bytes, int]:
    """Agent audio (frames with an item id) joined, at the first frame's rate."""
    rate = 0
    parts = []
    for frame in frames:
        if type(frame) is AudioFrame and frame.item_id:
            rate = rate or frame.sample_rate
            if frame.sample_rate == rate and frame.channels == 1:
                parts.append(frame.pcm)
    return b"".join(parts), rate or 24000


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
        self._base_output = config.output_dir
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

    async def start(self, call_id: str, sample_rate: int = 16000) -> Call:
        """Start a call: build its session and wait until the model session is up.

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
            session = self._session(call)
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
        return call

    def _session(self, call: Call) -> AgentSession:
        """The call's session, built without reading the pipeline file again."""
        session = AgentSession.from_config(
            copy.deepcopy(self._config),  # every call gets stage options of its own
            session_id=call.id,
            output_dir=str(call.folder),
            start_timeout_s=self.options.start_timeout_s,
        )
        relocate_outputs(session, call.folder, self._base_output)
        for stage in session.pipeline.stages:
            self.models.point(stage)
        return session

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
            seen = call.session.frames_seen
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
        await asyncio.gather(
            *(self._end(call, "shutdown") for call in list(self._calls.values()) if call.live)
        )
        await self.models.close()


def relocate_outputs(session: AgentSession, folder: Path, base_output: str) -> None:
    """Point the session's file sinks into the call's folder; make speakers null sinks.

    Audio sinks stop draining at the end: ending a call drops the agent's
    unplayed audio instead of waiting for it to play out.

    A relative path under the pipeline's ``output_dir`` keeps its place
    below the call folder; any other path keeps only its file name, so two
    calls never write the same file.
    """
    from pipeflow.registry import registry

    stages = session.pipeline.stages
    for index, stage in enumerate(stages):
        if index == 0:
            continue
        if stage.name == "speaker":
            opts = stage.options
            null = registry.resolve("null")(realtime=opts.realtime, source=opts.source,
                                            drain=False)
            null.id = stage.id
            stages[index] = null
            continue
        if getattr(stage.options, "drain", False):
            # A hung-up caller hears nothing more: the end of a call never waits for playout.
            stage.options = msgspec.structs.replace(stage.options, drain=False)
        path = getattr(stage.options, "path", None)
        if not isinstance(path, str) or stage.name == "transcript":
            continue  # the transcript sink already writes under output_dir
        stage.options = msgspec.structs.replace(
            stage.options, path=str(folder / _inside(Path(path), Path(base_output)))
        )


def _inside(path: Path, base: Path) -> Path:
    if not path.is_absolute():
        with contextlib.suppress(ValueError):
            return path.relative_to(base)
        if ".." not in path.parts:
            return path
    return Path(path.name)


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
