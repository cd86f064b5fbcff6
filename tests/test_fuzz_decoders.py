"""Hypothesis fuzzing of every decoder that reads bytes from outside.

WAV files, G.711 payloads, pipeline YAML, Realtime client and server
events, Twilio Media Streams messages and the gateway's HTTP bodies: for
any input each either decodes or raises the project's own error
(``PipeflowError``: ``ConfigError``, ``ProtocolError``...), never a
``KeyError``, ``RecursionError`` or ``UnicodeEncodeError`` from inside. The
Realtime server session and the Twilio translator never raise at all: bad
input becomes an error event.
"""

from __future__ import annotations

import contextlib
import json
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.audio import g711
from pipeflow.audio.wav import decode_wav
from pipeflow.config import parse_config
from pipeflow.errors import PipeflowError
from pipeflow.realtime import events as ev
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from pipeflow.server.api import AudioBody, StartBody, TextBody, _decode
from pipeflow.server.twilio_media import TwilioMediaTranslator

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
DEEP = ("[" * 5000 + "]" * 5000).encode()
DEEP_OBJECT = ('{"type":"x","a":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}").encode()


def riff(body: bytes, fmt: bytes | None = None) -> bytes:
    chunks = b""
    if fmt is not None:
        chunks += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(riff, st.binary(max_size=64),
              st.builds(struct.pack, st.just("<HHIIHH"), st.integers(0, 65535),
                        st.integers(0, 65535), st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1), st.integers(0, 65535),
                        st.integers(0, 65535))),
))
def test_wav(data: bytes) -> None:
    try:
        audio = decode_wav(data)
    except PipeflowError:
        return
    assert len(audio.pcm) % 2 == 0


@FUZZ
@given(st.binary(max_size=400))
def test_g711(data: bytes) -> None:
    for decode, encode in ((g711.ulaw_decode, g711.ulaw_encode),
                           (g711.alaw_decode, g711.alaw_encode)):
        pcm = decode(data)
        assert len(pcm) == 2 * len(data)
        assert decode(encode(pcm)) == pcm  # G.711 round-trips its own output


yaml_text = st.one_of(
    st.text(max_size=200),
    st.builds(lambda v: json.dumps({"name": "x", "stages": v}), json_values),
    st.builds(lambda t, o: f"name: n\nstages:\n  - type: {t}\n    {o}\n",
              st.text(max_size=12), st.text(max_size=30)),
)


@FUZZ
@given(yaml_text)
def test_pipeline_yaml(text: str) -> None:
    with contextlib.suppress(PipeflowError):
        parse_config(text, "fuzz.yaml", env={})


def _events(values: st.SearchStrategy) -> st.SearchStrategy:
    types = [*sorted(ev.CLIENT_EVENT_TYPES), "response.output_audio.delta", "error", "bogus"]
    return st.one_of(
        st.binary(max_size=200),
        st.builds(lambda t, body: json.dumps({"type": t, **body}).encode(), st.sampled_from(types),
                  st.dictionaries(st.sampled_from(["session", "item", "audio", "response",
                                                   "event_id", "item_id", "delta"]),
                                  values, max_size=3)),
        st.just(DEEP), st.just(DEEP_OBJECT),
    )


@FUZZ
@given(_events(json_values))
def test_realtime_events(data: bytes) -> None:
    for decode in (ev.decode_client_event, ev.decode_server_event):
        with contextlib.suppress(PipeflowError):
            decode(data)


@FUZZ
@given(st.lists(_events(json_values), min_size=1, max_size=4))
def test_the_realtime_server_session_never_raises(messages: list[bytes]) -> None:
    session = ServerSession(options=ServerOptions(speech="tones", speed=0))
    session.start(0.0)
    for i, data in enumerate(messages):
        session.receive_data(data, float(i))
    for raw in session.data_to_send(100.0, 10_000):
        msgspec.json.decode(raw)  # every event it sends is JSON


twilio_messages = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda e, body: json.dumps({"event": e, **body}),
              st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf", "x"]),
              st.dictionaries(st.sampled_from(["start", "media", "mark", "streamSid",
                                               "sequenceNumber"]), json_values, max_size=3)),
    st.just(DEEP.decode()), st.just(DEEP_OBJECT.decode()),
)


@FUZZ
@given(st.lists(twilio_messages, min_size=1, max_size=5))
def test_twilio_messages(messages: list[str | bytes]) -> None:
    translator = TwilioMediaTranslator()
    for message in messages:
        with contextlib.suppress(PipeflowError):
            translator.receive(message)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(),
                                                    json_values),
                 st.just(DEEP), st.just(DEEP_OBJECT)))
def test_http_bodies(data: bytes) -> None:
    for kind in (StartBody, AudioBody, TextBody):
        with contextlib.suppress(PipeflowError):
            _decode(data, kind, "fuzz")


@pytest.mark.parametrize("data", [DEEP, DEEP_OBJECT])
def test_deep_json_is_a_clear_error_everywhere(data: bytes) -> None:
    from pipeflow.errors import ProtocolError
    from pipeflow.server.calls import CallError

    with pytest.raises(CallError, match="The text body is not valid"):
        _decode(data, TextBody, "text")
    with pytest.raises(ProtocolError, match="Twilio sent a message"):
        TwilioMediaTranslator().receive(data)
    session = ServerSession(options=ServerOptions(speech="tones"))
    session.receive_data(data, 0.0)
    [error] = [msgspec.json.decode(x) for x in session.data_to_send(1.0)]
    assert error["type"] == "error"
