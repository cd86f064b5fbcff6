"""Twilio Media Streams: the pure translator, then a fake Twilio client over a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from pipeflow.audio.g711 import samples_to_ulaw, ulaw_decode
from pipeflow.errors import ProtocolError
from pipeflow.frames import AudioFrame, PlayoutPosition
from pipeflow.realtime.events import ConversationItemTruncate
from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.twilio import (
    CHUNK,
    CallerAudio,
    Connected,
    DtmfPressed,
    Marked,
    Started,
    Stopped,
    TwilioMediaTranslator,
)
from tests.gateway_util import CALL_YAML, FAST, serving
from tests.speech import need_tts

SID = "MZ0123456789abcdef"


def start_message(**parameters: str) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": SID,
        "start": {"accountSid": "AC1", "streamSid": SID, "callSid": "CA77",
                  "tracks": ["inbound"], "customParameters": parameters,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                  "channels": 1}},
    })


def media_message(ulaw: bytes, chunk: int = 1) -> str:
    return json.dumps({"event": "media", "streamSid": SID, "sequenceNumber": str(chunk + 1),
                       "media": {"track": "inbound", "chunk": str(chunk),
                                 "timestamp": str(chunk * 20),
                                 "payload": base64.b64encode(ulaw).decode()}})


def mark_message(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": name}})


def started() -> TwilioMediaTranslator:
    translator = TwilioMediaTranslator()
    assert translator.receive(json.dumps({"event": "connected", "protocol": "Call",
                                          "version": "1.0.0"})) == [Connected()]
    events = translator.receive(start_message(call_id="order-7"))
    assert events == [Started(SID, "CA77", {"call_id": "order-7"})]
    return translator


def agent(pcm_samples: int, item: str = "item_1", rate: int = 24000) -> AudioFrame:
    tone = (np.sin(np.arange(pcm_samples) * 0.05) * 8000).astype("<i2")
    return AudioFrame(pcm=tone.tobytes(), sample_rate=rate, item_id=item)


def test_inbound_media_dtmf_and_stop() -> None:
    translator = started()
    samples = (np.arange(160) * 50 - 4000).astype(np.int16)
    ulaw = samples_to_ulaw(samples)
    assert translator.receive(media_message(ulaw)) == [CallerAudio(ulaw_decode(ulaw))]
    outbound = json.dumps({"event": "media", "streamSid": SID,
                           "media": {"track": "outbound", "payload": "AAAA"}})
    assert translator.receive(outbound) == []
    assert translator.receive(json.dumps({
        "event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "5"},
    })) == [DtmfPressed("5")]
    assert translator.receive(json.dumps({"event": "stop", "streamSid": SID,
                                          "stop": {"callSid": "CA77"}})) == [Stopped()]


@pytest.mark.parametrize("message", [
    "not json", "[]", '{"event": "hello"}', '{"event": "media", "media": {}}',
    '{"event": "media", "media": {"payload": "@@@"}}',
])
def test_malformed_messages_are_protocol_errors(message: str) -> None:
    with pytest.raises(ProtocolError, match="not a known Media Streams event"):
        TwilioMediaTranslator().receive(message)


def test_a_stream_in_another_encoding_is_refused() -> None:
    message = json.loads(start_message())
    message["start"]["mediaFormat"]["encoding"] = "audio/l16"
    with pytest.raises(ProtocolError, match="audio/x-mulaw"):
        TwilioMediaTranslator().receive(json.dumps(message))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2400), min_size=1, max_size=12))
def test_agent_audio_goes_out_in_20ms_mulaw_payloads(sizes: list[int]) -> None:
    translator = started()
    messages = [json.loads(m) for size in sizes for m in translator.agent_audio(agent(size))]
    messages += [json.loads(m) for m in translator.flush()]
    media = [base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"]
    assert all(m["streamSid"] == SID for m in messages)
    assert all(len(p) == CHUNK for p in media[:-1])
    sent = sum(len(p) for p in media)
    assert abs(sent - sum(sizes) / 3) <= 16  # 24 kHz -> 8 kHz, one byte per sample
    if media:
        assert 0 < len(media[-1]) <= CHUNK
        assert messages[-1]["event"] == "mark"  # every batch of media ends with a mark
    assert round(translator.sent_ms) == round(sent / 8)


def test_marks_tell_what_played_and_barge_in_clears_and_truncates() -> None:
    translator = started()
    out = [json.loads(m) for m in translator.agent_audio(agent(1600, rate=8000))]  # 200 ms
    out += [json.loads(m) for m in translator.agent_audio(agent(1600, rate=8000))]  # 400 ms
    marks = [m["mark"]["name"] for m in out if m["event"] == "mark"]
    assert len(marks) == 2
    assert translator.receive(mark_message(marks[0])) == [Marked("item_1", 200)]
    clear, position = translator.interrupt()
    assert [json.loads(m) for m in clear] == [{"event": "clear", "streamSid": SID}]
    assert position == PlayoutPosition(item_id="item_1", played_ms=200, interrupted=True)
    assert translator.receive(mark_message(marks[1])) == []  # echoed by clear: never heard
    assert translator.interrupt()[1] is None  # nothing playing: nothing to truncate


def test_a_new_item_flushes_the_previous_one() -> None:
    translator = started()
    first = translator.agent_audio(agent(1000, "item_a"))
    second = translator.agent_audio(agent(1000, "item_b"))
    names = [json.loads(m)["mark"]["name"] for m in first + second
             if json.loads(m)["event"] == "mark"]
    assert names[0].startswith("item_a:") and names[-1].startswith("item_a:")
    assert translator.item_id == "item_b"
    tail = [json.loads(m) for m in translator.flush()]
    assert tail[-1]["mark"]["name"].startswith("item_b:")


async def _live_call(app, call_id: str):
    """The call once the gateway has made it and its session runs."""
    from pipeflow.server.calls import CallError

    async with asyncio.timeout(30):
        while True:
            try:
                call = app.state.calls.get(call_id)
            except CallError:
                call = None
            if call is not None and call.session is not None:
                return call
            await asyncio.sleep(0.01)


async def test_fake_twilio_call_places_the_order(tmp_path: Path) -> None:
    """A caller's lines streamed as 20 ms mu-law media messages: the order is stored.

    Like a caller, each line waits for the agent's spoken answer to the one
    before (its final transcript): recognition runs off the gateway's event
    loop, so a track sent faster than real time would otherwise talk over
    every answer before its tools ran.
    """
    from pipeflow.frames import Transcript
    from tests.gateway_util import PHONE_BAND_ADDRESS, PHONE_BAND_LINES, PHONE_BAND_NUMBER

    need_tts()
    # The lines are spoken by an espeak-ng of their own (as the caller source does), so
    # the audio is the same on every run. Each line's silence outlasts the end of turn's
    # max_delay_ms (1.5 s): the turn is judged on stream time, which stops with the media.
    from pipeflow.stages.caller import synthesize_apart

    silence = np.zeros(8000 * 2, np.int16)
    lines = [samples_to_ulaw(np.concatenate([silence[:2400], speech, silence]))
             for speech in synthesize_apart(list(PHONE_BAND_LINES), 8000, "en-us", 175)]
    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                                                overrides=FAST))
    received: list[dict] = []
    async with serving(app) as base:
        voice = await asyncio.to_thread(_post_voice, base)
        assert "<Connect><Stream url=" in voice and "/twilio/media" in voice
        async with connect(base.replace("http", "ws") + "/twilio/media") as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(start_message(call_id="CA-fake-1"))
            reader = asyncio.create_task(_read_and_echo_marks(ws, received))
            sequence = 0
            call = await _live_call(app, "CA-fake-1")

            def answered(frame: object) -> bool:
                return isinstance(frame, Transcript) and frame.role == "agent" and frame.final

            await call.session.wait_for(answered, timeout=30, after=0)  # the greeting
            for ulaw in lines:
                seen = call.session.frames_seen
                for index in range(0, len(ulaw), CHUNK):  # 20 ms each, in order, 8x real time
                    await ws.send(media_message(ulaw[index : index + CHUNK], sequence))
                    sequence += 1
                    if sequence % 8 == 7:
                        await asyncio.sleep(0.02)
                await call.session.wait_for(answered, timeout=30, after=seen)
            call = app.state.calls.get("CA-fake-1")
            session = call.session
            await session.wait_for(
                lambda f: getattr(f, "name", "") == "place_order" and hasattr(f, "output"),
                timeout=30, after=0)
            [model_server] = app.state.calls.models.servers
            [model_session] = model_server.sessions
            truncations = [(e.item_id, e.audio_end_ms) for e in model_session.received
                           if isinstance(e, ConversationItemTruncate)]
            await ws.send(json.dumps({"event": "stop", "streamSid": SID}))
            await asyncio.wait_for(reader, 30)
        await call.wait_ended()

    from pipelines.orderline.storage import SqliteOrderRepository

    stored = await SqliteOrderRepository(tmp_path / "CA-fake-1" / "orders.sqlite3").list()
    assert len(stored) == 1
    assert stored[0].items_text() == "2 pizzas, 1 salad, 1 ice cream"
    assert stored[0].phone == PHONE_BAND_NUMBER and stored[0].address == PHONE_BAND_ADDRESS
    record = json.loads((tmp_path / "CA-fake-1" / "call.json").read_text())
    assert record["agent"]["order id"] == stored[0].order_id
    assert record["end_reason"] in ("hangup", "finished")
    events = {m["event"] for m in received}
    assert {"media", "mark"} <= events
    payloads = [m for m in received if m["event"] == "media"]
    assert all(len(base64.b64decode(m["media"]["payload"])) <= CHUNK for m in payloads)
    # Whether the caller's fixed track talks over an answer depends on how fast this
    # machine makes the answers; the barge-in itself (clear, one truncation at a mark) is
    # pinned down on the manual clock in tests/test_gateway_edges.py. Here: any barge-in
    # that happened cut the model's item once, where a mark said playback had got to
    # (never also where the gateway's own sinks guessed, on the gateway's clock).
    assert ("clear" in events) == bool(truncations), (events, truncations)
    assert len({item for item, _ in truncations}) == len(truncations)
    boundaries = _mark_positions(received)
    for item, end_ms in truncations:
        assert end_ms == 0 or end_ms in boundaries[item], (item, end_ms, boundaries[item])


def _mark_positions(messages: list[dict]) -> dict[str, set[int]]:
    """Milliseconds of each item's audio sent before each of its marks (8 bytes a ms).

    After a ``clear`` (a pause) the same item may be sent again from a mark it had
    reached: those marks count from that earlier mark.
    """
    positions: dict[str, set[int]] = {}
    item, sent, pending = "", 0, 0
    bases: dict[str, set[int]] = {}
    cleared = ""
    for message in messages:
        if message["event"] == "media":
            pending += len(base64.b64decode(message["media"]["payload"]))
        elif message["event"] == "clear":
            cleared, item, sent, pending = item, "", 0, 0
        elif message["event"] == "mark":
            name = message["mark"]["name"].rsplit(":", 1)[0]
            if name != item:
                bases[name] = ({0} | positions.get(name, set())) if name == cleared else {0}
                item, sent = name, 0
            sent += pending
            pending = 0
            positions.setdefault(item, set()).update(b + round(sent / 8) for b in bases[item])
    return positions


def _post_voice(base: str) -> str:
    import httpx

    response = httpx.post(f"{base}/twilio/voice", data={"CallSid": "CA-fake-1"})
    response.raise_for_status()
    return response.text


async def _read_and_echo_marks(ws, received: list[dict]) -> None:
    """Like Twilio with instant playback: every mark comes straight back."""
    async for raw in ws:
        message = json.loads(raw)
        received.append(message)
        if message["event"] == "mark":
            await ws.send(mark_message(message["mark"]["name"]))
