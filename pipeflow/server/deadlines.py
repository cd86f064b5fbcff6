"""Read deadlines: a client that sends half a request does not keep a connection.

uvicorn waits for a request's head and body as long as the client likes, so
a few thousand half-sent requests hold as many file descriptors. Two bounds:

- ``DeadlineH11Protocol`` (uvicorn's h11 protocol) closes a connection whose
  request head has not fully arrived ``request_timeout_s`` after it opened or
  after the head's first bytes;
- ``BodyDeadline`` (ASGI middleware) reports a client that stops sending its
  body for ``request_timeout_s`` as gone (``http.disconnect``), so the
  handler stops waiting; the application logs it as one line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BodyDeadline", "DeadlineH11Protocol", "protocol_with_deadline"]


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head."""

    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        idle = self.conn.their_state is h11.IDLE
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()
        elif idle:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and self.transport.get_protocol() is self:
            self.transport.close()


def protocol_with_deadline(timeout_s: float) -> type[DeadlineH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this head deadline."""
    return type("GatewayH11Protocol", (DeadlineH11Protocol,), {"head_timeout_s": timeout_s})


class BodyDeadline:
    """ASGI middleware: a request body that stalls for ``timeout_s`` reads as a disconnect.

    Only while the body is arriving: once it is complete, ``receive`` waits
    as long as the response lasts (an event stream listens for the client
    going away that way).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                complete = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, bounded, send)
