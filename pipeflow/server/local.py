"""One local Realtime server for every call of a gateway, instead of one per call.

Offline (no ``url``, no ``OAI_REALTIME_URL``, no API key) a ``realtime`` stage
starts its own ``LocalRealtimeServer``: it parses the script YAML, builds a
speaker and binds a port, some 70 ms of event-loop time on every call start,
which every other call's requests wait behind (50 calls starting at once
took 1.5 s each). The gateway starts one server per distinct script and
pacing when it starts, and points each call's stage at it. Every connection
is still its own ``ServerSession`` on that server, so calls stay apart; a
session is forgotten once its connection closes, so a gateway that runs for
days does not keep every call's events. A script's transcriber decodes in
child processes (``pipeflow.asr.process``): one caller's long turn must not
hold the event loop every call and ``/healthz`` share. Each server requires
a key made when it starts, which only the gateway's calls are given: another
local process cannot use it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from pipeflow.realtime.options import RealtimeOptions, resolve_url
from pipeflow.realtime.server import LocalRealtimeServer

__all__ = ["SharedModelServers", "local_server_key"]

log = logging.getLogger("pipeflow.server")

ServerKey = tuple[str | None, int, float]


def local_server_key(options: Any) -> ServerKey | None:
    """What a stage's local server depends on, or None when the stage needs none.

    None for anything but ``RealtimeOptions``, and for a stage that connects
    to a URL or, with an API key, to the OpenAI API.
    """
    if not isinstance(options, RealtimeOptions) or resolve_url(options) is not None:
        return None
    return (options.script, options.first_audio_delay_ms, options.speed)


class SharedModelServers:
    """The local Realtime servers of one gateway, started once, shared by every call."""

    def __init__(self) -> None:
        self._servers: dict[ServerKey, LocalRealtimeServer] = {}
        self._lock = asyncio.Lock()

    @property
    def servers(self) -> list[LocalRealtimeServer]:
        """The servers running now."""
        return list(self._servers.values())

    async def open(self, keys: set[ServerKey]) -> None:
        """Start a server for each key that has none yet.

        Raises:
            ConfigError: a script file is missing or invalid.
            LocalError: no port can be bound.
        """
        async with self._lock:
            for key in sorted(keys - self._servers.keys(), key=repr):
                script, delay_ms, speed = key
                server = LocalRealtimeServer(script=script, port=0, speed=speed,
                                             first_audio_delay_ms=delay_ms, keep_sessions=False,
                                             decode_in_process=True,
                                             api_key=secrets.token_urlsafe(24))
                await server.start()
                self._servers[key] = server
                log.info("calls share the local Realtime server at %s", server.url)

    def url_for(self, options: Any) -> tuple[str, str] | None:
        """The shared server's URL and key for a stage with these options; None when it
        needs none.

        Given to the builder (``Changes.model_url``), so each call's realtime
        stage is built pointing at its server.

        Raises:
            KeyError: ``open`` was not called for the stage's key.
        """
        key = local_server_key(options)
        if key is None:
            return None
        server = self._servers[key]
        return str(server.url), str(server.api_key)

    async def close(self) -> None:
        """Stop every server (the gateway is stopping)."""
        async with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(server.close() for server in servers), return_exceptions=True)
