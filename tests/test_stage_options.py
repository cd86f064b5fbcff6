"""Stages built in Python check their options exactly as a pipeline file does."""

from __future__ import annotations

import msgspec
import pytest

from pipeflow import Frames, stage
from pipeflow.config import parse_config
from pipeflow.errors import ConfigError
from pipeflow.registry import registry
from pipeflow.stages.sources import ToneOptions, ToneSource


def test_an_out_of_range_option_is_refused_naming_the_stage_and_the_option() -> None:
    with pytest.raises(ConfigError) as caught:
        ToneSource(amplitude=5.0)
    assert str(caught.value) == "stage tone, option 'amplitude': must be <= 1.0, got 5.0"


def test_an_options_struct_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"stage tone, option 'amplitude': must be <= 1\.0"):
        ToneSource(ToneOptions(amplitude=5.0))
    assert ToneSource(ToneOptions(amplitude=0.5)).options.amplitude == 0.5


@pytest.mark.parametrize(("option", "value"), [
    ("amplitude", 5.0),             # a bound
    ("frequency", "loud"),          # a type
    ("sample_rate", 0),             # a shared range type
    ("amplitud", 0.5),              # an unknown name, with a suggestion
])
def test_python_and_yaml_say_the_same_thing(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as from_python:
        ToneSource(**{option: value})
    text = f"stages:\n  - type: tone\n    {option}: {msgspec.json.encode(value).decode()}\n"
    with pytest.raises(ConfigError) as from_yaml:
        parse_config(text, "p.yaml")
    # The file's message is located ("p.yaml:3:5: stage 1 (tone), ...") and numbers the
    # stage; what is wrong reads the same.
    python_text = str(from_python.value).split(": ", 1)[1]
    assert str(from_yaml.value).endswith(python_text), (from_python.value, from_yaml.value)


def test_a_choice_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match="invalid value 'agnt' \\(did you mean 'agent'\\?\\); "
                                          "valid values: agent, all"):
        registry.resolve("null")(source="agnt")


def test_every_built_in_stage_checks_its_keyword_options() -> None:
    built_in = {n: c for n, c in registry.all().items() if c.__module__.startswith("pipeflow.")}
    assert len(built_in) >= 20
    for name, cls in built_in.items():
        with pytest.raises(ConfigError, match=f"stage {name}, option 'no_such_option'|"
                                              f"stage {name}: unknown option 'no_such_option'"):
            cls(no_such_option=1)


class GainOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    db: float = 6.0
    clip: bool = True


@stage()  # no short name: the registry of built-in names stays as it is
async def checked_gain(frames: Frames, options: GainOptions) -> Frames:
    async for frame in frames:
        yield frame


def test_a_function_stage_checks_its_options() -> None:
    with pytest.raises(ConfigError, match=r"stage tests\.test_stage_options:checked_gain, "
                                          "option 'clip': expected bool, got str"):
        checked_gain(clip="yes")
    assert checked_gain(db=3).options == GainOptions(db=3.0)
