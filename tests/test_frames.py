"""Every frame round-trips through JSON and msgpack unchanged."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow import frames as F

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    if tp is bytes:
        return st.binary(max_size=64)
    if tp is str:
        return st.text(max_size=30)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**63), 2**63 - 1)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is dict:
        _, value = typing.get_args(tp)
        return st.dictionaries(st.text(max_size=8), strategy_for(value), max_size=4)
    if tp is Any:
        return json_values
    raise NotImplementedError(f"no strategy for {tp!r}")


def frame_strategy(cls: type[F.Frame]) -> st.SearchStrategy[F.Frame]:
    fields = {f.name: strategy_for(f.type) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


all_frames = st.one_of(*(frame_strategy(cls) for cls in F.FRAME_TYPES))


def test_every_family_is_in_the_union() -> None:
    names = {cls.__name__ for cls in F.FRAME_TYPES}
    for expected in (
        "AudioFrame",
        "TextInput",
        "Transcript",
        "SpeechStarted",
        "SpeechStopped",
        "TurnCommitted",
        "ResponseStarted",
        "ResponseDone",
        "Interrupt",
        "ToolCall",
        "ToolResult",
        "SessionStarted",
        "SessionEnded",
        "ErrorFrame",
        "Metric",
        "EndOfStream",
    ):
        assert expected in names


@settings(max_examples=300)
@given(all_frames)
def test_json_round_trip(frame: F.Frame) -> None:
    assert F.decode_json(F.encode_json(frame)) == frame


@settings(max_examples=300)
@given(all_frames)
def test_msgpack_round_trip(frame: F.Frame) -> None:
    assert F.decode_msgpack(F.encode_msgpack(frame)) == frame


def test_tag_names_the_type_in_json() -> None:
    data = F.encode_json(F.ToolCall(call_id="c1", name="add", arguments='{"a":1}'))
    assert data.startswith(b'{"type":"tool_call"')


def test_frames_are_frozen() -> None:
    frame = F.AudioFrame(pcm=b"\0\0", sample_rate=16000)
    with pytest.raises(AttributeError):
        frame.sample_rate = 8000  # type: ignore[misc]


def test_audio_duration() -> None:
    frame = F.AudioFrame(pcm=b"\0\0" * 320, sample_rate=16000)
    assert frame.samples == 320
    assert frame.duration == pytest.approx(0.02)


def test_decoding_garbage_raises_msgspec_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        F.decode_json(b'{"type":"nope"}')


def test_urgent_frames() -> None:
    assert F.Interrupt.urgent
    assert not F.AudioFrame.urgent
