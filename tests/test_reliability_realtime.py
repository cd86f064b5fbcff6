"""The local Realtime server against hostile clients: long texts, deep JSON, aborted
uploads, no key. Each test reproduces what a probe of the server found."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from pipeflow.audio import tts
from pipeflow.cli import main
from pipeflow.realtime.server import LocalRealtimeServer
from pipeflow.realtime.server_config import MAX_INSTRUCTIONS_CHARS, MAX_SPOKEN_CHARS
from pipeflow.realtime.server_session import ServerOptions


async def next_event(ws: Any, kind: str | None = None) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await ws.recv())
            if kind is None or event["type"] == kind:
                return event


async def test_a_120_kb_say_is_refused_at_once_and_kept_nowhere() -> None:
    tts.speech_cache.clear()
    async with (LocalRealtimeServer(speed=0, options=ServerOptions(speech="tones")) as server,
                connect(server.url, max_size=None) as ws):
        await next_event(ws, "session.created")
        began = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create", "response": {
            "metadata": {"say": "hello there friend. " * 6000}}}))
        error = (await next_event(ws))["error"]
        took = time.perf_counter() - began
        assert error["code"] == "string_above_max_length"
        assert error["param"] == "response.metadata.say"
        assert str(MAX_SPOKEN_CHARS) in error["message"]
        assert took < 1.0
        # a text at the limit is still spoken, and the session goes on
        await ws.send(json.dumps({"type": "response.create", "response": {
            "metadata": {"say": "word " * (MAX_SPOKEN_CHARS // 5)}}}))
        done = await next_event(ws, "response.done")
        assert done["response"]["status"] == "completed"
    assert tts.speech_cache.bytes <= tts.speech_cache.max_bytes


async def test_speaking_a_2000_character_reply_does_not_hold_the_event_loop() -> None:
    """espeak-ng synthesises a reply not in the cache in the server's speech thread:
    the loop every connection shares keeps ticking (on the loop, it stood still for
    the whole synthesis, some 0.2 s here)."""
    from tests.speech import need_tts

    need_tts()
    words = ["pizza", "salad", "ice", "cream", "twelve", "main", "street", "springfield",
             "one", "two", "three"]
    text = " ".join(words[(i * 7) % len(words)] for i in range(400))[:MAX_SPOKEN_CHARS]
    text = f"{time.time_ns()} {text}"[:MAX_SPOKEN_CHARS]  # never in the cache
    lags: list[float] = []
    ticking = True

    async def tick() -> None:
        while ticking:
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - began - 0.005)

    async with (LocalRealtimeServer(speed=0, first_audio_delay_ms=0) as server,
                connect(server.url, max_size=None) as ws):
        await next_event(ws, "session.created")
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.05)
        lags.clear()
        began = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"metadata": {"say": text}}}))
        delta = await next_event(ws, "response.output_audio.delta")
        synthesis_s = time.perf_counter() - began
        lag_s = max(lags)
        ticking = False
        await ticker
        assert delta["delta"]
        done = await next_event(ws, "response.done")
        assert done["response"]["status"] == "completed"
    assert len(text) == MAX_SPOKEN_CHARS
    # The loop's longest stall is a small part of the synthesis it waited for
    # (on the loop the two were the same).
    assert lag_s < max(0.05, synthesis_s / 3), (lag_s, synthesis_s)


async def test_long_instructions_are_refused() -> None:
    async with (LocalRealtimeServer(speed=0, options=ServerOptions(speech="tones")) as server,
                connect(server.url, max_size=None) as ws):
        await next_event(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "instructions": "x" * (MAX_INSTRUCTIONS_CHARS + 1)}}))
        error = (await next_event(ws))["error"]
        assert error["code"] == "string_above_max_length"
        assert error["param"] == "session.instructions"


def test_the_speech_cache_is_bounded_by_bytes() -> None:
    cache = tts.SpeechCache(max_bytes=8000)
    made: list[int] = []

    def make(n: int) -> bytes:
        made.append(n)
        return b"\0" * n

    for i in range(50):
        cache.get(("text", i), lambda: make(900))
    assert cache.bytes <= 8000 and len(cache) == 8
    assert cache.get(("text", 49), lambda: make(900)) == b"\0" * 900
    assert len(made) == 50  # the newest entry was kept
    cache.get("huge", lambda: make(5000))  # over an eighth: made, not kept
    assert "huge" not in cache._entries and cache.bytes <= 8000


async def test_deeply_nested_json_is_an_error_event_not_a_drop(caplog) -> None:
    deep = '{"type":"session.update","session":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    caplog.set_level(logging.INFO)
    async with (LocalRealtimeServer(speed=0, options=ServerOptions(speech="tones")) as server,
                connect(server.url, max_size=None) as ws):
        await next_event(ws, "session.created")
        await ws.send(deep)
        error = (await next_event(ws))["error"]
        assert error["code"] == "invalid_json" and "too deeply" in error["message"]
        await ws.send(json.dumps({"type": "response.create"}))  # still open, still served
        assert (await next_event(ws, "response.done"))["response"]["status"] == "completed"
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


async def test_an_upload_aborted_mid_message_logs_at_most_one_line(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeflow")
    caplog.set_level(logging.INFO, logger="websockets")
    async with LocalRealtimeServer(speed=0, options=ServerOptions(speech="tones")) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        # a text frame announcing 1 MB, cut after 300 KB
        writer.write(bytes([0x81, 0xFF]) + struct.pack("!Q", 1_000_000) + os.urandom(4)
                     + b"a" * 300_000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        await asyncio.sleep(0.3)
        caplog.clear()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_standalone_server_needs_a_key(capsys, monkeypatch) -> None:
    monkeypatch.delenv("PIPEFLOW_REALTIME_KEY", raising=False)
    assert main(["realtime-server", "--port", "0"]) == 2
    assert "needs a key" in capsys.readouterr().err.replace("\n", " ")
    assert main(["realtime-server", "--port", "0", "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "only for a loopback host" in capsys.readouterr().err.replace("\n", " ")


def test_no_auth_serves_on_loopback(monkeypatch) -> None:
    import argparse

    from pipeflow.commands.realtime_server import _check

    monkeypatch.delenv("PIPEFLOW_REALTIME_KEY", raising=False)
    base = {"port": 0, "speed": None, "first_audio_delay_ms": None, "key": None}
    _check(argparse.Namespace(host="127.0.0.1", no_auth=True, **base))
    _check(argparse.Namespace(host="0.0.0.0", no_auth=False, **{**base, "key": "k"}))
    monkeypatch.setenv("PIPEFLOW_REALTIME_KEY", "from-env")
    _check(argparse.Namespace(host="0.0.0.0", no_auth=False, **base))


@pytest.mark.parametrize("script", [None])
async def test_the_embedded_server_needs_no_configuration(script) -> None:
    """What the realtime stage starts offline: no key asked, served at once."""
    async with LocalRealtimeServer(script, speed=0, options=ServerOptions(speech="tones")) as s:
        assert s.api_key is None
        async with connect(s.url) as ws:
            assert (await next_event(ws))["type"] == "session.created"
