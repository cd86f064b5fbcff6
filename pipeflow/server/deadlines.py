"""Read deadlines: a client that sends half a request does not keep a connection.

uvicorn waits for a request's head and body as long as the client likes, so
a few thousand half-sent requests hold as many file descriptors. Two bounds:

- ``DeadlineH11Protocol`` (uvicorn's h11 protocol) closes a connection whose
  request head has not fully arrived ``request_timeout_s`` after it opened or
  after the head's first bytes;
- ``BodyDeadline`` (ASGI middleware) reports a client that stops sending its
  body for ``request_timeout_s`` as gone (``http.disconnect``), so the
  handler stops waiting; the application logs it as one line.

And one bound on how many connections are open at once: past
``max_connections`` a new connection is answered 503 and closed at once,
so the process never runs out of file descriptors (when it did, asyncio's
accept loop logged a traceback per backlog slot per second: 21 MB in 7 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BodyDeadline", "DeadlineH11Protocol", "connection_limit", "protocol_with_deadline"]

_BUSY_BODY = (b'{"error":{"status":503,"message":"The gateway has too many open '
              b'connections; retry."}}\n')
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"retry-after: 5\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%b"
         % (len(_BUSY_BODY), _BUSY_BODY))
_FD_RESERVE = 64  # descriptors kept for files, the model server and call sockets


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head."""

    head_timeout_s = 10.0
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.max_connections
        if limit is not None and len(self.server_state.connections) > limit:
            transport.write(_BUSY)
            transport.close()
            return
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


def protocol_with_deadline(timeout_s: float, max_connections: int | None = None
                           ) -> type[DeadlineH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this head deadline
    and connection bound."""
    return type("GatewayH11Protocol", (DeadlineH11Protocol,),
                {"head_timeout_s": timeout_s, "max_connections": max_connections})


def connection_limit(wanted: int) -> int:
    """``wanted``, or fewer where the process's file descriptor limit is lower.

    Raises the soft descriptor limit to the hard one first (as servers do),
    then keeps ``_FD_RESERVE`` descriptors and two per call connection (its
    socket and the model's) free.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - _FD_RESERVE) // 2))


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
