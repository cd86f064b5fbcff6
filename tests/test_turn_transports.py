"""Pause, resume and the heard position on the gateway's sinks: WebSocket calls and Twilio."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeflow.audio.clock import ManualClock, set_clock, settle
from pipeflow.errors import ProtocolError
from pipeflow.frames import (
    AudioFrame,
    Interrupt,
    PausePlayout,
    PlayoutPosition,
    ResponseDone,
    ResumePlayout,
)
from pipeflow.pipeline import Pipeline
from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.edges import CallAudioOut, PlayedAudio, TwilioMediaOut
from pipeflow.stages.sources import PushSource
from tests.test_gateway_api import LIGHT
from tests.test_gateway_edges import MS_100, Upstream, _collect, context, drain, twilio_stream
from tests.test_gateway_twilio import SID, agent, mark_message


async def test_the_call_sink_holds_on_a_pause_plays_on_after_and_cuts_at_the_pause(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    set_clock(clock)
    try:
        push, upstream = PushSource(sample_rate=16000), Upstream()
        sink = CallAudioOut()
        pipeline = Pipeline([push, upstream, sink], context=context(tmp_path))
        runner = asyncio.create_task(drain(pipeline, []))
        await settle()
        heard: list[AudioFrame] = []
        listener = asyncio.create_task(_collect(sink.listen(), heard))
        for index in range(10):  # one second of the agent's answer
            push.push(AudioFrame(pcm=MS_100, sample_rate=24000, pts=index / 10, item_id="a"))
        await settle()
        await clock.advance(0.2, step=0.01)
        push.push(PausePlayout())  # the caller may be barging in
        await settle()
        count = len(heard)
        await clock.advance(0.5, step=0.01)
        assert len(heard) == count  # held: nothing goes to the caller
        push.push(ResumePlayout())  # it was a cough: play on from there
        await settle()
        await clock.advance(0.2, step=0.01)
        assert len(heard) > count
        pts = [round(f.pts, 2) for f in heard]
        assert pts[count] >= 0.7  # resumed after the hold, not skipped ahead
        push.push(PausePlayout())
        await settle()
        held_at = sum(len(f.pcm) for f in heard) / 48  # ms played when held again
        await clock.advance(0.3, step=0.01)
        push.push(Interrupt())  # now it is meant: cut where the pause held it
        await settle()
        [position] = upstream.positions
        assert position.item_id == "a" and position.interrupted
        assert abs(position.played_ms - held_at) <= 20
        assert isinstance(position, PlayoutPosition)
        push.end()
        await asyncio.wait_for(runner, 5)
        await asyncio.wait_for(listener, 5)
    finally:
        set_clock(None)


async def test_twilio_has_no_pause_so_a_pause_clears_and_a_resume_sends_the_rest_again(
    tmp_path: Path,
) -> None:
    stream, sent = twilio_stream()
    push, upstream = PushSource(sample_rate=8000), Upstream()
    pipeline = Pipeline([push, upstream, TwilioMediaOut(stream)], context=context(tmp_path))
    runner = asyncio.create_task(drain(pipeline, []))
    for _ in range(3):
        push.push(agent(1600, "item_1", rate=8000))  # 3 x 200 ms, all sent at once
    await settle()
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    for event in stream.translator.receive(mark_message(marks[0])):  # 200 ms heard
        stream.marks.put_nowait(event)  # type: ignore[arg-type]
    await settle()
    before = len(sent)
    push.push(PausePlayout())  # the caller may be barging in: Twilio stops now
    await settle()
    assert sent[before:] == [{"event": "clear", "streamSid": SID}]
    push.push(agent(1600, "item_1", rate=8000))  # more comes while paused: held back
    await settle()
    assert len(sent) == before + 1
    push.push(ResumePlayout())  # a cough: the 600 ms not heard are sent again
    push.push(ResponseDone())
    await settle()
    media = [m for m in sent[before + 1 :] if m["event"] == "media"]
    assert len(media) == 30  # 600 ms in 20 ms payloads (400 unplayed + 200 held back)
    marks = [m["mark"]["name"] for m in sent[before + 1 :] if m["event"] == "mark"]
    for name in marks:  # Twilio plays it all: the item is reported whole, from its start
        for event in stream.translator.receive(mark_message(name)):
            stream.marks.put_nowait(event)  # type: ignore[arg-type]
    await settle()
    assert upstream.positions[-1] == PlayoutPosition(item_id="item_1", played_ms=800)
    # Paused again and then meant: the cut is where the pause stopped the audio.
    push.push(agent(1600, "item_2", rate=8000))
    await settle()
    push.push(PausePlayout())
    await settle()
    push.push(Interrupt())
    await settle()
    assert upstream.positions[-1] == PlayoutPosition(item_id="item_2", played_ms=0,
                                                     interrupted=True)
    push.end()
    await asyncio.wait_for(runner, 5)


def _chunk(item_id: str, ms: int, pts: float = 0.0) -> AudioFrame:
    return AudioFrame(pcm=bytes(48 * ms), sample_rate=24000, pts=pts, item_id=item_id)


def test_the_played_count_maps_to_an_item_and_a_position_in_it() -> None:
    played = PlayedAudio()
    assert played.heard_ms("a") is None  # never reported: unknown
    for _ in range(3):
        played.sent(_chunk("a", 20))
    played.sent(_chunk("b", 20))
    played.played(24 * 30)  # a chunk and a half of "a"
    assert played.heard_ms("a") == 30 and played.heard_ms("b") == 0
    assert played.heard_ms("c") is None  # never sent
    played.played(24 * 70)  # all of "a" and half of "b"
    assert played.heard_ms("a") == 60 and played.heard_ms("b") == 10
    with pytest.raises(ProtocolError, match="samples 24 must lie between"):
        played.played(24)  # behind the last report
    with pytest.raises(ProtocolError, match="samples sent"):
        played.played(24 * 81)  # past what was sent


async def test_the_call_sink_truncates_to_what_a_reporting_player_played(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    set_clock(clock)
    try:
        push, upstream = PushSource(sample_rate=16000), Upstream()
        sink = CallAudioOut()
        pipeline = Pipeline([push, upstream, sink], context=context(tmp_path))
        runner = asyncio.create_task(drain(pipeline, []))
        await settle()
        heard: list[AudioFrame] = []
        played = PlayedAudio()
        listener = asyncio.create_task(_collect(sink.listen(played), heard))
        for index in range(10):
            push.push(AudioFrame(pcm=MS_100, sample_rate=24000, pts=index / 10, item_id="a"))
        await settle()
        await clock.advance(0.5, step=0.01)
        sent_ms = sum(len(f.pcm) for f in heard) / 48
        assert sent_ms >= 480
        played.played(24 * 300)  # the page is behind the call's clock: 300 ms played
        push.push(Interrupt())
        await settle()
        [position] = upstream.positions
        assert position.item_id == "a" and position.interrupted
        assert position.played_ms == 300  # what the caller heard, not what was sent
        push.end()
        await asyncio.wait_for(runner, 5)
        await asyncio.wait_for(listener, 5)
    finally:
        set_clock(None)


@pytest.fixture
def client(tmp_path: Path):
    app = create_app(LIGHT, GatewayOptions(no_auth=True, output_dir=str(tmp_path)))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_the_socket_takes_played_reports_and_refuses_impossible_ones(client: TestClient) -> None:
    client.post("/api/calls/played/start")
    with client.websocket_connect("ws://127.0.0.1/api/calls/played/stream") as ws:
        assert ws.receive_json()["type"] == "call"
        ws.send_text(json.dumps({"type": "played", "samples": 10**9}))  # more than was sent
        error = ws.receive_json()
        assert error["type"] == "error" and "samples 1000000000 must lie between" in \
            error["message"]
        ws.send_text(json.dumps({"type": "played", "samples": -1}))
        assert ws.receive_json()["type"] == "error"
        ws.send_text(json.dumps({"type": "played", "samples": 0}))  # nothing played yet: fine
        ws.send_text(json.dumps({"type": "end"}))
        last = ws.receive_json()
        while last["type"] != "ended":
            assert last["type"] != "error", last
            last = ws.receive_json()
