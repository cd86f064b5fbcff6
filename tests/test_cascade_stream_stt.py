"""The stt stage over a Realtime transcription session, on a real WebSocket to the local server.

``stt`` with ``streaming: true`` sends the caller's audio while they speak
(``wss://.../v1/realtime?intent=transcription``) and only commits at the end
of the turn; the local Realtime server serves the same protocol offline
(pocketsphinx), and every event it sends is checked against the openai SDK's
GA models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import connect

from pipeflow.cascade.chat import ChatError
from pipeflow.cascade.stream_stt import RealtimeTranscriber, transcription_url
from pipeflow.frames import AudioFrame, EndOfStream, ErrorFrame, Frame, Transcript, TurnCommitted
from pipeflow.pipeline import Pipeline
from pipeflow.realtime.script import parse_script
from pipeflow.realtime.server import LocalRealtimeServer
from pipeflow.stage import Frames, Stage
from pipeflow.stages.stt import SpeechToText
from tests.realtime_sdk import conformance_problems
from tests.speech import need_tts, spoken

SCRIPT = parse_script("""\
transcriber:
  sentences: ["how much is a pizza", "one salad please"]
  expectations:
    digits: ["five five five one two three four"]
turns:
  - match: [pizza]
    steps: [{say: "Ten dollars."}]
""")


def pcm16(text: str, rate: int = 16000) -> bytes:
    return spoken(text, rate).astype("<i2").tobytes()


@pytest.fixture
async def server() -> AsyncIterator[LocalRealtimeServer]:
    need_tts()
    async with LocalRealtimeServer(SCRIPT, api_key="sk-local", keep_sessions=True) as running:
        yield running


def test_the_url_is_the_realtime_endpoint_with_the_transcription_intent() -> None:
    assert (transcription_url("https://api.openai.com/v1/")
            == "wss://api.openai.com/v1/realtime?intent=transcription")
    assert (transcription_url("http://127.0.0.1:8080/v1")
            == "ws://127.0.0.1:8080/v1/realtime?intent=transcription")


async def test_audio_streamed_in_pieces_then_commits_get_each_turns_words(
        server: LocalRealtimeServer) -> None:
    client = RealtimeTranscriber(server.http_base_url, "gpt-4o-mini-transcribe", "sk-local",
                                 language="en")
    try:
        turns = []
        for text, expect in (("how much is a pizza", None),
                             ("five five five one two three four", "digits"),
                             ("one salad please", None)):
            pcm = pcm16(text)
            for at in range(0, len(pcm), 640):  # 20 ms at a time, as a call's frames
                client.append(pcm[at:at + 640], 16000)
            turns.append(client.commit(expect))
        words = [await client.words(turn) for turn in turns]
    finally:
        await client.aclose()
    assert words == ["how much is a pizza", "five five five one two three four",
                     "one salad please"]
    session = server.sessions[0]
    kinds = [type(e).__struct_config__.tag for e in session.received]
    assert kinds.count("input_audio_buffer.commit") == 3
    assert kinds.count("input_audio_buffer.append") > 30  # sent while spoken, not one upload
    assert not [k for k in kinds if k.startswith("response.")]
    # The session as set up, and every event the server sent, as the SDK defines them.
    first = session.received[0]
    assert first.session["type"] == "transcription"  # type: ignore[attr-defined]
    assert first.session["audio"]["input"]["turn_detection"] is None  # type: ignore[attr-defined]
    events = client.events
    assert events[0]["type"] == "session.created"
    assert events[0]["session"]["type"] == "transcription"
    for event in events:
        assert conformance_problems(msgspec.json.encode(event), "ga", "server") == [], event
    completed = [e for e in events
                 if e["type"] == "conversation.item.input_audio_transcription.completed"]
    for done in completed:  # the deltas of each turn add up to its transcript
        deltas = "".join(e["delta"] for e in events
                         if e["type"] == "conversation.item.input_audio_transcription.delta"
                         and e["item_id"] == done["item_id"])
        assert deltas == done["transcript"]
    assert [e["type"] for e in events if e["type"].endswith(("committed", "completed"))] == [
        "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"
    ] * 3


class Caller(Stage):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self.frames = frames

    async def process(self, frames: Frames) -> Frames:
        for frame in self.frames:
            yield frame
        yield EndOfStream()


def caller(*texts: str) -> list[Frame]:
    out: list[Frame] = []
    for text in texts:
        pcm = pcm16(text)
        out += [AudioFrame(pcm=pcm[i:i + 640], sample_rate=16000)
                for i in range(0, len(pcm), 640)]
        out.append(TurnCommitted())
    return out


async def _run(stt: SpeechToText, frames: list[Frame]) -> list[Frame]:
    seen: list[Frame] = []
    async for frame in Pipeline([Caller(frames), stt]).stream():
        seen.append(frame)
    return seen


async def test_the_stt_stage_streams_each_turn_from_yaml_options(
        server: LocalRealtimeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", "sk-local")
    stt = SpeechToText(base_url=server.http_base_url, streaming=True, api_key_env="LOCAL_KEY")
    seen = await _run(stt, caller("how much is a pizza", "one salad please"))
    words = [(f.item_id, f.text) for f in seen if isinstance(f, Transcript)]
    assert words == [("input_1", "how much is a pizza"), ("input_2", "one salad please")]
    assert not [f for f in seen if isinstance(f, ErrorFrame)]
    assert server.sessions[-1].config.transcription_session


async def test_a_refused_key_or_no_server_is_an_error_frame_and_the_turn_goes_on(
        server: LocalRealtimeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", "sk-wrong")
    stt = SpeechToText(base_url=server.http_base_url, streaming=True, api_key_env="LOCAL_KEY")
    seen = await _run(stt, caller("how much is a pizza"))
    errors = [f for f in seen if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["http_401"]
    assert "refused the API key" in errors[0].message and "intent=transcription" in (
        errors[0].message)
    assert [(f.item_id, f.text) for f in seen if isinstance(f, Transcript)] == [("input_1", "")]
    client = RealtimeTranscriber("http://127.0.0.1:9/v1", "m", timeout_s=2)
    client.append(pcm16("how much is a pizza"), 16000)
    turn = client.commit()
    with pytest.raises(ChatError) as caught:
        await client.words(turn)
    await client.aclose()
    assert caught.value.code == "unreachable" and "127.0.0.1:9" in str(caught.value)


async def _exchange(url: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    async with connect(url, additional_headers={"Authorization": "Bearer sk-local"}) as ws:
        got = [json.loads(await ws.recv())]
        for event in events:
            await ws.send(json.dumps(event))
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    return got


async def test_the_server_keeps_the_two_kinds_of_session_apart(
        server: LocalRealtimeServer) -> None:
    url = server.url + "?intent=transcription"
    got = await _exchange(url, {"type": "response.create"},
                          {"type": "session.update", "session": {"type": "realtime"}})
    assert [e["type"] for e in got] == ["session.created", "error", "error"]
    assert "makes no responses" in got[1]["error"]["message"]
    assert "intent=transcription" in got[2]["error"]["message"]
    assert got[2]["error"]["param"] == "session.type"
    got = await _exchange(server.url, {"type": "session.update",
                                       "session": {"type": "transcription"}})
    assert got[1]["type"] == "error" and got[1]["error"]["param"] == "session.type"
    # beta's name for the update, answered with beta's event
    got = await _exchange(url, {"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "turn_detection": None,
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"}}})
    assert got[1]["type"] == "transcription_session.updated"
    assert got[1]["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
    assert got[1]["session"]["turn_detection"] is None


async def test_a_lost_session_fails_the_turn_waiting_and_the_next_audio_reconnects(
        server: LocalRealtimeServer) -> None:
    client = RealtimeTranscriber(server.http_base_url, "gpt-4o-mini-transcribe", "sk-local")
    try:
        client.append(pcm16("how much is a pizza"), 16000)
        assert await client.words(client.commit()) == "how much is a pizza"
        client.append(pcm16("one salad please"), 16000)
        for ws in list(server._live):  # the server drops the connection mid-turn
            await ws.close()
        with pytest.raises(ChatError) as caught:
            await client.words(client.commit())
        assert caught.value.code == "stream_cut" and "closed the session" in str(caught.value)
        client.append(pcm16("one salad please"), 16000)  # a new session for the next turn
        assert await client.words(client.commit()) == "one salad please"
    finally:
        await client.aclose()
    assert len(server.sessions) == 2
