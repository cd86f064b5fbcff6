"""The local Realtime server: a scripted, offline stand-in for the OpenAI Realtime API.

It serves the Realtime WebSocket protocol (GA event names by default, beta
names for a client that sends ``OpenAI-Beta: realtime=v1``, connects with
``?shape=beta`` or sends a beta-shaped ``session.update``) at
``ws://HOST:PORT/v1/realtime``, and on the same port the cascade's HTTP
endpoints (``/v1/chat/completions``, ``/v1/audio/transcriptions``,
``/v1/audio/speech``; see ``_http_too``). Each connection is one ``ServerSession``
(``pipeflow.realtime.server_session``), a pure object; this module only moves
its bytes and sleeps until its next event is due. Use it in tests, in demos
(``pipeflow realtime-server``) and as the ``realtime`` stage's default when
no API key is set::

    async with LocalRealtimeServer(script="pipelines/scripts/demo.yaml") as server:
        client = AsyncOpenAI(api_key="unused", websocket_base_url=server.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            ...

With ``api_key`` set, connections must send ``Authorization: Bearer KEY``
(else HTTP 401), like the real API.

CPU-heavy work stays off the event loop every connection shares: committed
audio is decoded in a worker thread (or a decoding process), and a long reply
not in the speech cache is synthesised in the server's speech thread
(espeak-ng's ctypes call releases the GIL while it synthesises, so the loop
keeps running; ``tests/test_reliability_realtime.py`` measures its lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pipeflow.asr.options import build_transcriber
from pipeflow.asr.process import (
    ProcessTranscriber,
    decoding_in_processes,
    shared_process_transcriber,
)
from pipeflow.errors import LocalError
from pipeflow.realtime.script import DEFAULT_SCRIPT, Script, load_script
from pipeflow.realtime.server_faults import FaultBudget, Faults
from pipeflow.realtime.server_responses import Speech
from pipeflow.realtime.server_session import ServerOptions, ServerSession, Transcription
from pipeflow.realtime.voice import Speaker, Transcriber, tones
from pipeflow.realtime.wslog import redacting_logger

__all__ = ["PATH", "LocalRealtimeServer"]

log = logging.getLogger("pipeflow.realtime.server")

PATH = "/v1/realtime"
"""The endpoint path, as on the OpenAI API."""

_MAX_MESSAGE = 16 * 1024 * 1024
_ws_log = redacting_logger("websockets.server")  # debug logs without the clients' keys


_CLOSE_TIMEOUT = 2.0
_BATCH = 8  # events sent between two turns of the event loop
_SPEECH = ThreadPoolExecutor(1, thread_name_prefix="pipeflow-speech")
"""Synthesis runs here: espeak-ng takes one text at a time anyway (its lock), and the
default pool's threads stay free for decoding."""


async def _close(ws: ServerConnection, timeout: float) -> None:
    """Close one connection; drop it when the close frame cannot be sent in time."""
    try:
        async with asyncio.timeout(timeout):
            await ws.close(1001, "the server is shutting down")
    except TimeoutError:
        ws.transport.abort()


def _error_body(message: str, code: str, kind: str = "invalid_request_error") -> str:
    body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return msgspec.json.encode(body).decode() + "\n"


def _error_event() -> str:
    return msgspec.json.encode({"type": "error", "event_id": "event_server_error", "error": {
        "type": "server_error", "code": "server_error", "param": None, "event_id": None,
        "message": "The server could not handle this event; the session goes on."}}).decode()


class LocalRealtimeServer:
    """A Realtime-compatible WebSocket server that plays a script.

    Args:
        script: a ``Script``, a path to a script YAML file, or None for the
            built-in default.
        host: address to listen on.
        port: TCP port (0 picks a free one; read it back from ``port``/``url``).
        first_audio_delay_ms: delay before each response's first audio
            (overrides the script's).
        speed: audio pacing, 1 real time, 0 none (overrides the script's).
        api_key: when set, the bearer key every connection must send.
        faults: faults to inject (overrides ``options.faults``).
        options: the rest (chunk size, speech engine, server VAD).
        transcriber: turns committed user audio into words (default: the one
            the script's ``transcriber`` section describes, if any).
        keep_sessions: keep every connection's session in ``sessions`` after
            it closes (for tests and diagnostics); a long-running server that
            many calls share (the call gateway's) sets it False.
        decode_in_process: decode the script's transcriber in child processes
            (``pipeflow.asr.process``), so a long turn never holds this
            process's event loop; default: what the process is set to
            (``decode_in_processes``), on in the gateway, the workers and
            ``pipeflow realtime-server``.

    Raises:
        ConfigError: the script file is missing or invalid.
    """

    def __init__(
        self,
        script: Script | str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        first_audio_delay_ms: int | None = None,
        speed: float | None = None,
        api_key: str | None = None,
        faults: Faults | None = None,
        options: ServerOptions | None = None,
        transcriber: Transcriber | None = None,
        keep_sessions: bool = True,
        decode_in_process: bool | None = None,
    ) -> None:
        if script is None:
            self.script = DEFAULT_SCRIPT
        elif isinstance(script, Script):
            self.script = script
        else:
            self.script = load_script(script)
        opts = options or ServerOptions()
        changes: dict[str, Any] = {}
        if first_audio_delay_ms is not None:
            changes["first_audio_delay_ms"] = first_audio_delay_ms
        if speed is not None:
            changes["speed"] = speed
        if faults is not None:
            changes["faults"] = faults
        self.options = msgspec.structs.replace(opts, **changes)
        self.host = host
        self.port = port
        self.api_key = api_key
        if transcriber is None and self.script.transcriber is not None:
            if decode_in_process is None:
                decode_in_process = decoding_in_processes()
            transcriber = (shared_process_transcriber(self.script.transcriber, self.script.source)
                           if decode_in_process
                           else build_transcriber(self.script.transcriber, self.script.source))
        self.transcriber = transcriber
        self.sessions: list[ServerSession] = []
        """Every connection's session, oldest first (only open ones without keep_sessions)."""
        self.keep_sessions = keep_sessions
        self._connections = 0
        self._transcribing = asyncio.Semaphore(getattr(transcriber, "concurrency", 1))
        self.refused = 0
        """Connection attempts refused (bad path, key or an injected fault)."""
        self.budget = FaultBudget(self.options.faults)
        self._speaker: Speaker | None = None
        self._server: Server | None = None
        self._http: Any = None  # the connection class that serves HTTP too
        self._refusals_left = self.options.faults.refuse_connections
        self._live: set[ServerConnection] = set()
        self._general: Any = None  # pocketsphinx's general model, for transcription sessions
        self._general_lock = asyncio.Lock()
        self.close_timeout = _CLOSE_TIMEOUT
        """Seconds a closing connection may take before it is dropped."""

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/v1/realtime``: the Realtime URL clients connect to."""
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def base_url(self) -> str:
        """``ws://HOST:PORT/v1``: the ``websocket_base_url`` of the openai SDK."""
        return f"ws://{self.host}:{self.port}/v1"

    @property
    def http_base_url(self) -> str:
        """``http://HOST:PORT/v1``: the ``base_url`` of the openai SDK's HTTP client
        (chat and audio) and of the ``stt``, ``llm`` and ``tts`` stages."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Listen; ``port`` holds the real port afterwards.

        Raises:
            LocalError: the address cannot be bound.
        """
        script = self.script
        speech = self.options.speech
        if isinstance(self.transcriber, ProcessTranscriber):
            await asyncio.to_thread(self.transcriber.warm)  # a bad section fails here, not mid-call
        self._speaker = await asyncio.to_thread(
            Speaker, script.voice, script.words_per_minute, speech
        )
        try:
            self._server = await serve(
                self._handle, self.host, self.port, process_request=self._check,
                compression=None, max_size=_MAX_MESSAGE, close_timeout=self.close_timeout,
                logger=_ws_log, create_connection=self._http_too(),
            )
        except OSError as exc:
            raise LocalError(
                f"the local Realtime server cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        log.info("local Realtime server listening on %s (script %s)", self.url,
                 script.source or "<built-in>")

    def _http_too(self) -> Any:
        """Connections that also serve the cascade's HTTP endpoints on this port:
        ``POST /v1/chat/completions`` (this script), ``/v1/audio/transcriptions``
        and ``/v1/audio/speech`` (``pipeflow.cascade.audio_server``)."""
        from pipeflow.cascade.audio_server import local_api_app
        from pipeflow.cascade.same_port import http_diverting

        self._http = http_diverting(local_api_app(self.script, self.api_key, self.transcriber,
                                                  self._speaker))
        return self._http

    async def close(self) -> None:
        """Stop listening and close every connection (idempotent).

        A client that stopped reading cannot take the close frame; its
        connection is dropped after ``close_timeout`` seconds.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=False)
        if self._http is not None:
            self._http.close_http()
        await asyncio.gather(*(_close(ws, self.close_timeout) for ws in list(self._live)))
        await server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled (the CLI's main loop)."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> LocalRealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections -------------------------------------------------------------------

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a wrong path, a missing or wrong key, or an injected refusal."""
        path = urlsplit(request.path).path.rstrip("/")
        if path != PATH:
            self.refused += 1
            return connection.respond(404, _error_body(
                f"No Realtime endpoint at {path or '/'}; connect to {PATH}.", "not_found"))
        if self.api_key is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.api_key}".encode()):
                self.refused += 1
                return connection.respond(401, _error_body(
                    "Incorrect or missing API key: send 'Authorization: Bearer KEY' with the "
                    "key the local Realtime server was started with.", "invalid_api_key"))
        if self._refusals_left > 0:
            self._refusals_left -= 1
            self.refused += 1
            return connection.respond(503, _error_body(
                "The server is overloaded (injected fault); try again.", "server_overloaded",
                "server_error"))
        return None

    def _session_for(self, request: Request) -> ServerSession:
        query = parse_qs(urlsplit(request.path).query)
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        shape: Literal["ga", "beta"] = (
            "beta" if beta or query.get("shape", [""])[0] == "beta" else "ga"
        )
        model = query.get("model", ["gpt-realtime"])[0]
        return ServerSession(
            self.script, self.options, shape=shape, model=model, number=self._connections,
            budget=self.budget, transcriber=self.transcriber, speaker=self._speaker,
            defer_transcription=True, defer_speech=True,
            transcription_session=query.get("intent", [""])[0] == "transcription",
        )

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection: read client events; a writer task sends what is due."""
        loop = asyncio.get_running_loop()
        assert ws.request is not None
        self._connections += 1  # numbers stay unique when closed sessions are dropped
        session = self._session_for(ws.request)
        if session.config.transcription_session and session.transcriber is None:
            session.transcriber = await self._general_transcriber()
        self.sessions.append(session)
        self._live.add(ws)
        session.start(loop.time())
        wake = asyncio.Event()
        writer = asyncio.create_task(self._write(ws, session, wake))
        try:
            async for message in ws:
                try:
                    session.receive_data(message, loop.time())
                except Exception as exc:  # a bug must cost one event, never the connection
                    log.error("client event of %d bytes not handled (%s: %s); answered with "
                              "an error event", len(message), type(exc).__name__, exc)
                    await ws.send(_error_event(), text=True)
                wake.set()
                await self._work(session, wake)
        except ConnectionClosed:
            pass
        finally:
            self._live.discard(ws)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not self.keep_sessions:
                self.sessions.remove(session)

    async def _general_transcriber(self) -> Any:
        """The script's recogniser has no sentences to listen for a transcription
        session's audio: pocketsphinx's general English model does (loaded once)."""
        async with self._general_lock:
            if self._general is None:
                from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

                self._general = await asyncio.to_thread(PocketsphinxTranscriber)
        return self._general

    async def _work(self, session: ServerSession, wake: asyncio.Event) -> None:
        """Do what the session left to do off the event loop: transcribe committed
        audio, speak replies not in the speech cache (a response waits for its speech)."""
        loop = asyncio.get_running_loop()
        while True:
            if (job := session.take_transcription()) is not None:
                session.transcribed(job, await self._transcribe(job, session.transcriber),
                                    loop.time())
            elif (speech := session.take_speech()) is not None:
                session.spoken(speech, await _speak(session.speaker, speech), loop.time())
            else:
                return
            wake.set()

    async def _transcribe(self, job: Transcription, transcriber: Any) -> str | None:
        """The words of committed audio, decoded in a worker thread so that other
        connections' audio keeps flowing; as many decodes at a time as the shared
        transcriber runs at once (one in a thread, one per decoding process).
        A decoder that fails leaves the script's words to stand in."""
        assert transcriber is not None
        async with self._transcribing:
            try:
                return await asyncio.to_thread(job.run, transcriber)
            except Exception:
                log.exception("transcribing item %s failed; the script's words stand in",
                              job.item_id)
                return None

    async def _write(self, ws: ServerConnection, session: ServerSession,
                     wake: asyncio.Event) -> None:
        """Send each event when it is due; waits while the client does not read."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                wake.clear()
                while batch := session.data_to_send(loop.time(), _BATCH):
                    for data in batch:
                        await ws.send(data, text=True)
                    await asyncio.sleep(0)  # let the reader in: a cancel stops the rest now
                if session.close is not None:
                    close = session.close
                    if close.abort:
                        ws.transport.abort()
                    else:
                        await ws.close(close.code, close.reason)
                    return
                deadline = session.next_deadline()
                if deadline is None:
                    await wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await wake.wait()
        except ConnectionClosed:
            return


async def _speak(speaker: Speaker, job: Speech) -> bytes:
    """``job``'s speech, synthesised in the speech thread; tones when it fails."""
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _SPEECH, speaker.speak, job.text, job.rate)
    except Exception as exc:  # a reply must still be sent, timed as speech would be
        log.error("speaking response %s failed (%s: %s); tones stand in", job.response_id,
                  type(exc).__name__, exc)
        return tones(job.text, job.rate, speaker.words_per_minute).tobytes()
