"""Fixtures for tests that talk to a Realtime server: the local one, in-process.

Use them from a test module with ``from tests.realtime_fixtures import *``
(or name this module in ``pytest_plugins``):

- ``realtime_script``: ``TEST_SCRIPT``, a short deterministic script;
- ``realtime_server``: a running ``LocalRealtimeServer`` with that script and
  no pacing (``server.url``, ``server.base_url``, ``server.sessions``);
- ``start_realtime_server``: starts more servers with any options, all
  closed at teardown (``server = await start_realtime_server(faults=...)``).

The fixtures also clear ``OPENAI_API_KEY``, ``OAI_API_KEY`` and
``OAI_REALTIME_URL``, so no test reaches the real API by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pipeflow.realtime.script import Script, parse_script
from pipeflow.realtime.server import LocalRealtimeServer

__all__ = [
    "TEST_SCRIPT",
    "TEST_SCRIPT_YAML",
    "no_realtime_env",
    "realtime_script",
    "realtime_server",
    "start_realtime_server",
]

TEST_SCRIPT_YAML = """\
greeting: "Hello from the test server."
turns:
  - match: [weather]
    user: "What is the weather in Paris?"
    steps:
      - say: "Let me check."
      - call: get_weather
        arguments: {location: "Paris"}
      - say: "It is {result.temperature} degrees in {result.city}."
  - match: [order]
    user: "I would like to order."
    steps:
      - say: "Sure, what would you like?"
  - user: "Thanks, goodbye."
    steps:
      - say: "Goodbye!"
      - end: true
fallback:
  - say: "I did not catch that."
"""
"""The script of ``realtime_server`` (also for tests that build their own server)."""

TEST_SCRIPT: Script = parse_script(TEST_SCRIPT_YAML, "<test script>")

StartServer = Callable[..., Awaitable[LocalRealtimeServer]]


@pytest.fixture
def no_realtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the API key and URL variables for the test."""
    for var in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def realtime_script() -> Script:
    """The test script (greeting, a tool turn, a plain turn, an ending turn, fallback)."""
    return TEST_SCRIPT


@pytest.fixture
async def start_realtime_server(no_realtime_env: None) -> AsyncIterator[StartServer]:
    """Start local Realtime servers (``script`` defaults to the test script, ``speed`` to 0)."""
    servers: list[LocalRealtimeServer] = []

    async def start(**kwargs: Any) -> LocalRealtimeServer:
        kwargs.setdefault("script", TEST_SCRIPT)
        kwargs.setdefault("speed", 0)
        server = LocalRealtimeServer(**kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def realtime_server(start_realtime_server: StartServer) -> LocalRealtimeServer:
    """A running local Realtime server with the test script and no pacing."""
    return await start_realtime_server()
