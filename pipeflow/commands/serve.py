"""``pipeflow serve FILE``: the call gateway on uvicorn.

Phone systems (Twilio Media Streams), web pages (the page at ``/``) and any
HTTP client reach the pipeline's agent through it; each call id runs one
session of FILE. See docs/deployment.md, "Call gateway".
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeflow.errors import ConfigError

__all__ = ["build_server", "options_from_args", "register", "websocket_impl"]

WS_MAX_BYTES = 1_048_576
"""Largest WebSocket message accepted (a Twilio media message is about 300 bytes)."""
KEEP_ALIVE_S = 5
"""Seconds an idle keep-alive connection stays open."""


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    p = subparsers.add_parser(
        "serve", help="serve a pipeline to phones and browsers (HTTP, WebSocket, Twilio)",
        description="Run the call gateway: each call id gets one session of FILE.",
    )
    p.add_argument("file", help="pipeline YAML file every call runs")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (8080)")
    p.add_argument("--token", help="bearer token clients must send "
                                   "(default: $PIPEFLOW_GATEWAY_TOKEN; one is required)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without a token: local development on a loopback host only")
    p.add_argument("--allow-origin", dest="allowed_origins", action="append", default=[],
                   metavar="ORIGIN", help="another web origin (https://app.example.com) "
                   "whose pages may use the gateway; repeatable")
    p.add_argument("--max-calls", type=int, default=100, help="live calls at once (100)")
    p.add_argument("--max-connections", type=int, default=1000,
                   help="open connections at once; more get 503 (1000)")
    p.add_argument("--max-body-bytes", type=int, default=1_048_576,
                   help="largest request body (1 MiB)")
    p.add_argument("--idle-timeout", type=float, default=300.0,
                   help="end calls idle this many seconds (300)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="drop a request whose head or body stalls this many seconds (10)")
    p.add_argument("--public-url", help="https://host phone systems reach this gateway at")
    p.add_argument("--output", "-o", help="recordings folder (default: the file's output_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="STAGE.OPTION=VALUE", help="override a stage option; repeatable")
    p.set_defaults(func=cmd_serve)


def options_from_args(args: argparse.Namespace) -> Any:
    """``GatewayOptions`` from the command line.

    Raises:
        ConfigError: a value is out of range.
    """
    import msgspec

    from pipeflow.server.options import GatewayOptions

    data = {
        "host": args.host, "port": args.port, "token": args.token,
        "no_auth": args.no_auth, "allowed_origins": list(args.allowed_origins),
        "max_calls": args.max_calls, "max_connections": args.max_connections,
        "max_body_bytes": args.max_body_bytes,
        "idle_timeout_s": args.idle_timeout, "request_timeout_s": args.request_timeout,
        "public_url": args.public_url,
        "output_dir": args.output, "overrides": list(args.overrides),
    }
    try:
        return msgspec.convert(data, GatewayOptions)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"pipeflow serve: {exc}.") from None


def websocket_impl() -> str:
    """uvicorn's sans-I/O websockets implementation where this uvicorn has it."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"


def build_server(app: Any, options: Any, log_level: str = "info") -> Any:
    """The uvicorn server ``pipeflow serve`` runs: deadlines, bounds, quiet logs.

    A request head or body that stalls ``request_timeout_s`` is dropped,
    idle keep-alive connections close after ``KEEP_ALIVE_S``, at most
    ``max_connections`` connections are open (fewer where the descriptor
    limit is lower), tokens are redacted from uvicorn's logs and "too many
    open files" is logged once per ten seconds. On the way out the calls are
    ended (and recorded) before the connections are waited for.
    """
    import logging

    import uvicorn

    from pipeflow.server.deadlines import connection_limit, protocol_with_deadline
    from pipeflow.server.guard import RedactTokens, ThrottleResourceErrors

    limit = connection_limit(options.max_connections)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level=log_level,
                            ws=websocket_impl(), lifespan="on", ws_max_size=WS_MAX_BYTES,
                            timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=limit + 1,
                            http=protocol_with_deadline(options.request_timeout_s, limit),
                            timeout_graceful_shutdown=options.close_timeout_s + 5)

    class GatewayServer(uvicorn.Server):
        """Ends the calls before waiting for connections: an event stream lasts
        as long as its call, so uvicorn alone would wait on it forever."""

        async def shutdown(self, sockets: Any = None) -> None:
            for listener in self.servers:  # no new calls while the live ones end
                listener.close()
            await app.state.calls.end_all("shutdown")
            await super().shutdown(sockets)

    # uvicorn configured its loggers in Config(): tokens sent as ?token= stay out of them
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    throttle = ThrottleResourceErrors()
    for name in ("asyncio", "uvicorn.error", "pipeflow.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ThrottleResourceErrors) for f in logger.filters):
            logger.addFilter(throttle)
    return GatewayServer(config)


async def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; live calls are ended (and recorded) on the way out."""
    from pipeflow.asr.process import decode_in_processes
    from pipeflow.server import create_app

    options = options_from_args(args)
    # Every call's decoding (its end_of_turn recogniser too) runs in child processes:
    # pocketsphinx holds the GIL while it decodes, and in a thread of this process it
    # held the event loop every call shares for seconds (the soak's model handshake
    # that timed out; /healthz waited up to 5.5 s with 8 calls).
    decode_in_processes()
    app = create_app(args.file, options)
    await build_server(app, options).serve()
    return 0
