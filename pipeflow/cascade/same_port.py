"""One port for both protocols: WebSocket upgrades to the Realtime server, the rest to HTTP.

The local Realtime server is a ``websockets`` server, and ``websockets`` only
answers ``GET`` upgrades. The cascade's endpoints (``POST /v1/chat/completions``,
``/v1/audio/transcriptions``, ``/v1/audio/speech``) are an ASGI app. Rather
than a proxy hop in front of the Realtime path, each new connection looks at
its first bytes: a request that is not a ``GET`` is handed, on the same
transport, to uvicorn's HTTP/1.1 protocol running the app; a ``GET`` stays a
WebSocket connection, untouched. The Realtime path pays one ``startswith``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection

__all__ = ["http_diverting"]

_GET = b"GET "


def http_diverting(app: Any) -> type[ServerConnection]:
    """A ``ServerConnection`` class (``serve(create_connection=...)``) that sends
    requests other than ``GET`` to the ASGI ``app``.

    Args:
        app: the ASGI application serving the HTTP routes.
    """
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                            timeout_keep_alive=30)
    config.load()
    state = ServerState()

    class Diverting(ServerConnection):
        """Defers the WebSocket set-up until the first bytes say which protocol it is."""

        _pending: asyncio.BaseTransport | None = None
        _head = b""

        @staticmethod
        def close_http() -> None:
            """End the HTTP connections (idle keep-alive ones at once, busy ones after
            their answer), so a server closing does not wait on them."""
            for connection in list(state.connections):
                connection.shutdown()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._pending = transport

        def data_received(self, data: bytes) -> None:
            transport = self._pending
            if transport is None:
                super().data_received(data)
                return
            head = self._head + data
            if len(head) < len(_GET) and _GET.startswith(head):
                self._head = head  # too short to tell yet
                return
            self._pending, self._head = None, b""
            if head.startswith(_GET):
                super().connection_made(transport)
                super().data_received(head)
                return
            http = H11Protocol(config=config, server_state=state, app_state={})
            transport.set_protocol(http)
            http.connection_made(transport)  # type: ignore[arg-type]
            http.data_received(head)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._pending is not None:  # closed before a byte was read
                self._pending = None
                return
            super().connection_lost(exc)

        def eof_received(self) -> bool | None:
            if self._pending is not None:
                return None
            return super().eof_received()

    return Diverting
