"""``pipeflow realtime-server``: the local, offline Realtime API stand-in.

Point any Realtime client at it: ``OAI_REALTIME_URL`` for pipeflow, or
``websocket_base_url`` for the openai SDK. It plays a YAML script (see
docs/realtime.md) and speaks with espeak-ng. The same port serves the
cascade's HTTP endpoints (docs/cascade.md): point the ``stt``, ``llm`` and
``tts`` stages' ``base_url``, or the SDK's, at ``http://HOST:PORT/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from pipeflow.errors import ConfigError

__all__ = ["cmd_realtime_server", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``realtime-server`` command."""
    p = subparsers.add_parser(
        "realtime-server",
        help="run the local, scripted OpenAI Realtime API stand-in",
        description="Serve the OpenAI Realtime WebSocket protocol (GA and beta) at "
                    "ws://HOST:PORT/v1/realtime, answering from a YAML script.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (8765; 0 picks a free one)")
    p.add_argument("--script", help="YAML script to play (default: the built-in one)")
    p.add_argument("--first-audio-delay-ms", type=int, metavar="MS",
                   help="delay before each response's first audio (default: the script's)")
    p.add_argument("--speed", type=float,
                   help="audio pacing: 1 real time, 2 twice as fast, 0 no pacing "
                        "(default: the script's)")
    p.add_argument("--key", help="API key clients must send as 'Authorization: Bearer KEY' "
                                 "(default: $PIPEFLOW_REALTIME_KEY; one is required)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without a key: local development on a loopback host only")
    p.add_argument("--speech", choices=("espeak", "tones"), default="espeak",
                   help="reply voice: espeak-ng speech (default) or one tone per word")
    p.set_defaults(func=cmd_realtime_server)


def _check(args: argparse.Namespace) -> None:
    from pipeflow.server.options import is_loopback

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"pipeflow realtime-server: --port must be 0 to 65535, got {args.port}.")
    if args.speed is not None and args.speed < 0:
        raise ConfigError(f"pipeflow realtime-server: --speed must be 0 or more, got {args.speed}.")
    if args.first_audio_delay_ms is not None and args.first_audio_delay_ms < 0:
        raise ConfigError("pipeflow realtime-server: --first-audio-delay-ms must be 0 or more, "
                          f"got {args.first_audio_delay_ms}.")
    if _key(args) is None:
        if not args.no_auth:
            raise ConfigError("pipeflow realtime-server needs a key: pass --key or set "
                              "PIPEFLOW_REALTIME_KEY (or --no-auth for local development on "
                              "127.0.0.1).")
        if not is_loopback(args.host):
            raise ConfigError(f"pipeflow realtime-server: --no-auth is only for a loopback host "
                              f"(127.0.0.1, ::1, localhost); host {args.host!r} is reachable "
                              "from other machines: give a key.")


def _key(args: argparse.Namespace) -> str | None:
    return args.key or os.environ.get("PIPEFLOW_REALTIME_KEY") or None


async def cmd_realtime_server(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM).

    Raises:
        ConfigError: a bad option or script.
        LocalError: the port cannot be bound.
    """
    from pipeflow.realtime.server import LocalRealtimeServer
    from pipeflow.realtime.server_session import ServerOptions

    _check(args)
    key = _key(args)
    server = LocalRealtimeServer(
        args.script, host=args.host, port=args.port,
        first_audio_delay_ms=args.first_audio_delay_ms, speed=args.speed, api_key=key,
        options=ServerOptions(speech=args.speech), decode_in_process=True,
    )
    await server.start()
    script = server.script.source or "the built-in script"
    sys.stdout.write(
        f"local Realtime server on {server.url} (script: {script}"
        f"{', key required' if key else ''})\n"
        f"  pipeflow:   OAI_REALTIME_URL={server.url}\n"
        f"  openai SDK: AsyncOpenAI(websocket_base_url={server.base_url!r}, api_key=...)\n"
        f"  cascade:    base_url: {server.http_base_url} (chat completions, audio "
        "transcriptions and speech on the same port)\n"
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0
