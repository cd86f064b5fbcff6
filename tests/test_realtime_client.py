"""The Realtime client against a scripted WebSocket peer on 127.0.0.1.

``Peer`` is a real websockets server whose connection handler each test
writes, so faults (a close mid-response, an error event, a refused key, a
peer that stops reading) are exact and need no timing luck.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Response

from pipeflow.errors import RemoteError
from pipeflow.realtime import events as ev
from pipeflow.realtime.client import RealtimeClient, Reconnected, backoff_delays
from pipeflow.realtime.options import RealtimeOptions, ReconnectOptions

Handler = Callable[["Peer", ServerConnection], Awaitable[None]]


class Peer:
    """A WebSocket server at ws://127.0.0.1:PORT/v1/realtime driven by ``handler``."""

    def __init__(self, handler: Handler, *, status: int | None = None) -> None:
        self.handler = handler
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.requests: list[Any] = []
        self.connections = 0
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> Peer:
        def refuse(connection: ServerConnection, request: Any) -> Response | None:
            self.requests.append(request)
            if self.status is not None:
                return connection.respond(self.status, "refused\n")
            return None

        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=refuse,
                                   compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        await self.handler(self, ws)

    async def recv(self, ws: ServerConnection) -> dict[str, Any]:
        event = json.loads(await ws.recv())
        self.received.append(event)
        return event

    async def rest(self, ws: ServerConnection) -> None:
        """Record every event until the client closes the connection."""
        async for message in ws:
            self.received.append(json.loads(message))

    async def idle(self, ws: ServerConnection) -> None:
        """A model that sets the session up and then only listens."""
        await self.setup(ws)
        await self.rest(ws)

    async def setup(self, ws: ServerConnection) -> dict[str, Any]:
        """Play the start of a session: session.created, then answer session.update."""
        await send(ws, {"type": "session.created", "session": {"type": "realtime"}})
        update = await self.recv(ws)
        assert update["type"] == "session.update"
        await send(ws, {"type": "session.updated", "session": update["session"]})
        return update

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]


async def send(ws: ServerConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


def options(url: str, **kwargs: Any) -> RealtimeOptions:
    kwargs.setdefault("reconnect", ReconnectOptions(attempts=2, backoff_s=0))
    kwargs.setdefault("connect_timeout_s", 5)
    return RealtimeOptions(url=url, **kwargs)


async def until_closed(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


async def collect(client: RealtimeClient, count: int) -> list[Any]:
    out = []
    async for event in client.events():
        out.append(event)
        if len(out) == count:
            break
    return out


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OAI_REALTIME_URL", "OPENAI_API_KEY", "OAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


async def test_connect_sets_up_the_session_and_sends_the_key_only_in_a_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        append = await peer.recv(ws)
        await send(ws, {"type": "input_audio_buffer.committed", "item_id": "it_1"})
        assert append["type"] == "input_audio_buffer.append"
        await until_closed(ws)

    caplog.set_level(logging.DEBUG, logger="pipeflow.realtime.client")
    async with Peer(handler) as peer:
        opts = options(peer.url, api_key="sk-secret-123", instructions="Be brief.",
                       voice="marin", log_events=True, model="gpt-realtime")
        async with RealtimeClient(opts) as client:
            client.protocol.append_audio(b"\x00\x01" * 480)
            assert await client.flush() == 1
            events = await collect(client, 3)
        request = peer.requests[0]
        assert request.headers["Authorization"] == "Bearer sk-secret-123"
        assert "OpenAI-Beta" not in request.headers
        assert request.path == "/v1/realtime?model=gpt-realtime"
        update = peer.received[0]["session"]
        assert update["type"] == "realtime" and update["instructions"] == "Be brief."
        assert update["audio"]["output"]["voice"] == "marin"
    assert [type(e) for e in events] == [
        ev.SessionCreated, ev.SessionUpdated, ev.InputAudioBufferCommitted
    ]
    assert "sk-secret-123" not in caplog.text
    assert "input_audio_buffer.append" in caplog.text and "base64 chars>" in caplog.text
    assert "AAEAAQAB" not in caplog.text  # the audio payload is redacted


async def test_beta_shape_sends_the_beta_header_and_flat_session() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await until_closed(ws)

    async with Peer(handler) as peer:
        async with RealtimeClient(options(peer.url, shape="beta")) as client:
            assert client.connected
        assert peer.requests[0].headers["OpenAI-Beta"] == "realtime=v1"
        assert "authorization" not in {k.lower() for k in peer.requests[0].headers}
        session = peer.received[0]["session"]
        assert session["input_audio_format"] == "pcm16" and "type" not in session


async def test_malformed_server_messages_become_error_events_and_reading_goes_on() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await ws.send("{not json")
        await send(ws, {"type": "error", "event_id": "e9",
                        "error": {"type": "invalid_request_error", "code": "bad_thing",
                                  "message": "That was bad.", "event_id": "pf_1"}})
        await send(ws, {"type": "brand.new.event", "x": 1})
        await until_closed(ws)

    async with Peer(handler) as peer, RealtimeClient(options(peer.url)) as client:
        events = await collect(client, 5)
    local, remote, unknown = events[2:]
    assert isinstance(local, ev.ErrorEvent) and local.error.type == "protocol_error"
    assert isinstance(remote, ev.ErrorEvent) and remote.error.code == "bad_thing"
    assert remote.error.event_id == "pf_1"
    assert isinstance(unknown, ev.UnknownEvent) and unknown.data["x"] == 1


async def test_reconnects_and_sets_the_session_up_again_after_a_drop() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        if peer.connections == 1:
            await send(ws, {"type": "response.created", "response": {"id": "r1"}})
            await ws.close(1011, "model crashed")
            return
        await send(ws, {"type": "response.created", "response": {"id": "r2"}})
        await until_closed(ws)

    async with Peer(handler) as peer, RealtimeClient(options(peer.url)) as client:
        events = await collect(client, 7)
    kinds = [type(e) for e in events]
    assert kinds == [ev.SessionCreated, ev.SessionUpdated, ev.ResponseCreated, Reconnected,
                     ev.SessionCreated, ev.SessionUpdated, ev.ResponseCreated]
    marker = events[3]
    assert marker.attempt == 1 and "1011" in marker.reason and "model crashed" in marker.reason
    assert peer.types() == ["session.update", "session.update"]
    assert client.reconnects == 1


async def test_gives_up_with_a_clear_error_when_the_server_stays_away() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await ws.close()

    async with Peer(handler) as peer:
        client = RealtimeClient(options(peer.url, reconnect=ReconnectOptions(attempts=0)))
        await client.connect()
        with pytest.raises(RemoteError, match="lost the connection"):
            await collect(client, 10)
        await client.close()


async def test_reconnect_attempts_fail_and_the_error_says_so() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        if peer.connections > 1:
            await ws.close(1013, "try later")  # refuses every new session
            return
        await peer.setup(ws)
        await ws.close()

    async with Peer(handler) as peer:
        client = RealtimeClient(options(peer.url))
        await client.connect()
        with pytest.raises(RemoteError, match=r"2 reconnect attempt\(s\) failed"):
            await collect(client, 10)
        assert peer.connections == 3
        await client.close()


async def test_a_refused_key_is_a_clear_error_that_never_shows_the_key() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:  # pragma: no cover
        await until_closed(ws)

    async with Peer(handler, status=401) as peer:
        client = RealtimeClient(options(peer.url, api_key="sk-do-not-print"))
        with pytest.raises(RemoteError, match="refused the API key") as info:
            await client.connect()
        assert "sk-do-not-print" not in str(info.value)


async def test_a_rejected_session_fails_connect() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.recv(ws)
        await send(ws, {"type": "error", "error": {"type": "invalid_request_error",
                                                   "code": "invalid_value",
                                                   "message": "Unknown voice."}})
        await until_closed(ws)

    async with Peer(handler) as peer:
        with pytest.raises(RemoteError, match="rejected the session: Unknown voice"):
            await RealtimeClient(options(peer.url)).connect()


async def test_no_server_is_a_remote_error() -> None:
    async with Peer(lambda peer, ws: until_closed(ws)) as peer:
        url = peer.url
    with pytest.raises(RemoteError, match="cannot connect"):
        await RealtimeClient(options(url)).connect()
    with pytest.raises(RemoteError, match="no Realtime URL"):
        await RealtimeClient(RealtimeOptions()).connect()


async def test_a_silent_server_times_the_setup_out() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await until_closed(ws)  # never answers session.update

    async with Peer(handler) as peer:
        with pytest.raises(RemoteError, match="did not confirm the session"):
            await RealtimeClient(options(peer.url, connect_timeout_s=0.2)).connect()


async def test_sending_waits_while_the_peer_does_not_read() -> None:
    reading = asyncio.Event()

    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        await reading.wait()  # a slow consumer: nothing is read meanwhile
        await until_closed(ws)

    chunk = b"\x01\x02" * 32768  # 64 KiB of audio per event
    async with (
        Peer(handler) as peer,
        RealtimeClient(options(peer.url, max_send_buffer=4096)) as client,
    ):
        for _ in range(400):  # ~35 MB of JSON: more than any socket buffer holds
            client.protocol.append_audio(chunk)
        flush = asyncio.ensure_future(client.flush())
        done, _ = await asyncio.wait([flush], timeout=0.5)
        assert not done, "flush returned although the peer read nothing"
        reading.set()
        assert await asyncio.wait_for(flush, 30) == 400


async def test_close_while_reconnecting_ends_the_events_quietly() -> None:
    second = asyncio.Event()
    closed = asyncio.Event()

    async def handler(peer: Peer, ws: ServerConnection) -> None:
        if peer.connections == 1:
            await peer.setup(ws)
            await ws.close()
            return
        second.set()
        await closed.wait()  # the client gives up while this setup is in flight
        await peer.idle(ws)

    async with Peer(handler) as peer:
        client = RealtimeClient(options(peer.url, reconnect=ReconnectOptions(attempts=3,
                                                                             backoff_s=0)))
        await client.connect()
        reader = asyncio.ensure_future(collect(client, 100))
        await second.wait()
        await client.close()
        closed.set()
        events = await asyncio.wait_for(reader, 5)
    assert [type(e) for e in events] == [ev.SessionCreated, ev.SessionUpdated]
    assert not client.connected and client.reconnects == 0


def test_backoff_doubles_from_backoff_s_up_to_backoff_max_s() -> None:
    settings = ReconnectOptions(attempts=5, backoff_s=0.25, backoff_max_s=1.5)
    assert backoff_delays(settings) == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert backoff_delays(ReconnectOptions(attempts=3, backoff_s=0)) == [0, 0.05, 0.1]
    assert backoff_delays(ReconnectOptions(attempts=0)) == []


async def test_reconnect_attempts_wait_out_the_backoff() -> None:
    async def handler(peer: Peer, ws: ServerConnection) -> None:
        if peer.connections > 1:
            await ws.close(1013, "try later")
            return
        await peer.setup(ws)
        await ws.close()

    backoff = ReconnectOptions(attempts=3, backoff_s=0.05, backoff_max_s=0.1)
    async with Peer(handler) as peer:
        client = RealtimeClient(options(peer.url, reconnect=backoff))
        await client.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RemoteError, match=r"3 reconnect attempt\(s\) failed"):
            await collect(client, 10)
        waited = loop.time() - started
        await client.close()
    assert peer.connections == 4
    assert waited >= 0.05 + 0.1 + 0.1  # never sooner than the backoff allows


async def test_keepalive_finds_a_peer_that_stopped_answering_pings() -> None:
    done = asyncio.Event()

    async def handler(peer: Peer, ws: ServerConnection) -> None:
        await peer.setup(ws)
        ws.transport.pause_reading()  # alive at the TCP level, deaf to pings
        await done.wait()
        ws.transport.abort()

    async with Peer(handler) as peer:
        client = RealtimeClient(options(peer.url, keepalive_s=0.1,
                                        reconnect=ReconnectOptions(attempts=0)))
        await client.connect()
        try:
            with pytest.raises(RemoteError, match="lost the connection"):
                # ping, 0.1 s for the pong, then at most the 2 s closing handshake
                await asyncio.wait_for(collect(client, 10), 5)
        finally:
            done.set()
            await client.close()
