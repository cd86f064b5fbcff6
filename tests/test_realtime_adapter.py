"""The Realtime edge of the conversation engine: server events in, client events out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pipeflow.audio import g711
from pipeflow.conversation import events as ce
from pipeflow.realtime import events as ev
from pipeflow.realtime.adapter import SAY_INSTRUCTIONS, RealtimeAdapter
from pipeflow.realtime.client import Reconnected
from pipeflow.realtime.options import EventNames
from pipeflow.realtime.protocol import RealtimeProtocol

PCM = bytes(range(256)) * 2


def decode(event: dict[str, Any]) -> Any:
    return ev.decode_server_event(json.dumps(event))


def sent(commands: list[ce.Command], adapter: RealtimeAdapter | None = None,
         protocol: RealtimeProtocol | None = None) -> list[dict[str, Any]]:
    protocol = protocol or RealtimeProtocol()
    (adapter or RealtimeAdapter()).send(commands, protocol)
    return [json.loads(data) for data in protocol.data_to_send()]


@pytest.mark.parametrize(("event", "expected"), [
    ({"type": "response.created", "response": {"id": "r1"}}, ce.ResponseBegan(response_id="r1")),
    ({"type": "response.done", "response": {"id": "r1", "status": "cancelled", "usage": {
        "total_tokens": 5, "input_token_details": {"audio_tokens": 3}}}},
     ce.ResponseEnded(response_id="r1", status="cancelled", usage={"total_tokens": 5})),
    ({"type": "response.audio_transcript.delta", "item_id": "i", "delta": "Hi "},  # beta name
     ce.TextOut(item_id="i", text="Hi ")),
    ({"type": "response.output_text.done", "item_id": "i", "text": "Hi there."},
     ce.TextOut(item_id="i", text="Hi there.", final=True)),
    ({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u",
      "transcript": "hello"}, ce.UserTranscript(item_id="u", text="hello")),
    ({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1500, "item_id": "u"},
     ce.SpeechBegan(at=1.5, item_id="u")),
    ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2100, "item_id": "u"},
     ce.SpeechEnded(at=2.1, item_id="u")),
    ({"type": "input_audio_buffer.committed", "item_id": "u"}, ce.InputCommitted(item_id="u")),
    ({"type": "output_audio_buffer.started", "response_id": "r"},
     ce.ModelNotice(event="output_audio_buffer.started", data={
         "type": "output_audio_buffer.started", "response_id": "r"})),
    ({"type": "session.updated", "session": {}}, None),
    ({"type": "rate_limits.updated", "rate_limits": []}, None),
    ({"type": "response.output_item.added", "item": {"type": "message", "id": "i"}}, None),
])
def test_server_events_become_engine_inputs(event: dict[str, Any], expected: Any) -> None:
    got = RealtimeAdapter().translate(decode(event))
    if isinstance(expected, ce.ModelNotice):
        assert isinstance(got, ce.ModelNotice) and got.event == expected.event
        assert got.data.get("response_id") == "r"
    else:
        assert got == expected


def test_audio_is_decoded_to_pcm16_at_the_output_rate() -> None:
    ulaw = g711.ulaw_encode(PCM)
    event = decode({"type": "response.output_audio.delta", "item_id": "i",
                    "delta": base64.b64encode(ulaw).decode()})
    got = RealtimeAdapter(output_format="g711_ulaw", output_rate=8000).translate(event)
    assert got == ce.AudioOut(item_id="i", pcm=g711.ulaw_decode(ulaw), sample_rate=8000)


def test_beta_function_calls_take_their_name_from_the_output_item() -> None:
    adapter = RealtimeAdapter()
    assert adapter.translate(decode({"type": "response.output_item.added", "item": {
        "id": "fc", "type": "function_call", "call_id": "c1", "name": "price"}})) is None
    got = adapter.translate(decode({"type": "response.function_call_arguments.done",
                                    "call_id": "c1", "arguments": '{"item": "tea"}'}))
    assert got == ce.ToolCalled(call_id="c1", name="price", arguments='{"item": "tea"}')
    done = adapter.translate(decode({"type": "response.output_item.done", "item": {
        "id": "fc", "type": "function_call", "call_id": "c1", "name": "price",
        "arguments": "{}"}}))
    assert done == ce.ToolCalled(call_id="c1", name="price", arguments="{}")


def test_errors_name_the_request_and_a_cancel_that_came_too_late() -> None:
    adapter = RealtimeAdapter()
    late = adapter.translate(decode({"type": "error", "event_id": "evt_9", "error": {
        "type": "invalid_request_error", "code": "response_cancel_not_active",
        "message": "Cancellation failed.", "event_id": "cl_3"}}))
    assert isinstance(late, ce.ModelError) and late.no_active_response
    assert (late.request_id, late.event_id, late.code) == ("cl_3", "cl_3",
                                                           "response_cancel_not_active")
    other = adapter.translate(decode({"type": "error", "event_id": "evt_1", "error": {
        "type": "server_error", "message": "Boom."}}))
    assert other == ce.ModelError(
        message="the model server reported an error (server_error): Boom.", code="server_error",
        error_type="server_error", event_id="evt_1")


def test_a_reconnect_marker_becomes_an_engine_input() -> None:
    got = RealtimeAdapter().translate(Reconnected(attempt=2, reason="gone"))
    assert got == ce.Reconnected(attempt=2, reason="gone")


def test_commands_become_client_events() -> None:
    events = sent([
        ce.AppendAudio(pcm=PCM, sample_rate=24000), ce.CommitAudio(),
        ce.AddMessage(text="Hi", role="user"), ce.StartResponse(request_id="pf_response_1"),
        ce.StartResponse(request_id="pf_response_2", say="Welcome."),
        ce.CancelResponse(response_id="r1"), ce.TruncateItem(item_id="i1", audio_end_ms=440),
        ce.SendToolResult(call_id="c1", output='{"ok": true}'),
    ])
    assert [e["type"] for e in events] == [
        "input_audio_buffer.append", "input_audio_buffer.commit", "conversation.item.create",
        "response.create", "response.create", "response.cancel", "conversation.item.truncate",
        "conversation.item.create"]
    assert base64.b64decode(events[0]["audio"]) == PCM
    assert events[2]["item"]["content"] == [{"type": "input_text", "text": "Hi"}]
    assert events[3] == {"type": "response.create", "event_id": "pf_response_1"}
    assert events[4]["response"] == {"instructions": SAY_INSTRUCTIONS + "Welcome.",
                                     "metadata": {"say": "Welcome."}}
    assert "response_id" not in events[5]  # the one in progress
    assert events[6] == {"type": "conversation.item.truncate", "item_id": "i1",
                         "content_index": 0, "audio_end_ms": 440}
    assert events[7]["item"] == {"type": "function_call_output", "call_id": "c1",
                                 "output": '{"ok": true}'}


def test_g711_input_is_encoded_and_renamed_events_are_kept() -> None:
    protocol = RealtimeProtocol(names=EventNames(append="audio.append"))
    [event] = sent([ce.AppendAudio(pcm=PCM, sample_rate=8000)],
                   RealtimeAdapter(input_format="g711_alaw"), protocol)
    assert event["type"] == "audio.append"
    assert base64.b64decode(event["audio"]) == g711.alaw_encode(PCM)
