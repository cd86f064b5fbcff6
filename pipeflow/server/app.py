"""The gateway application: routes, error handling, authentication, lifespan.

``create_app("pipelines/call.yaml", GatewayOptions(...))`` gives a Starlette
app to serve with uvicorn (``pipeflow serve`` does) or to drive from tests.
Calls live in ``app.state.calls`` (a ``CallRegistry``); its idle reaper runs
while the app does, and every live call is ended when the app stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pipeflow.errors import ConfigError, LocalError, PipeflowError
from pipeflow.server import api, twilio, ws
from pipeflow.server.auth import TokenAuth
from pipeflow.server.calls import CallError, CallRegistry
from pipeflow.server.deadlines import BodyDeadline
from pipeflow.server.guard import BrowserGuard
from pipeflow.server.openapi import openapi_document
from pipeflow.server.options import GatewayOptions

__all__ = ["create_app"]

log = logging.getLogger("pipeflow.server")

STATIC = Path(__file__).with_name("static")


def create_app(
    pipeline_path: str | Path,
    options: GatewayOptions | None = None,
    registry: CallRegistry | None = None,
) -> Starlette:
    """Build the call gateway for one pipeline file.

    Args:
        pipeline_path: the pipeline every call runs (its source becomes a push source).
        options: limits, token, folders; defaults when omitted.
        registry: a prepared registry (tests pass one with a fake clock).

    Returns:
        The Starlette application.

    Raises:
        ConfigError: the pipeline file is invalid (checked now, not at the first
            call); no token and no ``no_auth``, or ``no_auth`` off loopback.
    """
    options = options or GatewayOptions()
    options.check_auth()
    calls = registry or CallRegistry(pipeline_path, options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await calls.open()
        try:
            yield
        finally:
            await calls.close()

    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(BodyDeadline, timeout_s=options.request_timeout_s),
            Middleware(BrowserGuard, allowed_origins=options.allowed_origins,
                       public_url=options.public_url,
                       loopback_only=options.auth_token() is None),
            Middleware(TokenAuth, token=options.auth_token()),
        ],
        exception_handlers={
            ClientDisconnect: _client_gone,
            PipeflowError: _pipeflow_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.calls = calls
    app.state.options = options
    return app


def _routes() -> list[BaseRoute]:
    return [
        Route("/", page, methods=["GET"]),
        Route("/static/app.js", script, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        *api.routes(),
        *ws.routes(),
        *twilio.routes(),
        Route("/api/calls/{call_id}/stream", upgrade_required, methods=["GET"]),
        Route("/twilio/media", upgrade_required, methods=["GET"]),
    ]


async def page(request: Request) -> Response:
    """GET /: the browser page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def script(request: Request) -> Response:
    """GET /static/app.js: the page's script."""
    return FileResponse(STATIC / "app.js", media_type="text/javascript")


async def openapi(request: Request) -> Response:
    """GET /openapi.json: the API description."""
    return JSONResponse(openapi_document())


async def health(request: Request) -> Response:
    """GET /healthz: the gateway is up; how many calls are live."""
    calls: CallRegistry = request.app.state.calls
    return JSONResponse({"status": "ok", "live": calls.live_count,
                         "max_calls": calls.options.max_calls})


async def upgrade_required(request: Request) -> Response:
    """A plain HTTP request to a WebSocket path."""
    response = api.error_response(426, "This path speaks WebSocket only: connect with a "
                                        "WebSocket client.")
    response.headers["Upgrade"] = "websocket"
    return response


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client stopped sending (aborted or stalled mid-body): one line, no traceback."""
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    log.warning("%s went away during %s %s (request body incomplete)", client, request.method,
             request.url.path)
    response = api.error_response(400, "The request body did not arrive in full.")
    response.headers["Connection"] = "close"  # the rest of that body never comes
    return response


async def _pipeflow_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, CallError):
        return api.error_response(exc.status, str(exc), exc.retry_after)
    if isinstance(exc, ConfigError):
        return api.error_response(400, str(exc))
    if isinstance(exc, LocalError):
        return api.error_response(409, str(exc))
    return api.error_response(502, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "There is nothing at this path.",
                405: f"Method {request.method} is not allowed here."}
    response = api.error_response(exc.status_code,
                                  messages.get(exc.status_code, str(exc.detail)))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return api.error_response(500, f"Internal error: {type(exc).__name__}.")
