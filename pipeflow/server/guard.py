"""What keeps other web pages and forged requests out of the gateway.

A browser lets any page send simple cross-site requests (``text/plain`` or
form POSTs, WebSockets) to any address, the gateway on 127.0.0.1 included.
``BrowserGuard`` refuses what only such a page would send: a foreign
``Origin`` on a WebSocket or a POST, a CORS-safelisted content type on an
API POST (the gateway's bodies are JSON or raw audio), and, without a token,
a Host that is not a loopback name (a DNS-rebound page). Clients that are not
browsers send no ``Origin`` and pass. ``RedactTokens`` keeps ``token=``
query values out of uvicorn's logs. ``twilio_signature`` is Twilio's webhook
signature (X-Twilio-Signature).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeflow.server.api import error_response
from pipeflow.server.options import is_loopback

__all__ = ["BrowserGuard", "RedactTokens", "ThrottleResourceErrors", "twilio_signature"]

SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
"""Content types a page may POST cross-site without asking first (no CORS preflight)."""
FORM_PATHS = ("/twilio/voice",)
"""POSTs that are forms by protocol (Twilio's webhook), checked by signature or token."""
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host: str) -> str:
    """``host`` without its port (``[::1]:8080`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class BrowserGuard:
    """ASGI middleware: 403/415 (HTTP) or close 4403 (WebSocket) for cross-site requests.

    Args:
        app: the wrapped application.
        allowed_origins: origins besides the gateway's own that may connect.
        public_url: the gateway's public base URL; its origin is the gateway's own.
        loopback_only: no token is configured, so only a loopback Host is served.
    """

    def __init__(self, app: ASGIApp, allowed_origins: list[str], public_url: str | None,
                 loopback_only: bool) -> None:
        self.app = app
        self.allowed = {origin.lower() for origin in allowed_origins}
        if public_url:
            parts = urlsplit(public_url)
            self.allowed.add(f"{parts.scheme}://{parts.netloc}".lower())
        self.loopback_only = loopback_only

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Why this request is refused (status, sentence), or None when it may pass."""
        host = _header(scope, b"host") or ""
        if self.loopback_only and host and not is_loopback(_host_name(host)):
            return 403, (f"This gateway runs without a token and serves loopback only; "
                         f"Host {host!r} is not a loopback name.")
        method = scope.get("method", "GET")
        if scope["type"] == "http" and method in _SAFE_METHODS:
            return None
        origin = _header(scope, b"origin")
        if origin is not None:
            netloc = urlsplit(origin).netloc.lower()
            if origin.lower() not in self.allowed and (not netloc or netloc != host.lower()):
                return 403, (f"Origin {origin!r} may not use this gateway: only its own "
                             "pages and the configured allowed origins may.")
        if scope["type"] == "http" and scope.get("path", "") not in FORM_PATHS:
            kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if kind in SIMPLE_TYPES:
                return 415, (f"Content-Type {kind} is not accepted: send application/json "
                             "or application/octet-stream (raw audio).")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (why := self.refusal(scope)) is None:
            await self.app(scope, receive, send)
            return
        status, message = why
        if scope["type"] == "http":
            await error_response(status, message)(scope, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000 + status, "reason": message})


_TOKEN_QUERY = re.compile(r"((?:^|[?&])token=)[^&\s\"]*")


def redact(text: str) -> str:
    """``text`` with every ``token=`` query value replaced by ``***``."""
    return _TOKEN_QUERY.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """A log filter replacing ``token=`` query values in a record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the full URL followed by
    every POST parameter's name and value, sorted by name, keyed with the
    account's auth token."""
    data = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


_RESOURCE_MESSAGES = ("out of system resource", "_start_serving", "Too many open files")


class ThrottleResourceErrors(logging.Filter):
    """One line per ``interval_s`` for "too many open files", not a traceback per try.

    asyncio's accept loop logs every failed ``accept()`` with its traceback,
    once per backlog slot and second, and the retries it schedules log again:
    a gateway out of file descriptors wrote 284 MB of them. This filter lets
    one record through per interval, without the traceback, saying how many
    were left out; other records pass untouched.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if not (any(m in text for m in _RESOURCE_MESSAGES)
                or (isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE))):
            return True
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        held, self._held, self._next = self._held, 0, now + self.interval_s
        record.msg = ("too many open files: new connections wait until some close "
                      "(%d more such errors in the last %g s; raise 'ulimit -n' or lower "
                      "--max-connections)")
        record.args = (held, self.interval_s)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
