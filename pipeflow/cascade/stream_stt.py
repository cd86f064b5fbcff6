"""OpenAI's streaming transcription: a Realtime transcription session over WebSocket.

``wss://.../v1/realtime?intent=transcription`` takes the caller's audio while
they speak (``input_audio_buffer.append``), so at the end of the turn only
the ``commit`` is left to send, and answers each committed turn with
``conversation.item.input_audio_transcription.delta`` events, then
``.completed`` with the whole transcript. The session is set up with GA's
``session.update`` (``session.type: "transcription"``: the input format,
24 kHz PCM16, the model, language and prompt; no turn detection, the
pipeline's own end of turn commits). The local Realtime server serves the
same protocol offline.

``RealtimeTranscriber`` is the ``stt`` stage's client for it: ``append`` each
caller frame as it comes (never waits: a writer task sends in order),
``commit`` at the end of a turn (returns the awaitable words). The
connection opens on the first audio and again after it is lost; the turns
waiting when it is lost fail with ``stream_cut`` (their audio is gone, so
they are not retried), and a turn whose words do not come within
``timeout_s`` fails with ``timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from pipeflow.cascade.chat import ChatError

__all__ = ["SESSION_RATE", "RealtimeTranscriber", "transcription_url"]

SESSION_RATE = 24000
"""The rate a Realtime session takes PCM16 at (``audio/pcm`` is 24 kHz only)."""

_WHO = "the streaming speech-to-text model"


def transcription_url(base_url: str) -> str:
    """``{base_url}/realtime?intent=transcription`` as a WebSocket URL (http -> ws)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/realtime", "intent=transcription",
                       ""))


class _Turn:
    """One committed turn waiting for its words."""

    __slots__ = ("deltas", "future", "item_id")

    def __init__(self, future: asyncio.Future[str]) -> None:
        self.future = future
        self.item_id = ""
        self.deltas: list[str] = []


class RealtimeTranscriber:
    """The caller's audio streamed into a Realtime transcription session.

    Args:
        base_url: the API root (``https://api.openai.com/v1``, or the local server's).
        model: the transcription model (``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe``...).
        api_key: sent as ``Authorization: Bearer``; empty sends none.
        language: ISO-639-1 code of the caller's language ("" lets the model guess).
        timeout_s: how long a committed turn may wait for its words, and the
            connection for ``session.updated``.
    """

    streaming = True

    def __init__(self, base_url: str, model: str, api_key: str = "", language: str = "",
                 timeout_s: float = 30.0) -> None:
        self.url = transcription_url(base_url)
        self.model = model
        self.language = language
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unacked: deque[_Turn] = deque()  # committed, item id not known yet
        self._turns: dict[str, _Turn] = {}  # item id -> turn
        self._resampler: Any = None
        self._rate = 0
        self._prompt: str | None = None  # the prompt the session was last set with
        self._appended = False  # audio sent since the last commit
        self._lost: ChatError | None = None  # why the connection ended, while it is down
        self.events: list[dict[str, Any]] = []
        """Every server event received, decoded (kept for tests; bounded)."""

    # -- what the stage calls ----------------------------------------------------------

    def append(self, pcm: bytes, sample_rate: int) -> None:
        """Send one piece of the caller's audio (PCM16 mono); never waits."""
        if not pcm:
            return
        if sample_rate != SESSION_RATE:
            if self._resampler is None or self._rate != sample_rate:
                self._resampler = soxr.ResampleStream(sample_rate, SESSION_RATE, 1,
                                                      dtype="int16", quality="HQ")
                self._rate = sample_rate
            pcm = self._resampler.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes()
            if not pcm:
                return
        self._ensure_running()
        self._appended = True
        self._send({"type": "input_audio_buffer.append",
                    "audio": base64.b64encode(pcm).decode("ascii")})

    def commit(self, expect: str | None = None) -> asyncio.Future[str]:
        """End the turn now: its words, once the session has heard them.

        ``expect`` (what the caller is expected to say, "digits") goes to the
        session as the transcription ``prompt``, before the commit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        if self._resampler is not None:  # the resampler's tail belongs to this turn
            tail = self._resampler.resample_chunk(np.zeros(0, "<i2"), last=True).tobytes()
            self._resampler = None
            if tail:
                self._send({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(tail).decode("ascii")})
        if not self._appended:
            future.set_result("")  # nothing said: the API would refuse an empty commit
            return future
        self._appended = False
        if self._task is None or self._task.done():  # lost since this turn's audio went
            future.set_exception(self._lost or ChatError(
                f"{_WHO} at {self.url} closed the session mid-turn", "stream_cut"))
            return future
        if (expect or "") != (self._prompt or ""):
            self._prompt = expect or ""
            self._send({"type": "session.update", "session": self._session()})
        self._send({"type": "input_audio_buffer.commit"})
        self._unacked.append(_Turn(future))
        return future

    async def transcribe(self, pcm: bytes, sample_rate: int, expect: str | None = None) -> str:
        """A whole turn at once (the ``SttClient`` interface): append, commit, wait."""
        self.append(pcm, sample_rate)
        return await self.words(self.commit(expect))

    async def words(self, future: asyncio.Future[str]) -> str:
        """The words of a committed turn, waited on no longer than ``timeout_s``."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            raise ChatError(f"{_WHO} at {self.url} sent no transcript within "
                            f"{self.timeout_s:g} s of the end of the turn", "timeout") from None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(ChatError(f"{_WHO} at {self.url}: the call ended first", "closed"))

    # -- the connection ----------------------------------------------------------------

    def _session(self) -> dict[str, Any]:
        transcription: dict[str, Any] = {"model": self.model}
        if self.language:
            transcription["language"] = self.language
        if self._prompt:
            transcription["prompt"] = self._prompt
        return {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": SESSION_RATE},
            "transcription": transcription, "turn_detection": None}}}

    def _send(self, event: dict[str, Any]) -> None:
        self._out.put_nowait(msgspec.json.encode(event))

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._out = asyncio.Queue()  # what was queued for a lost connection is stale
            self._lost = None
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="stt.transcription")

    async def _run(self) -> None:
        try:
            ws = await self._open()
        except ChatError as exc:
            self._lost = exc
            self._fail_all(exc)
            return
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            while (data := await self._out.get()) is not None:
                await ws.send(data.decode())
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()  # done already unless the writer stopped first
            with contextlib.suppress(BaseException):
                await reader
            self._fail_all(self._lost or ChatError(
                f"{_WHO} at {self.url} closed the session mid-turn", "stream_cut"))
            await ws.close()

    async def _open(self) -> ClientConnection:
        local = (urlsplit(self.url).hostname or "") in ("127.0.0.1", "localhost", "::1")
        try:
            ws = await connect(self.url, additional_headers=self._headers,
                               open_timeout=self.timeout_s, compression=None,
                               proxy=None if local else True)
        except InvalidStatus as exc:
            status = exc.response.status_code
            what = ("refused the API key: check OPENAI_API_KEY or the stage's api_key_env"
                    if status in (401, 403) else "refused the connection")
            raise ChatError(f"{_WHO} at {self.url} {what} (HTTP {status})",
                            f"http_{status}", status) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ChatError(f"cannot reach {_WHO} at {self.url} ({exc or type(exc).__name__})",
                            "unreachable") from None
        await ws.send(msgspec.json.encode({"type": "session.update",
                                           "session": self._session()}).decode())
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        """Server events in: turns get their item ids, then their words."""
        try:
            async for message in ws:
                event = msgspec.json.decode(message)
                if not isinstance(event, dict):
                    continue
                if len(self.events) < 10_000:
                    self.events.append(event)
                self._event(event)
        except (ConnectionClosed, msgspec.DecodeError) as exc:
            self._lost = ChatError(f"{_WHO} at {self.url} closed the session mid-turn ({exc})",
                                   "stream_cut")
        else:
            self._lost = ChatError(f"{_WHO} at {self.url} closed the session mid-turn",
                                   "stream_cut")
        finally:
            if self._lost is not None:
                self._fail_all(self._lost)
            self._out.put_nowait(None)  # the writer stops; the next audio reconnects

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.committed":
            if self._unacked:
                turn = self._unacked.popleft()
                turn.item_id = str(event.get("item_id") or "")
                self._turns[turn.item_id] = turn
        elif kind == "conversation.item.input_audio_transcription.delta":
            turn = self._turns.get(str(event.get("item_id")))
            if turn is not None:
                turn.deltas.append(str(event.get("delta") or ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            turn = self._turns.pop(str(event.get("item_id")), None)
            if turn is not None and not turn.future.done():
                turn.future.set_result(str(event.get("transcript") or "").strip())
        elif kind == "conversation.item.input_audio_transcription.failed":
            turn = self._turns.pop(str(event.get("item_id")), None)
            error = event.get("error") or {}
            if turn is not None and not turn.future.done():
                turn.future.set_exception(ChatError(
                    f"{_WHO} at {self.url} could not transcribe the turn: "
                    f"{error.get('message') or 'no reason given'}", "transcription_failed"))
        elif kind == "error":
            error = event.get("error") or {}
            failure = ChatError(f"{_WHO} at {self.url} reported an error: "
                                f"{error.get('message') or 'no message'}", "stream_error")
            if self._unacked:  # the commit it answers, most likely
                turn = self._unacked.popleft()
                if not turn.future.done():
                    turn.future.set_exception(failure)

    def _fail_all(self, error: ChatError) -> None:
        turns = [*self._unacked, *self._turns.values()]
        self._unacked.clear()
        self._turns.clear()
        for turn in turns:
            if not turn.future.done():
                turn.future.set_exception(error)
                turn.future.exception()  # retrieved here: an abandoned turn logs nothing
