"""A Realtime API client: a thin ``websockets`` shell around ``RealtimeProtocol``.

The protocol object decides what to send and decodes what arrives; this
module only moves bytes, keeps the connection alive (WebSocket pings),
waits when the socket's write buffer is full (back-pressure), and when the
connection drops, reconnects with exponential backoff and sets the session
up again. Reconnecting is visible to the reader as a ``Reconnected`` marker:
whatever response was in progress is lost, and the transport says so.

The API key goes only into the ``Authorization`` header; it is never logged
(not even by ``websockets``' own debug logging of headers and frames, which
goes through ``pipeflow.realtime.wslog``), and event logging (``log_events``)
redacts keys and audio payloads.

Pointed at the OpenAI API (``OPENAI_API_KEY`` set, no URL) the same client
talks to the real model::

    options = RealtimeOptions(instructions="Be brief.")
    async with RealtimeClient(options) as client:
        client.protocol.create_text_item("Hello!")
        client.protocol.create_response()
        await client.flush()
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from pipeflow.errors import ProtocolError, RemoteError
from pipeflow.realtime.events import (
    ErrorDetail,
    ErrorEvent,
    ServerEvent,
    SessionUpdated,
    UnknownEvent,
)
from pipeflow.realtime.options import (
    RealtimeOptions,
    ReconnectOptions,
    connect_url,
    resolve_api_key,
    resolve_url,
)
from pipeflow.realtime.protocol import RealtimeProtocol, SessionConfig, redact
from pipeflow.realtime.wslog import redacting_logger

__all__ = ["ConnectionEvent", "RealtimeClient", "Reconnected", "backoff_delays"]

log = logging.getLogger("pipeflow.realtime.client")

_MAX_MESSAGE = 16 * 1024 * 1024
# websockets logs handshake headers (the bearer key) and frame payloads at debug
# level; this logger shows neither.
_ws_log = redacting_logger("websockets.client")
# How long a closing handshake may take. It also bounds how long a peer that
# missed a keep-alive pong holds the connection after the ping timed out
# (websockets waits this long for the close before dropping the socket).
_CLOSE_TIMEOUT = 2.0


class Reconnected(msgspec.Struct, kw_only=True):
    """Marker yielded by ``events()``: the connection dropped and was restored.

    Attributes:
        attempt: which attempt succeeded (1 for the first).
        reason: why the old connection closed.
    """

    attempt: int
    reason: str = ""


ConnectionEvent = ServerEvent | UnknownEvent | Reconnected
"""What ``RealtimeClient.events()`` yields."""


def _close_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is None:
            return "the connection closed without a close frame"
        return f"the server closed the connection (code {rcvd.code}{', ' if rcvd.reason else ''}" \
            f"{rcvd.reason})"
    return f"{type(exc).__name__}: {exc}"


def backoff_delays(settings: ReconnectOptions) -> list[float]:
    """Seconds to wait before each reconnect attempt.

    ``backoff_s`` first, then doubling up to ``backoff_max_s``; a zero
    ``backoff_s`` retries at once, then waits 50 ms, 100 ms... so a server
    that stays away is not hammered.
    """
    delays: list[float] = []
    delay = settings.backoff_s
    for _ in range(settings.attempts):
        delays.append(delay)
        delay = min(max(delay * 2, 0.05), settings.backoff_max_s)
    return delays


class RealtimeClient:
    """One connection to a Realtime server, set up with a session.

    Args:
        options: URL, model, key, shape, keep-alive and reconnect settings.
        session: what ``session.update`` sets (instructions, voice, tools...);
            built from ``options`` when omitted.
        url: overrides the URL resolved from ``options`` and the environment.

    Raises:
        RemoteError: on ``connect()``, when there is no URL to connect to.
    """

    def __init__(
        self,
        options: RealtimeOptions | None = None,
        *,
        session: SessionConfig | None = None,
        url: str | None = None,
    ) -> None:
        self.options = options or RealtimeOptions()
        opts = self.options
        self.session_config = session or SessionConfig(
            instructions=opts.instructions,
            voice=opts.voice,
            tool_choice=opts.tool_choice,
            input_format=opts.input_format,
            output_format=opts.output_format,
            turn_detection=opts.turn_detection,
            transcription_model=opts.transcription_model,
        )
        self.url = url or resolve_url(opts)
        self.model = opts.model_name()
        self.protocol = RealtimeProtocol(opts.shape, opts.events)
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._pending: list[ConnectionEvent] = []
        self._closing = False
        self._log_events = opts.log_events

    # -- connection --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._ws is not None

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        key = resolve_api_key(self.options)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if self.options.shape == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        return headers

    async def _open(self) -> ClientConnection:
        if self.url is None:
            raise RemoteError(
                "no Realtime URL: set the 'url' option or OAI_REALTIME_URL, or set "
                "OPENAI_API_KEY to use the OpenAI API"
            )
        url = connect_url(self.url, self.model)
        host = urlsplit(url).hostname or ""
        local = host in ("127.0.0.1", "localhost", "::1")
        opts = self.options
        try:
            return await connect(
                url,
                additional_headers=self._headers(),
                open_timeout=opts.connect_timeout_s,
                ping_interval=opts.keepalive_s,
                ping_timeout=opts.keepalive_s,
                close_timeout=_CLOSE_TIMEOUT,
                compression=None,  # audio does not compress; deflate costs latency
                max_size=_MAX_MESSAGE,
                write_limit=opts.max_send_buffer,
                proxy=None if local else True,
                logger=_ws_log,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise RemoteError(
                    f"the Realtime server at {self.url} refused the API key (HTTP {status}); "
                    "check OPENAI_API_KEY / OAI_API_KEY or the 'api_key' option"
                ) from None
            raise RemoteError(
                f"the Realtime server at {self.url} refused the connection (HTTP {status})"
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise RemoteError(
                f"cannot connect to the Realtime server at {self.url}: "
                f"{exc or type(exc).__name__}"
            ) from exc

    async def connect(self) -> None:
        """Open the connection and set the session up (``session.update``).

        Raises:
            RemoteError: the server cannot be reached, refuses the key,
                rejects the session, or does not confirm it within
                ``connect_timeout_s``.
        """
        self._closing = False
        await self._connect()

    async def _connect(self) -> None:
        ws = await self._open()
        try:
            await asyncio.wait_for(self._setup(ws), self.options.connect_timeout_s)
        except TimeoutError:
            await ws.close()
            raise RemoteError(
                f"the Realtime server at {self.url} did not confirm the session within "
                f"{self.options.connect_timeout_s:g} s"
            ) from None
        except BaseException:
            await ws.close()
            raise
        self._ws = ws

    async def _setup(self, ws: ClientConnection) -> None:
        """Send ``session.update`` and read until ``session.updated`` (events are kept)."""
        self.protocol.connection_lost()
        self.protocol.update_session(self.session_config)
        try:
            for data in self.protocol.data_to_send():
                self._log("send", data)
                await ws.send(data, text=True)
            while True:
                message = await ws.recv(decode=False)
                if self._setup_done(message):
                    return
        except ConnectionClosed as exc:
            raise RemoteError(
                f"the Realtime server at {self.url} closed the connection during "
                f"session setup: {_close_reason(exc)}"
            ) from None

    def _setup_done(self, message: str | bytes) -> bool:
        """Keep the events of one setup message; True once the session is confirmed."""
        for event in self._receive(message):
            self._pending.append(event)
            if isinstance(event, ErrorEvent) and not self.protocol.session_ready:
                error = event.error
                raise RemoteError(
                    f"the Realtime server rejected the session: {error.message} "
                    f"({error.type}{', ' + error.code if error.code else ''})"
                )
            if isinstance(event, SessionUpdated):
                return True
        return False

    async def _reconnect(self, reason: str) -> Reconnected | None:
        """Reconnect with exponential backoff.

        Returns ``None`` when ``close()`` was called meanwhile; raises
        RemoteError when out of attempts.
        """
        settings = self.options.reconnect
        last = reason
        for attempt, delay in enumerate(backoff_delays(settings), start=1):
            if delay:
                await asyncio.sleep(delay)
            if self._closing:
                break
            try:
                await self._connect()
            except RemoteError as exc:
                last = str(exc)
                log.warning("reconnect attempt %d/%d failed: %s", attempt, settings.attempts,
                            last)
                continue
            if self._closing:  # closed while reconnecting: do not leave a socket open
                await self.close()
                break
            self.reconnects += 1
            log.info("reconnected to the Realtime server after: %s", reason)
            return Reconnected(attempt=attempt, reason=reason)
        if self._closing:
            return None
        raise RemoteError(
            f"lost the connection to the Realtime server at {self.url} ({reason})"
            + (f" and {settings.attempts} reconnect attempt(s) failed: {last}"
               if settings.attempts else "")
        )

    async def close(self) -> None:
        """Close the connection (idempotent); ``events()`` then ends."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- traffic -------------------------------------------------------------------

    def _log(self, direction: str, data: Any) -> None:
        if self._log_events and log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", direction, redact(data))

    def _receive(self, message: str | bytes) -> list[ConnectionEvent]:
        self._log("recv", message)
        try:
            self.protocol.receive_data(message)
        except ProtocolError as exc:
            log.warning("ignored a malformed server event: %s", exc)
            detail = ErrorDetail(type="protocol_error", code="malformed_event", message=str(exc))
            return [ErrorEvent(error=detail)]
        return self.protocol.events_received()  # type: ignore[return-value]

    async def flush(self) -> int:
        """Send what the protocol queued; waits while the socket's buffer is full.

        Returns:
            How many events were sent. While the connection is down, queued
            events are dropped (audio) and the count is 0: the session is set
            up again on reconnect.
        """
        out = self.protocol.data_to_send()
        ws = self._ws
        if ws is None or not out:
            return 0
        try:
            for data in out:
                if self._log_events:
                    self._log("send", data)
                await ws.send(data, text=True)
        except ConnectionClosed:
            return 0  # the reader sees the loss and reconnects
        return len(out)

    async def events(self) -> AsyncIterator[ConnectionEvent]:
        """Server events as they arrive, reconnecting when the connection drops.

        Ends after ``close()``.

        Raises:
            RemoteError: the connection was lost and could not be restored.
        """
        while True:
            while self._pending:
                yield self._pending.pop(0)
            ws = self._ws
            if ws is None:
                if self._closing:
                    return
                raise RemoteError("the Realtime client is not connected; call connect() first")
            try:
                message = await ws.recv(decode=False)
            except ConnectionClosed as exc:
                if self._closing:
                    return
                self._ws = None
                marker = await self._reconnect(_close_reason(exc))
                if marker is None:
                    return
                yield marker
                continue
            for event in self._receive(message):
                yield event
