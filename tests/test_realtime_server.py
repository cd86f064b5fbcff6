"""The local Realtime server over real sockets: URL, auth, shapes, pacing, faults, CLI.

The fault tests pair the server's fault switches with pipeflow's own
``RealtimeClient``: a close in the middle of a response, a dropped TCP
connection, an ``error`` event, refused connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from pipeflow.cli import main
from pipeflow.errors import RemoteError
from pipeflow.realtime import events as ev
from pipeflow.realtime.client import RealtimeClient, Reconnected
from pipeflow.realtime.options import EventNames, RealtimeOptions, ReconnectOptions
from pipeflow.realtime.script import parse_script
from pipeflow.realtime.server import LocalRealtimeServer
from pipeflow.realtime.server_faults import Faults
from pipeflow.realtime.server_session import ServerOptions
from pipeflow.realtime.wslog import redacting_logger
from tests.realtime_fixtures import *  # noqa: F403
from tests.realtime_fixtures import StartServer

ROOT = Path(__file__).resolve().parent.parent
TONES = ServerOptions(speech="tones")


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def until(ws: ClientConnection, name: str) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``name``."""
    out = []
    while not out or out[-1]["type"] != name:
        out.append(await recv(ws))
    return out


def client_options(url: str, **kwargs: Any) -> RealtimeOptions:
    kwargs.setdefault("reconnect", ReconnectOptions(attempts=2, backoff_s=0))
    return RealtimeOptions(url=url, connect_timeout_s=5, **kwargs)


async def collect_until_done(client: RealtimeClient) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(10):
        async for event in client.events():
            out.append(event)
            if isinstance(event, ev.ResponseDone):
                return out
    return out


async def test_serves_the_realtime_path_only(realtime_server: LocalRealtimeServer) -> None:
    assert realtime_server.url.endswith("/v1/realtime") and realtime_server.port > 0
    async with connect(realtime_server.url + "?model=gpt-realtime-mini") as ws:
        created = await recv(ws)
    assert created["type"] == "session.created"
    assert created["session"]["model"] == "gpt-realtime-mini"
    base = realtime_server.url.removesuffix("/v1/realtime")
    with pytest.raises(InvalidStatus) as info:
        async with connect(base + "/v1/other"):
            pass
    assert info.value.response.status_code == 404
    assert b"/v1/realtime" in info.value.response.body


async def test_a_configured_key_is_required(start_realtime_server: StartServer) -> None:
    server = await start_realtime_server(api_key="sk-local")
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401
        assert b"invalid_api_key" in info.value.response.body
    async with connect(server.url, additional_headers={"Authorization": "Bearer sk-local"}) as ws:
        assert (await recv(ws))["type"] == "session.created"
    assert server.refused == 2 and len(server.sessions) == 1


async def test_the_key_and_audio_never_reach_any_debug_log(
    start_realtime_server: StartServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every logger at debug: websockets logs handshake headers and frames too.
    server = await start_realtime_server(api_key="sk-test-secret", options=TONES)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    caplog.set_level(logging.DEBUG)
    pcm = bytes(range(256)) * 8
    async with RealtimeClient(client_options(server.url, log_events=True)) as client:
        client.protocol.append_audio(pcm)
        client.protocol.create_text_item("What is the weather?")
        client.protocol.create_response()
        await client.flush()
        events = await collect_until_done(client)
    assert any(isinstance(e, ev.OutputAudioDelta) and e.delta for e in events)
    audio_b64 = base64.b64encode(pcm).decode()
    model_b64 = base64.b64encode(next(e.delta for e in events
                                      if isinstance(e, ev.OutputAudioDelta))).decode()
    assert "> Authorization: ***" in caplog.text  # websockets.client logged the header...
    assert "< Authorization: ***" in caplog.text  # ...and so did websockets.server
    assert "sk-test-secret" not in caplog.text
    assert audio_b64[:16] not in caplog.text and model_b64[:16] not in caplog.text
    assert "input_audio_buffer.append" in caplog.text and "base64 chars>" in caplog.text


def test_redacting_logger_hides_key_subprotocols_and_binary_payloads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pf.test.ws")
    logger = redacting_logger("pf.test.ws")
    logger.debug("> %s: %s", "Sec-WebSocket-Protocol",
                 "realtime, openai-insecure-api-key.sk-abc, openai-beta.realtime-v1")
    logger.debug("> %s: %s", "Cookie", "session=sk-abc")
    logger.debug("> %s: %s", "Host", "127.0.0.1")
    logger.debug("< %s", Frame(Opcode.BINARY, b"sk-abc" * 10))
    logger.debug("< %s", Frame(Opcode.PING, b"hb"))
    assert "sk-abc" not in caplog.text
    assert "openai-insecure-api-key.***" in caplog.text and "openai-beta.realtime-v1" in caplog.text
    assert "Host: 127.0.0.1" in caplog.text and "PING" in caplog.text
    assert "BINARY <payload not shown> [60 bytes]" in caplog.text


@pytest.mark.parametrize(("suffix", "headers"), [("?shape=beta", {}),
                                                 ("", {"OpenAI-Beta": "realtime=v1"})])
async def test_beta_shape_by_query_or_header(
    realtime_server: LocalRealtimeServer, suffix: str, headers: dict[str, str]
) -> None:
    async with connect(realtime_server.url + suffix, additional_headers=headers) as ws:
        created = await recv(ws)
        assert created["session"]["input_audio_format"] == "pcm16"
        await ws.send(json.dumps({"type": "response.create"}))
        names = [e["type"] for e in await until(ws, "response.done")]
    assert "response.audio_transcript.delta" in names and "response.audio.delta" in names


async def test_audio_is_paced_over_the_socket(start_realtime_server: StartServer) -> None:
    script = parse_script("greeting: Hi there.\n")
    server = await start_realtime_server(script=script, speed=1.0, first_audio_delay_ms=100,
                                         options=TONES)
    loop = asyncio.get_running_loop()
    async with connect(server.url) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "response.create"}))
        times: dict[str, list[float]] = {}
        await until_timed(ws, "response.done", loop, times)
    created = times["response.created"][0]
    deltas = times["response.output_audio.delta"]
    audio_s = (len(deltas) - 1) * 0.04
    assert deltas[0] - created >= 0.095  # the first-audio delay
    assert deltas[-1] - deltas[0] == pytest.approx(audio_s, abs=0.08)  # real-time pacing


async def until_timed(ws: ClientConnection, name: str, loop: asyncio.AbstractEventLoop,
                      times: dict[str, list[float]]) -> list[dict[str, Any]]:
    out = []
    while not out or out[-1]["type"] != name:
        out.append(await recv(ws))
        times.setdefault(out[-1]["type"], []).append(loop.time())
    return out


async def test_close_mid_response_makes_the_client_reconnect_to_a_healthy_session(
    start_realtime_server: StartServer,
) -> None:
    server = await start_realtime_server(faults=Faults(close_after_deltas=3), options=TONES)
    async with RealtimeClient(client_options(server.url)) as client:
        client.protocol.create_response()
        await client.flush()
        seen: list[Any] = []
        async with asyncio.timeout(10):
            async for event in client.events():
                seen.append(event)
                if isinstance(event, Reconnected):
                    break
        assert sum(isinstance(e, ev.OutputAudioDelta) for e in seen) == 3
        assert not any(isinstance(e, ev.ResponseDone) for e in seen)
        assert "code 1011" in seen[-1].reason
        client.protocol.create_response()  # the new session answers in full
        await client.flush()
        after = await collect_until_done(client)
    assert after[-1].response.status == "completed"
    assert len(server.sessions) == 2 and server.sessions[0].close is not None


async def test_a_dropped_connection_with_no_close_frame_is_seen_as_lost(
    start_realtime_server: StartServer,
) -> None:
    server = await start_realtime_server(faults=Faults(close_after_deltas=1, abort=True),
                                         options=TONES)
    opts = client_options(server.url, reconnect=ReconnectOptions(attempts=0))
    async with RealtimeClient(opts) as client:
        client.protocol.create_response()
        await client.flush()
        with pytest.raises(RemoteError, match="without a close frame"):
            await collect_until_done(client)


async def test_an_error_event_mid_response_keeps_the_connection(
    start_realtime_server: StartServer,
) -> None:
    faults = Faults(error_after_deltas=2, error_code="overloaded", error_message="Too busy.")
    server = await start_realtime_server(faults=faults, options=TONES)
    async with RealtimeClient(client_options(server.url)) as client:
        client.protocol.create_response()
        await client.flush()
        events = await collect_until_done(client)
    errors = [e for e in events if isinstance(e, ev.ErrorEvent)]
    assert [(e.error.code, e.error.message, e.error.type) for e in errors] == [
        ("overloaded", "Too busy.", "server_error")]
    assert events[-1].response.status == "completed"
    assert not any(isinstance(e, Reconnected) for e in events) and len(server.sessions) == 1


async def test_refused_connections_then_a_healthy_one(start_realtime_server: StartServer) -> None:
    server = await start_realtime_server(faults=Faults(refuse_connections=1))
    client = RealtimeClient(client_options(server.url))
    with pytest.raises(RemoteError, match="HTTP 503"):
        await client.connect()
    await client.connect()
    await client.close()
    assert server.refused == 1 and len(server.sessions) == 1


async def test_malformed_events_get_error_events_not_a_dropped_connection(
    realtime_server: LocalRealtimeServer,
) -> None:
    async with connect(realtime_server.url) as ws:
        await recv(ws)
        await ws.send("{not json")
        await ws.send(json.dumps({"type": "conversation.frobnicate", "event_id": "x1"}))
        first, second = await recv(ws), await recv(ws)
        assert (first["error"]["code"], second["error"]["code"]) == ("invalid_json",
                                                                     "invalid_value")
        assert second["error"]["event_id"] == "x1"
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await until(ws, "response.done"))[-1]["response"]["status"] == "completed"


async def test_a_client_that_does_not_read_does_not_hold_up_others(
    start_realtime_server: StartServer,
) -> None:
    long_text = " ".join(["word"] * 400)
    server = await start_realtime_server(script=parse_script(f"greeting: {long_text}\n"),
                                         options=TONES)
    server.close_timeout = 0.2
    async with connect(server.url, max_queue=1, close_timeout=0.2) as stuck:
        await stuck.send(json.dumps({"type": "response.create"}))  # ~2 min of audio, unread
        async with connect(server.url) as other:
            await recv(other)
            await other.send(json.dumps({"type": "response.create"}))
            async with asyncio.timeout(5):
                done = (await until(other, "response.done"))[-1]
            assert done["response"]["status"] == "completed"
        async with asyncio.timeout(5):
            await server.close()


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["realtime-server", "--speed", "-1"]) == 2
    assert "--speed must be 0 or more" in capsys.readouterr().err.replace("\n", "")
    assert main(["realtime-server", "--script", "missing.yaml"]) == 2


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "realtime-server", "--port", "0", "--key", "k1",
         "--script", str(ROOT / "pipelines" / "scripts" / "demo.yaml"), "--speech", "tones"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "demo.yaml" in line and "key required" in line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]

        async def talk() -> dict[str, Any]:
            async with connect(url, additional_headers={"Authorization": "Bearer k1"}) as ws:
                return await recv(ws)

        assert asyncio.run(talk())["type"] == "session.created"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_shared_server_forgets_closed_sessions() -> None:
    """keep_sessions=False (the call gateway's server): closed connections leave nothing."""
    async with LocalRealtimeServer(speed=0, keep_sessions=False) as server:
        ids = []
        for _ in range(2):
            async with connect(server.url) as ws:
                created = json.loads(await ws.recv())
                ids.append(created["session"]["id"])
                assert len(server.sessions) == 1
            for _ in range(100):  # the server sees the close a moment later
                if not server.sessions:
                    break
                await asyncio.sleep(0.01)
            assert server.sessions == []
        assert ids[0] != ids[1]  # numbers stay unique though sessions were dropped


class _SlowTranscriber:
    """Blocks like a real decoder; notes which thread it ran on."""

    def __init__(self, words: str, seconds: float) -> None:
        self.words, self.seconds = words, seconds
        self.threads: list[str] = []

    def transcribe(self, pcm: bytes, sample_rate: int = 24000, *,
                   expect: str | None = None) -> str:
        import threading
        import time

        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        return self.words


async def test_transcription_runs_off_the_event_loop_and_keeps_event_order() -> None:
    script = parse_script(
        "turns:\n  - match: [pizza]\n    steps: [{say: Pizza it is.}]\n"
        "  - match: [salad]\n    steps: [{say: Salad it is.}]\n", "shop.yaml")
    slow = _SlowTranscriber("one salad please", 0.4)
    async with (
        LocalRealtimeServer(script, speed=0, transcriber=slow) as server,
        connect(server.url) as ws,
        connect(server.url) as other,
    ):
        await recv(ws)
        await recv(other)
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
        pcm = base64.b64encode(bytes(4800)).decode()
        for event in ({"type": "input_audio_buffer.append", "audio": pcm},
                      {"type": "input_audio_buffer.commit"}, {"type": "response.create"}):
            await ws.send(json.dumps(event))
        await asyncio.sleep(0.1)  # the decode is under way
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await other.send(json.dumps({"type": "input_audio_buffer.clear"}))
        cleared = await recv(other)
        # The other connection is answered while the first one's audio is decoded.
        assert cleared["type"] == "input_audio_buffer.cleared"
        assert loop.time() - asked < 0.2
        kinds, said = [], ""
        while not said:
            event = await recv(ws)
            kinds.append(event["type"])
            if event["type"] == "response.output_audio_transcript.done":
                said = event["transcript"]
    assert slow.threads and all(name != "MainThread" for name in slow.threads)
    assert said == "Salad it is."  # chosen by the words heard, not the script's order
    transcribed = kinds.index("conversation.item.input_audio_transcription.completed")
    assert kinds.index("input_audio_buffer.committed") < transcribed < kinds.index(
        "response.created")


async def test_the_transport_sends_user_text_as_input_text_append_when_told(
    realtime_server: LocalRealtimeServer,
) -> None:
    options = client_options(realtime_server.url, events=EventNames(text="input_text.append"))
    async with RealtimeClient(options) as client:
        client.protocol.create_text_item("I would like to order.")
        client.protocol.create_response()
        await client.flush()
        events = await collect_until_done(client)
    assert not [e for e in events if isinstance(e, ev.ErrorEvent)]
    added = [e.item for e in events if isinstance(e, ev.ConversationItemAdded)]
    assert added[0].role == "user" and added[0].content[0].text == "I would like to order."
    done = next(e for e in events if isinstance(e, ev.OutputAudioTranscriptDone))
    assert done.transcript == "Sure, what would you like?"
    assert isinstance(realtime_server.sessions[-1].received[1], ev.InputTextAppend)
