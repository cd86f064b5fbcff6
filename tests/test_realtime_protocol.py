"""The sans-I/O Realtime protocol: events, session shapes, builders, decoding fuzz."""

from __future__ import annotations

import base64
import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.errors import ProtocolError
from pipeflow.realtime import events as ev
from pipeflow.realtime.options import EventNames, RealtimeOptions, connect_url, resolve_url
from pipeflow.realtime.protocol import RealtimeProtocol, SessionConfig, redact, session_payload


def _sent(protocol: RealtimeProtocol) -> list[dict]:
    return [json.loads(data) for data in protocol.data_to_send()]


# --- decoding: GA and beta names --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("response.output_audio.delta", ev.OutputAudioDelta),
        ("response.audio.delta", ev.OutputAudioDelta),
        ("response.output_audio_transcript.delta", ev.OutputAudioTranscriptDelta),
        ("response.audio_transcript.delta", ev.OutputAudioTranscriptDelta),
        ("response.output_text.delta", ev.OutputTextDelta),
        ("response.text.delta", ev.OutputTextDelta),
    ],
)
def test_delta_events_decode_under_ga_and_beta_names(name: str, cls: type) -> None:
    payload = base64.b64encode(b"\x01\x02").decode() if "audio.delta" in name else "hi"
    protocol = RealtimeProtocol()
    protocol.receive_data(json.dumps(
        {"type": name, "event_id": "e1", "response_id": "r1", "item_id": "i1",
         "output_index": 0, "content_index": 0, "delta": payload}
    ))
    [event] = protocol.events_received()
    assert isinstance(event, cls)
    assert event.item_id == "i1"
    assert event.delta == (b"\x01\x02" if "audio.delta" in name else "hi")
    assert protocol.events_received() == []  # handed over and reset


def test_transcript_done_and_text_done_under_both_names() -> None:
    for name, field, cls in [
        ("response.output_audio_transcript.done", "transcript", ev.OutputAudioTranscriptDone),
        ("response.audio_transcript.done", "transcript", ev.OutputAudioTranscriptDone),
        ("response.output_text.done", "text", ev.OutputTextDone),
        ("response.text.done", "text", ev.OutputTextDone),
    ]:
        event = ev.decode_server_event(json.dumps({"type": name, field: "all of it"}))
        assert isinstance(event, cls)
        assert getattr(event, field) == "all of it"


def test_session_is_tracked_and_response_events_pass_through() -> None:
    protocol = RealtimeProtocol()
    protocol.receive_data('{"type":"session.created","session":{"type":"realtime"}}')
    assert not protocol.session_ready
    protocol.receive_data('{"type":"session.updated","session":{"instructions":"x"}}')
    assert protocol.session_ready and protocol.session == {"instructions": "x"}
    protocol.receive_data(
        '{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}'
    )
    protocol.receive_data(
        '{"type":"response.done","response":{"id":"resp_1","status":"cancelled",'
        '"usage":{"total_tokens":7,"input_token_details":{"audio_tokens":3}}}}'
    )
    events = protocol.events_received()
    assert [type(e) for e in events] == [
        ev.SessionCreated, ev.SessionUpdated, ev.ResponseCreated, ev.ResponseDone
    ]
    done = events[-1]
    assert done.response.status == "cancelled"
    assert done.response.usage["total_tokens"] == 7
    protocol.connection_lost()
    assert not protocol.session_ready


def test_function_call_and_items_decode() -> None:
    protocol = RealtimeProtocol()
    protocol.receive_data(json.dumps({
        "type": "response.output_item.added", "response_id": "r", "output_index": 0,
        "item": {"id": "item_1", "type": "function_call", "call_id": "call_1",
                 "name": "price", "arguments": ""},
    }))
    protocol.receive_data(json.dumps({
        "type": "response.function_call_arguments.done", "response_id": "r",
        "item_id": "item_1", "output_index": 0, "call_id": "call_1", "name": "price",
        "arguments": '{"item": "pizza"}',
    }))
    added, done = protocol.events_received()
    assert added.item.type == "function_call" and added.item.name == "price"
    assert done.call_id == "call_1" and json.loads(done.arguments) == {"item": "pizza"}


def test_error_event_carries_type_code_message_and_event_id() -> None:
    event = ev.decode_server_event(json.dumps({
        "type": "error", "event_id": "evt_9",
        "error": {"type": "invalid_request_error", "code": "unknown_event",
                  "message": "The event type is not known.", "param": None,
                  "event_id": "pf_response_1"},
    }))
    assert isinstance(event, ev.ErrorEvent)
    assert (event.error.type, event.error.code, event.error.event_id) == (
        "invalid_request_error", "unknown_event", "pf_response_1"
    )
    assert event.error.message == "The event type is not known."


def test_unknown_server_events_pass_through_whole() -> None:
    event = ev.decode_server_event('{"type":"output_audio_buffer.started","response_id":"r"}')
    assert isinstance(event, ev.UnknownEvent)
    assert event.type == "output_audio_buffer.started"
    assert event.data == {"type": "output_audio_buffer.started", "response_id": "r"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"no_type": 1}',
        b'{"type": 5}',
        b'{"type": "response.output_audio.delta", "delta": "%%%not base64"}',
        b'{"type": "response.done", "response": []}',
        b"\xff\xfe",
        "\ud800",  # a lone surrogate: not encodable as UTF-8
        '{"type": "\udfff"}',
        b'{"type":"session.updated","session":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"type":"response.done","response":{"usage":{"x":1e999}}}',
    ],
)
def test_malformed_server_data_is_a_protocol_error(data: bytes | str) -> None:
    protocol = RealtimeProtocol()
    with pytest.raises(ProtocolError):
        protocol.receive_data(data)
    assert protocol.events_received() == []
    protocol.receive_data('{"type":"session.updated","session":{}}')  # still usable
    assert protocol.session_ready


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(ev.SERVER_EVENT_TYPES)) | st.text(max_size=12)},
    optional={
        "delta": _json, "item": _json, "response": _json, "error": _json,
        "item_id": _json, "session": _json, "transcript": _json, "event_id": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json.map(json.dumps), _event_like.map(json.dumps)))
def test_decoder_raises_nothing_but_protocol_error_on_any_json(text: str) -> None:
    try:
        event = ev.decode_server_event(text)
    except ProtocolError:
        return
    assert isinstance(event, ev.ServerEvent | ev.UnknownEvent)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(st.characters(exclude_categories=()), max_size=64))
def test_decoder_raises_nothing_but_protocol_error_on_any_bytes(data: bytes | str) -> None:
    for decode in (ev.decode_server_event, ev.decode_client_event):
        with contextlib.suppress(ProtocolError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_append_round_trips_any_audio(pcm: bytes) -> None:
    protocol = RealtimeProtocol()
    data = protocol.append_audio(pcm)
    event = ev.decode_client_event(data)
    assert isinstance(event, ev.InputAudioBufferAppend) and event.audio == pcm
    assert json.loads(data)["audio"] == base64.b64encode(pcm).decode()


def test_client_decoder_rejects_unknown_and_malformed_events() -> None:
    with pytest.raises(ProtocolError, match=r"unknown client event type 'foo\.bar'"):
        ev.decode_client_event('{"type":"foo.bar"}')
    with pytest.raises(ProtocolError, match=r"conversation\.item\.truncate"):
        ev.decode_client_event('{"type":"conversation.item.truncate","item_id":3}')


# --- session.update in both shapes --------------------------------------------------

TOOL = {"type": "function", "name": "price", "description": "Price of an item.",
        "parameters": {"type": "object", "properties": {"item": {"type": "string"}}}}


def test_ga_session_update_shape() -> None:
    config = SessionConfig(instructions="Be brief.", voice="marin", tools=[TOOL],
                           tool_choice="auto", turn_detection="server_vad",
                           transcription_model="gpt-4o-mini-transcribe")
    session = session_payload(config, "ga")
    assert session["type"] == "realtime"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["tools"] == [TOOL] and session["tool_choice"] == "auto"
    assert "input_audio_format" not in session


@pytest.mark.parametrize(
    ("fmt", "ga"),
    [("pcm16", {"type": "audio/pcm", "rate": 24000}), ("g711_ulaw", {"type": "audio/pcmu"}),
     ("g711_alaw", {"type": "audio/pcma"})],
)
def test_audio_formats_in_both_shapes(fmt: str, ga: dict) -> None:
    config = SessionConfig(input_format=fmt, output_format=fmt, turn_detection="semantic_vad")
    audio = session_payload(config, "ga")["audio"]
    assert audio["input"]["format"] == ga and audio["output"]["format"] == ga
    assert audio["input"]["turn_detection"] == {"type": "semantic_vad"}
    beta = session_payload(config, "beta")
    assert beta["input_audio_format"] == fmt and beta["output_audio_format"] == fmt
    assert beta["turn_detection"] == {"type": "semantic_vad"}


@pytest.mark.parametrize(
    ("kind", "wire"),
    [("none", None), ("server_vad", {"type": "server_vad"}),
     ("semantic_vad", {"type": "semantic_vad"})],
)
def test_turn_detection_variants_in_both_shapes(kind: str, wire: dict | None) -> None:
    config = SessionConfig(turn_detection=kind)
    ga = session_payload(config, "ga")
    audio_in = ga["audio"]["input"]
    assert "turn_detection" in audio_in and audio_in["turn_detection"] == wire
    assert "turn_detection" not in ga  # GA nests it under audio.input
    assert session_payload(config, "beta")["turn_detection"] == wire


def test_session_payloads_do_not_share_state() -> None:
    first = session_payload(SessionConfig(), "ga")
    first["audio"]["input"]["format"]["rate"] = 16000  # a caller editing its copy
    assert session_payload(SessionConfig(), "ga")["audio"]["input"]["format"]["rate"] == 24000


def test_beta_session_update_is_flat_and_turn_detection_none_is_null() -> None:
    protocol = RealtimeProtocol("beta")
    protocol.update_session(SessionConfig(instructions="Hi", voice="alloy", tools=[TOOL],
                                          tool_choice="price"))
    [sent] = _sent(protocol)
    assert sent["type"] == "session.update"
    session = sent["session"]
    assert session["voice"] == "alloy" and session["turn_detection"] is None
    assert session["input_audio_format"] == "pcm16"
    assert session["tool_choice"] == {"type": "function", "name": "price"}
    assert "audio" not in session and "type" not in session


# --- client event builders --------------------------------------------------------


def test_builders_queue_events_in_order_and_return_their_encoding() -> None:
    protocol = RealtimeProtocol()
    first = protocol.append_audio(b"\x00\x01")
    protocol.commit()
    protocol.create_text_item("What does a pizza cost?")
    protocol.create_function_output("call_1", '{"price": 9}')
    protocol.create_response(event_id="pf_1")
    protocol.cancel_response()
    protocol.truncate("item_7", 1234)
    out = protocol.data_to_send()
    assert out[0] == first
    assert protocol.data_to_send() == []
    sent = [json.loads(d) for d in out]
    assert [s["type"] for s in sent] == [
        "input_audio_buffer.append", "input_audio_buffer.commit", "conversation.item.create",
        "conversation.item.create", "response.create", "response.cancel",
        "conversation.item.truncate",
    ]
    assert sent[2]["item"] == {"type": "message", "role": "user",
                               "content": [{"type": "input_text",
                                            "text": "What does a pizza cost?"}]}
    assert sent[3]["item"] == {"type": "function_call_output", "call_id": "call_1",
                               "output": '{"price": 9}'}
    assert sent[4] == {"type": "response.create", "event_id": "pf_1"}
    assert sent[6] == {"type": "conversation.item.truncate", "item_id": "item_7",
                       "content_index": 0, "audio_end_ms": 1234}
    for data in out:  # what we send, a server decodes
        assert isinstance(ev.decode_client_event(data), ev.ClientEvent)


def test_client_event_names_are_configurable() -> None:
    names = EventNames(append="audio.append", commit="audio.commit",
                       item_create="item.add", response_create="reply",
                       response_cancel="reply.stop", item_truncate="item.cut")
    protocol = RealtimeProtocol(names=names)
    protocol.append_audio(b"\x01\x00")
    protocol.commit()
    protocol.create_text_item("hi")
    protocol.create_response()
    protocol.cancel_response()
    protocol.truncate("i", 5)
    sent = _sent(protocol)
    assert [s["type"] for s in sent] == [
        "audio.append", "audio.commit", "item.add", "reply", "reply.stop", "item.cut"
    ]
    assert sent[0]["audio"] == base64.b64encode(b"\x01\x00").decode()


# --- options, URLs and logging ------------------------------------------------------


def test_url_and_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OAI_REALTIME_URL", "OPENAI_API_KEY", "OAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_url(RealtimeOptions()) is None  # the local server
    monkeypatch.setenv("OAI_API_KEY", "sk-test")
    assert resolve_url(RealtimeOptions()) == "wss://api.openai.com/v1/realtime"
    monkeypatch.setenv("OAI_REALTIME_URL", "ws://127.0.0.1:9/v1/realtime")
    assert resolve_url(RealtimeOptions()) == "ws://127.0.0.1:9/v1/realtime"
    assert resolve_url(RealtimeOptions(url="wss://x/y")) == "wss://x/y"
    with pytest.raises(Exception, match="ws:// or wss://"):
        resolve_url(RealtimeOptions(url="http://x"))
    assert connect_url("ws://h/v1/realtime", "gpt-realtime") == (
        "ws://h/v1/realtime?model=gpt-realtime"
    )
    assert connect_url("ws://h/v1/realtime?model=m&shape=beta", "x") == (
        "ws://h/v1/realtime?model=m&shape=beta"
    )


def test_options_repr_hides_the_key_and_rates_follow_formats() -> None:
    options = RealtimeOptions(api_key="sk-very-secret", input_format="g711_ulaw")
    assert "sk-very-secret" not in repr(options)
    assert options.input_rate == 8000 and options.output_rate == 24000
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"shape": "gamma"}, RealtimeOptions)


def test_redact_hides_audio_and_secrets() -> None:
    append = RealtimeProtocol().append_audio(b"\x00" * 960)
    text = redact(append)
    assert "AAAA" not in text and "<1280 base64 chars>" in text
    delta = redact(json.dumps({"type": "response.output_audio.delta", "delta": "QUJD"}))
    assert "QUJD" not in delta
    transcript = redact(json.dumps({"type": "response.output_audio_transcript.delta",
                                    "delta": "hello"}))
    assert "hello" in transcript  # text deltas are kept
    secret = redact(json.dumps({"type": "session.update",
                                "session": {"api_key": "sk-1",
                                            "client_secret": {"value": "ek_2", "expires_at": 9}},
                                "usage": {"input_token_details": {"audio_tokens": 3}}}))
    assert "sk-1" not in secret
    assert "ek_2" not in secret and '"expires_at":9' in secret  # nested secrets too
    assert '"audio_tokens":3' in secret  # numbers under *token* keys are not secrets
    assert redact(b"\xff") == "<1 bytes, not JSON>"


def test_user_text_as_the_input_text_append_alias() -> None:
    protocol = RealtimeProtocol(names=EventNames(text="input_text.append"))
    protocol.create_text_item("What does a pizza cost?")
    protocol.create_text_item("Be brief.", role="system")  # no alias: a message item
    protocol.create_function_output("call_1", "{}")
    sent = _sent(protocol)
    assert sent[0] == {"type": "input_text.append", "text": "What does a pizza cost?"}
    assert sent[1]["type"] == "conversation.item.create"
    assert sent[1]["item"]["role"] == "system"
    assert sent[2]["type"] == "conversation.item.create"
    with pytest.raises(msgspec.ValidationError, match=r"events\.text"):
        msgspec.convert({"events": {"text": "text.add"}}, RealtimeOptions)
