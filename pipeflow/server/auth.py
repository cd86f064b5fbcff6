"""Bearer-token authentication for the gateway's API, WebSockets and Twilio.

The gateway has a token unless it was started with ``no_auth`` on a
loopback host (``GatewayOptions.check_auth``); then every request passes
this middleware (and ``BrowserGuard`` keeps other pages out). With one, ``/api/...`` and
``/twilio/...`` need ``Authorization: Bearer TOKEN`` (or HTTP Basic with
TOKEN as the password, which is what a Twilio webhook URL
``https://user:TOKEN@host/twilio/voice`` sends), or a ``token`` query
parameter where a client cannot set headers (a browser's WebSocket). The
Twilio media socket may instead carry it as a ``<Parameter name="token">``,
checked when its ``start`` message arrives. The page at ``/`` is public.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeflow.server.api import error_response

__all__ = ["TokenAuth", "scope_token", "token_matches"]

PROTECTED = ("/api/", "/twilio/")
"""Path prefixes that need the token."""
LATE_CHECK = ("/twilio/media",)
"""Sockets whose token may come inside the stream (checked by their handler)."""


def token_matches(given: str | None, expected: str) -> bool:
    """Compare tokens in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def scope_token(scope: Scope) -> str | None:
    """The token a request carries: Bearer, Basic password or ``token`` query parameter."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, credentials = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer":
                return credentials.strip()
            if kind.lower() == "basic":
                try:
                    decoded = base64.b64decode(credentials.strip(), validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return None
                return decoded.partition(":")[2]
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query):
        if key == "token":
            return value
    return None


class TokenAuth:
    """ASGI middleware: 401 (HTTP) or close 4401 (WebSocket) without the token.

    Args:
        app: the wrapped application.
        token: the expected token; ``None`` lets everything through.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.token is None
            or scope["type"] not in ("http", "websocket")
            or not path.startswith(PROTECTED)
            or path in LATE_CHECK
            or token_matches(scope_token(scope), self.token)
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            response = error_response(401, "A valid gateway token is required: send "
                                           "'Authorization: Bearer TOKEN'.")
            response.headers["WWW-Authenticate"] = 'Bearer realm="pipeflow"'
            await response(scope, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4401,
                    "reason": "A valid gateway token is required."})
