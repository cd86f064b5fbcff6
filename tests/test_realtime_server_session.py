"""The local Realtime server's session object, with no sockets and a hand-driven clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.audio import g711
from pipeflow.realtime.script import Script
from pipeflow.realtime.server_faults import FaultBudget, Faults
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from tests.realtime_fixtures import TEST_SCRIPT
from tests.speech import need_tts, speech_track

NO_VAD = {"type": "session.update",
          "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}


class Wire:
    """Drives a ServerSession: client events in at a time, decoded server events out."""

    def __init__(self, script: Script = TEST_SCRIPT, **options: Any) -> None:
        options.setdefault("speed", 0)
        faults = options.pop("faults", None) or Faults()
        budget = options.pop("budget", None)
        transcriber = options.pop("transcriber", None)
        shape = options.pop("shape", "ga")
        self.session = ServerSession(script, ServerOptions(faults=faults, **options),
                                     budget=budget, transcriber=transcriber, shape=shape)
        self.session.start(0.0)

    def send(self, event: dict[str, Any] | str | bytes, at: float = 0.0) -> None:
        data = event if isinstance(event, str | bytes) else json.dumps(event)
        self.session.receive_data(data, at)

    def read(self, at: float = 0.0) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.session.data_to_send(at)]

    def say(self, text: str, at: float = 0.0) -> None:
        self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]}}, at)
        self.send({"type": "response.create"}, at)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict[str, Any]], name: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == name)


def of_type(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == name]


def test_session_created_then_update_is_applied_and_echoed_in_the_ga_shape() -> None:
    wire = Wire()
    [created] = wire.read()
    assert created["type"] == "session.created" and created["event_id"]
    assert created["session"]["type"] == "realtime"
    assert created["session"]["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    wire.send({"type": "session.update", "event_id": "ev1", "session": {
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                  "output": {"format": {"type": "audio/pcma"}, "voice": "cedar"}},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
        "tool_choice": "required", "tracing": "auto"}})
    [updated] = wire.read()
    session = updated["session"]
    assert session["instructions"] == "Be brief." and session["tool_choice"] == "required"
    assert session["audio"]["input"] == {"format": {"type": "audio/pcmu"}, "transcription": None,
                                         "noise_reduction": None, "turn_detection": None}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert session["audio"]["output"]["voice"] == "cedar" and session["tracing"] == "auto"
    assert wire.session.config.input_format == "g711_ulaw"


def test_a_beta_update_switches_the_connection_to_beta_event_names() -> None:
    need_tts()
    wire = Wire()
    wire.read()
    wire.send({"type": "session.update", "session": {
        "modalities": ["audio", "text"], "input_audio_format": "g711_alaw",
        "output_audio_format": "pcm16", "turn_detection": None, "voice": "alloy"}})
    [updated] = wire.read()
    assert updated["session"]["input_audio_format"] == "g711_alaw"
    assert updated["session"]["voice"] == "alloy" and "audio" not in updated["session"]
    wire.say("anything about the weather?")
    names = types(wire.read())
    assert "response.audio.delta" in names and "response.audio_transcript.done" in names
    assert "conversation.item.created" in names
    assert not {"response.output_audio.delta", "conversation.item.added",
                "conversation.item.done"} & set(names)


def test_greeting_is_espeak_speech_with_transcript_deltas_that_add_up() -> None:
    need_tts()
    wire = Wire()
    wire.read()
    wire.send({"type": "response.create"})
    events = wire.read()
    assert types(events)[:4] == ["response.created", "response.output_item.added",
                                 "conversation.item.added", "response.content_part.added"]
    assert types(events)[-2:] == ["response.done", "rate_limits.updated"]
    text = "Hello from the test server."
    deltas = of_type(events, "response.output_audio_transcript.delta")
    assert "".join(d["delta"] for d in deltas) == text and len(deltas) == 5
    pcm = audio_of(events)
    assert pcm == wire.session.speaker.speak(text, 24000)
    samples = np.frombuffer(pcm, dtype=np.int16)
    assert 1.0 < samples.size / 24000 < 3.0 and np.abs(samples).max() > 3000  # real speech
    done = of_type(events, "response.done")[0]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": text}]


def test_audio_is_paced_in_real_time_after_the_first_audio_delay() -> None:
    wire = Wire(speed=1.0, first_audio_delay_ms=200, chunk_ms=40, speech="tones")
    wire.read()
    wire.send({"type": "response.create"}, at=10.0)
    first = wire.read(10.0)
    assert "response.created" in types(first)
    assert not of_type(first, "response.output_audio.delta")
    assert wire.session.next_deadline() == pytest.approx(10.2)
    assert wire.session.responding
    assert len(of_type(wire.read(10.2), "response.output_audio.delta")) == 1
    assert len(of_type(wire.read(10.319), "response.output_audio.delta")) == 2  # 10.24, 10.28
    assert wire.read(10.319) == []
    rest = wire.read(100.0)
    assert types(rest)[-2:] == ["response.done", "rate_limits.updated"]
    assert not wire.session.responding


def test_speed_two_sends_audio_twice_as_fast() -> None:
    wire = Wire(speed=2.0, chunk_ms=40, speech="tones")
    wire.read()
    wire.send({"type": "response.create"}, at=0.0)
    assert len(of_type(wire.read(0.0999), "response.output_audio.delta")) == 5  # every 20 ms


def test_cancel_stops_the_audio_and_reports_a_cancelled_response() -> None:
    wire = Wire(speed=1.0, chunk_ms=40, speech="tones")
    wire.read()
    wire.send({"type": "response.create"}, at=0.0)
    sent = wire.read(0.1)
    item_id = of_type(sent, "response.output_item.added")[0]["item"]["id"]
    wire.send({"type": "response.cancel", "event_id": "c1"}, at=0.1)
    cancel = wire.read(0.1)
    assert types(cancel) == ["response.output_item.done", "conversation.item.done",
                             "response.done"]
    assert cancel[0]["item"]["status"] == "incomplete"
    done = cancel[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert wire.read(100.0) == [] and wire.session.next_deadline() is None
    assert wire.session.cancelled == [done["id"]]
    # truncate at what was played: at most the 3 chunks sent (120 ms)
    wire.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
               "audio_end_ms": 100})
    [truncated] = wire.read()
    assert truncated == {**truncated, "type": "conversation.item.truncated", "item_id": item_id,
                         "audio_end_ms": 100}
    assert wire.session.truncated == {item_id: 100}
    wire.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
               "audio_end_ms": 5000})
    [error] = wire.read()
    assert error["error"]["code"] == "invalid_value" and "shorter" in error["error"]["message"]


def test_cancel_before_anything_was_sent_still_reports_created_then_cancelled() -> None:
    wire = Wire(speech="tones")
    wire.read()
    wire.send({"type": "response.create"})
    wire.send({"type": "response.cancel"})
    assert types(wire.read()) == ["response.created", "response.done"]


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ('["a list"]', "missing_required_parameter", "type"),
        ('{"type": "response.bogus", "event_id": "e7"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append", "audio": "***", "event_id": "e7"}',
         "invalid_value", None),
        ('{"type": "conversation.item.truncate", "event_id": "e7"}', "invalid_value", None),
        ('{"type": "session.update", "session": {"colour": 1}, "event_id": "e7"}',
         "unknown_parameter", "session.colour"),
        ('{"type": "session.update", "event_id": "e7", "session": {"type": "realtime", '
         '"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}',
         "invalid_value", "session.audio.input.format.rate"),
        ('{"type": "session.update", "session": {"input_audio_format": "mp3"}, "event_id": "e7"}',
         "invalid_value", "session.input_audio_format"),
        ('{"type": "session.update", "event_id": "e7", "session": {"type": "realtime", '
         '"audio": {"input": {"turn_detection": {"type": "magic"}}}}}', "invalid_value",
         "session.audio.input.turn_detection.type"),
        ('{"type": "response.cancel", "event_id": "e7"}', "response_cancel_not_active", None),
        ('{"type": "input_audio_buffer.commit", "event_id": "e7"}',
         "input_audio_buffer_commit_empty", None),
        ('{"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, '
         '"audio_end_ms": 1, "event_id": "e7"}', "item_truncate_invalid_item_id", "item_id"),
        ('{"type": "conversation.item.delete", "item_id": "nope", "event_id": "e7"}',
         "item_delete_invalid_item_id", "item_id"),
        ('{"type": "conversation.item.create", "event_id": "e7", "item": {'
         '"type": "function_call_output", "call_id": "call_x", "output": "1"}}',
         "invalid_value", "item.call_id"),
    ],
)
def test_bad_client_events_get_an_error_event_and_the_session_goes_on(
    message: str, code: str, param: str | None
) -> None:
    wire = Wire(speech="tones")
    wire.read()
    wire.send(NO_VAD)
    wire.read()
    wire.send(message)
    [error] = wire.read()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["error"]["message"].endswith(".")
    if "e7" in message:
        assert error["error"]["event_id"] == "e7"
    wire.say("tell me about the weather")  # still answers
    assert "response.done" in types(wire.read())


def test_a_second_response_create_while_one_is_active_is_refused() -> None:
    wire = Wire(speed=1.0, speech="tones")
    wire.read()
    wire.send({"type": "response.create"})
    wire.send({"type": "response.create", "event_id": "again"})
    error = of_type(wire.read(), "error")[0]["error"]
    assert error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "again"


def test_tool_call_round_trip_fills_the_template_from_the_result() -> None:
    wire = Wire(speech="tones")
    wire.read()
    wire.say("What's the weather like?")
    first = wire.read()
    assert of_type(first, "response.output_audio_transcript.done")[0]["transcript"] == (
        "Let me check.")
    [args] = of_type(first, "response.function_call_arguments.done")
    assert args["name"] == "get_weather" and json.loads(args["arguments"]) == {"location": "Paris"}
    call_item = of_type(first, "response.output_item.done")[-1]["item"]
    assert call_item["type"] == "function_call" and call_item["call_id"] == args["call_id"]
    output = of_type(first, "response.done")[0]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    wire.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": args["call_id"],
        "output": json.dumps({"temperature": 18, "city": "Paris"})}})
    wire.send({"type": "response.create"})
    second = wire.read()
    assert types(second)[:2] == ["conversation.item.added", "conversation.item.done"]
    assert of_type(second, "response.output_audio_transcript.done")[0]["transcript"] == (
        "It is 18 degrees in Paris.")


def test_say_metadata_is_spoken_verbatim() -> None:
    wire = Wire(speech="tones")
    wire.read()
    wire.send({"type": "response.create", "response": {
        "instructions": "Say exactly...", "metadata": {"say": "Your total is {result}."}}})
    transcript = of_type(wire.read(), "response.output_audio_transcript.done")[0]["transcript"]
    assert transcript == "Your total is {result}."


def test_end_makes_later_inputs_get_the_fallback() -> None:
    wire = Wire(speech="tones")
    wire.read()
    wire.say("thanks, bye")  # the goodbye turn (no match) ends the script
    assert "Goodbye!" in json.dumps(wire.read())
    wire.say("tell me about the weather")
    transcript = of_type(wire.read(), "response.output_audio_transcript.done")[0]["transcript"]
    assert transcript == "I did not catch that."


def test_text_only_sessions_answer_with_text_deltas() -> None:
    wire = Wire()
    wire.read()
    wire.send({"type": "session.update", "session": {"type": "realtime",
                                                      "output_modalities": ["text"]}})
    wire.send({"type": "response.create"})
    events = wire.read()
    text = "".join(e["delta"] for e in of_type(events, "response.output_text.delta"))
    assert text == "Hello from the test server."
    assert not of_type(events, "response.output_audio.delta")
    assert of_type(events, "response.output_text.done")[0]["text"] == text


def vad_wire(**options: Any) -> Wire:
    need_tts()
    wire = Wire(speech="tones", **options)
    wire.read()
    return wire


def feed(wire: Wire, pcm: bytes, rate: int = 24000, start: float = 0.0,
         encode: Any = None) -> list[dict[str, Any]]:
    """Append ``pcm`` in 20 ms chunks, the clock following the audio."""
    step, events = rate // 50 * 2, []
    for i in range(0, len(pcm), step):
        chunk = pcm[i:i + step]
        payload = encode(chunk) if encode else chunk
        at = start + i / 2 / rate
        wire.send({"type": "input_audio_buffer.append",
                   "audio": base64.b64encode(payload).decode()}, at)
        events += wire.read(at)
    return events


def test_server_vad_commits_the_turn_transcribes_it_and_answers() -> None:
    wire = vad_wire()
    track = speech_track(("What is the weather like in Paris today?",), (), 24000, 0.5, 1.0)
    events = feed(wire, track.pcm)
    names = types(events)
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed",
             "conversation.item.input_audio_transcription.completed", "response.created"]
    assert [n for n in names if n in order] == order
    started = of_type(events, "input_audio_buffer.speech_started")[0]
    stopped = of_type(events, "input_audio_buffer.speech_stopped")[0]
    (begin, end), = track.segments
    assert abs(started["audio_start_ms"] / 1000 - begin) < 0.15
    assert abs(stopped["audio_end_ms"] / 1000 - end) < 0.15
    committed = of_type(events, "input_audio_buffer.committed")[0]
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    transcription = of_type(events, "conversation.item.input_audio_transcription.completed")[0]
    # no transcriber: the next turn in order, reported with its `user` text
    assert transcription["transcript"] == "What is the weather in Paris?"
    assert transcription["item_id"] == committed["item_id"]
    assert wire.session.transcripts == ["What is the weather in Paris?"]


def test_speech_during_a_response_cancels_it_as_a_barge_in() -> None:
    wire = vad_wire(speed=1.0)
    wire.send({"type": "response.create"}, at=0.0)
    wire.read(0.0)
    track = speech_track(("Stop, please wait.",), (), 24000, 0.3, 0.2)
    events = feed(wire, track.pcm, start=0.0)
    started = types(events).index("input_audio_buffer.speech_started")
    done = of_type(events, "response.done")[0]["response"]
    assert types(events).index("response.done") > started
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"


def test_g711_input_and_output() -> None:
    wire = vad_wire()
    wire.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}}}}})
    wire.read()
    track = speech_track(("I would like to order a pizza.",), (), 8000, 0.4, 1.0)
    events = feed(wire, track.pcm, rate=8000, encode=g711.ulaw_encode)
    assert of_type(events, "input_audio_buffer.committed")
    ulaw = audio_of(events)
    speech = wire.session.speaker.speak("Let me check.", 8000)
    assert len(ulaw) == len(speech) // 2  # one byte per 8 kHz sample
    assert g711.ulaw_decode(ulaw) == g711.ulaw_decode(g711.ulaw_encode(speech))


def test_a_transcriber_chooses_the_turn_by_the_callers_words() -> None:
    heard: list[tuple[int, int, str | None]] = []

    class Words:
        def transcribe(self, pcm: bytes, sample_rate: int = 24000, *,
                       expect: str | None = None) -> str:
            heard.append((len(pcm), sample_rate, expect))
            return "I want to order something"

    wire = vad_wire(transcriber=Words())
    wire.send(NO_VAD)
    wire.send({"type": "input_audio_buffer.append",
               "audio": base64.b64encode(b"\x01\x00" * 4800).decode()})
    wire.send({"type": "input_audio_buffer.commit"})
    wire.send({"type": "response.create"})
    events = wire.read()
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")[0]
    assert completed["transcript"] == "I want to order something"
    transcript = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
    assert transcript == "Sure, what would you like?"  # the 'order' turn, not the first one
    assert heard == [(9600, 24000, None)]  # the test script has no states to expect


# --- faults -----------------------------------------------------------------------------


def test_close_after_deltas_closes_mid_response_once_per_budget() -> None:
    faults = Faults(close_after_deltas=2, close_code=1011)
    budget = FaultBudget(faults)
    wire = Wire(speech="tones", faults=faults, budget=budget)
    wire.read()
    wire.send({"type": "response.create"})
    events = wire.read()
    assert types(events)[-1] == "response.output_audio.delta"
    assert len(of_type(events, "response.output_audio.delta")) == 2
    close = wire.session.close
    assert close is not None and close.code == 1011 and not close.abort
    assert wire.session.next_deadline() is None and wire.read(99.0) == []
    wire.send({"type": "response.create"})  # ignored once closing
    assert wire.read() == []
    again = Wire(speech="tones", faults=faults, budget=budget)  # the next connection
    again.read()
    again.send({"type": "response.create"})
    assert types(again.read())[-1] == "rate_limits.updated" and again.session.close is None


def test_error_after_deltas_sends_an_error_event_and_the_response_goes_on() -> None:
    wire = Wire(speech="tones", faults=Faults(error_after_deltas=1, error_code="boom"))
    wire.read()
    wire.send({"type": "response.create"})
    names = types(wire.read())
    assert names.index("error") == names.index("response.output_audio.delta") + 1
    assert names[-2:] == ["response.done", "rate_limits.updated"]


def test_stall_leaves_a_response_unfinished() -> None:
    wire = Wire(speech="tones", faults=Faults(stall_after_deltas=0))
    wire.read()
    wire.send({"type": "response.create"})
    assert types(wire.read()) == ["response.created"]
    assert wire.read(99.0) == [] and wire.session.responding


def test_reject_answers_chosen_events_with_a_server_error() -> None:
    wire = Wire(speech="tones", faults=Faults(reject=["response.create"], times=0))
    wire.read()
    for _ in range(2):
        wire.send({"type": "response.create", "event_id": "r"})
        [error] = wire.read()
        assert error["error"]["type"] == "server_error"
        assert error["error"]["event_id"] == "r"


# --- robustness ----------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
client_types = st.sampled_from(["session.update", "input_audio_buffer.append",
                                "input_audio_buffer.commit", "conversation.item.create",
                                "conversation.item.truncate", "response.create",
                                "response.cancel", "conversation.item.delete", "other"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda t, body: {**body, "type": t}, client_types,
              st.dictionaries(st.sampled_from(["session", "item", "audio", "item_id",
                                               "response", "content_index", "audio_end_ms"]),
                              json_values, max_size=3)),
), max_size=6))
def test_no_client_message_makes_the_session_raise(messages: list[Any]) -> None:
    wire = Wire(speech="tones")
    wire.read()
    for message in messages:
        data = message if isinstance(message, bytes) else msgspec.json.encode(message)
        wire.session.receive_data(data, 0.0)
        wire.read(1000.0)


@pytest.mark.parametrize("shape", ["ga", "beta"])
def test_input_text_append_is_a_user_text_message(shape: str) -> None:
    wire = Wire(shape=shape)
    wire.read()
    wire.send({"type": "input_text.append", "text": "What is the weather?", "event_id": "c1"})
    wire.send({"type": "response.create"})
    events = wire.read()
    assert not of_type(events, "error")
    added = "conversation.item.added" if shape == "ga" else "conversation.item.created"
    item = of_type(events, added)[0]["item"]
    assert (item["type"], item["role"], item["status"]) == ("message", "user", "completed")
    assert item["content"] == [{"type": "input_text", "text": "What is the weather?"}]
    calls = of_type(events, "response.function_call_arguments.done")  # the weather turn
    assert [c["call_id"] for c in calls] and json.loads(calls[0]["arguments"]) == {
        "location": "Paris"}
    assert ("name" in calls[0]) == (shape == "ga")


@pytest.mark.parametrize(("model", "usage"), [
    ("gpt-4o-transcribe", {"type": "tokens", "input_tokens": 5, "output_tokens": 6,
                           "total_tokens": 11,
                           "input_token_details": {"text_tokens": 0, "audio_tokens": 5}}),
    ("whisper-1", {"type": "duration", "seconds": 0.5}),
])
def test_input_transcripts_carry_their_usage(model: str, usage: dict[str, Any]) -> None:
    wire = Wire()
    wire.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": None, "transcription": {"model": model}}}}})
    wire.send({"type": "input_audio_buffer.append",
               "audio": base64.b64encode(bytes(24000)).decode()})  # 0.5 s
    wire.send({"type": "input_audio_buffer.commit"})
    [done] = of_type(wire.read(), "conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == "What is the weather in Paris?"  # the script's words
    assert done["usage"] == usage


def test_a_late_tool_output_after_the_caller_moved_on_is_kept_without_an_error() -> None:
    """A barge-in can start a new answer before a tool's result arrives: the API keeps
    the output in the conversation; only a call id it never announced is an error."""
    wire = Wire(speech="tones")
    wire.read()
    wire.say("What's the weather like?")
    [args] = of_type(wire.read(), "response.function_call_arguments.done")
    wire.say("Goodbye.")  # the caller moved on before the tool answered
    wire.read()
    wire.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": args["call_id"], "output": "{}"}})
    late = wire.read()
    assert "error" not in types(late)
    assert of_type(late, "conversation.item.added")[0]["item"]["call_id"] == args["call_id"]
    wire.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_never_made", "output": "{}"}})
    [error] = of_type(wire.read(), "error")
    assert error["error"]["param"] == "item.call_id"


def test_deferred_speech_waits_for_its_audio_and_a_cancel_meanwhile_drops_it() -> None:
    """With ``defer_speech`` a long reply not in the speech cache is handed out to be
    synthesised off the loop; the response goes on when its audio comes back, and one
    cancelled meanwhile sends nothing more. Short replies are spoken at once."""
    from pipeflow.audio import tts
    from pipeflow.realtime.server_responses import SPEAK_INLINE_CHARS

    long = "one two three " * (SPEAK_INLINE_CHARS // 10)
    wire = Wire(speech="tones")
    wire.session.defer_speech = True
    tts.speech_cache.clear()
    wire.read()
    wire.send({"type": "response.create", "response": {"metadata": {"say": "one two"}}})
    assert wire.session.take_speech() is None  # short: spoken inline, as before
    assert "response.done" in types(wire.read(60.0))
    wire.send({"type": "response.create", "response": {"metadata": {"say": long}}}, 61)
    assert types(wire.read(61)) == ["response.created"]
    job = wire.session.take_speech()
    assert job is not None and job.text == long and wire.session.take_speech() is None
    pcm = wire.session.speaker.speak(job.text, job.rate)
    wire.session.spoken(job, pcm, 62.0)
    events = wire.read(200.0)
    assert audio_of(events) == pcm
    assert types(events)[-2:] == ["response.done", "rate_limits.updated"]
    # a cancel while the speech is made: the late audio is dropped
    other = long.replace("one", "four")
    wire.send({"type": "response.create", "response": {"metadata": {"say": other}}}, 300)
    job = wire.session.take_speech()
    assert job is not None
    wire.send({"type": "response.cancel"}, 300.1)
    cancelled = wire.read(300.2)
    assert of_type(cancelled, "response.done")[0]["response"]["status"] == "cancelled"
    wire.session.spoken(job, wire.session.speaker.speak(job.text, job.rate), 300.3)
    assert wire.read(900.0) == [] and not wire.session.responding
