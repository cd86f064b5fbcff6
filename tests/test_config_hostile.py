"""Hostile pipeline files: each is refused with a located ConfigError, quickly, never a crash."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.config import parse_config
from pipeflow.errors import ConfigError
from pipeflow.yamlsource import MAX_BYTES, MAX_DEPTH


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_deep_nesting_is_refused_with_its_location(depth: int) -> None:
    text = "name: x\nstages:\n  - type: tone\n    extra: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "deep.yaml")
    assert str(info.value).startswith("deep.yaml:4:")
    assert f"nest more than {MAX_DEPTH} levels deep" in str(info.value)


def test_nesting_within_the_limit_still_parses() -> None:
    depth = MAX_DEPTH - 4
    text = "name: x\nstages:\n  - type: tone\n    extra: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(ConfigError, match="unknown option 'extra'"):  # parsed, then validated
        parse_config(text, "ok.yaml")


@pytest.mark.parametrize("where", ["name", "key"])
def test_a_lone_surrogate_is_refused_where_it_is(where: str) -> None:
    text = (
        'name: "\\ud800x"\nstages:\n  - type: tone\n'
        if where == "name"
        else 'name: x\n"\\udfff": 1\nstages:\n  - type: tone\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "s.yaml")
    message = str(info.value)
    # libyaml refuses the escape while scanning; the pure-Python loader lets it through
    # and the value check refuses it: either way located, in words.
    assert re.match(r"^s\.yaml:1:\d+: " if where == "name" else r"^s\.yaml:2:\d+: ", message)
    assert "lone UTF-16 surrogate" in message or "invalid Unicode character escape" in message
    message.encode("utf-8")  # the message itself prints anywhere


def test_a_huge_file_is_refused_at_once() -> None:
    text = "name: x\nstages:\n" + "  - type: tone\n" * (MAX_BYTES // 15 + 10)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^big\.yaml: the file is [\d,]+ bytes; .* at most"):
        parse_config(text, "big.yaml")
    assert time.perf_counter() - started < 1.0  # refused before PyYAML reads it


def test_many_values_without_aliases_do_not_blame_aliases() -> None:
    text = "name: x\nstages:\n  - type: tone\n    extra: [" + ",".join(["1"] * 100_001) + "]\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wide.yaml")
    assert "holds more than 100,000 values;" in str(info.value)
    assert "alias" not in str(info.value)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (".x:y", "names a relative module; write the full module path"),
        ("..x:y", "names a relative module"),
    ],
)
def test_relative_stage_references_are_refused(ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(f"stages:\n  - type: '{ref}'\n", "r.yaml")
    assert str(info.value).startswith("r.yaml:2:5: stage 1")


def test_a_stage_module_that_fails_to_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_at_import_stage.py").write_text("raise ValueError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        parse_config("stages:\n  - type: 'broken_at_import_stage:x'\n", "b.yaml")
    assert "importing module 'broken_at_import_stage'" in str(info.value)
    assert "ValueError: boom at import" in str(info.value)
    sys.modules.pop("broken_at_import_stage", None)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_inbox_size_must_be_positive(size: str) -> None:
    with pytest.raises(ConfigError, match=r"^p\.yaml:1:1: .*'inbox_size': must be >= 1"):
        parse_config(f"inbox_size: {size}\nstages:\n  - type: tone\n", "p.yaml")


@pytest.mark.parametrize("speed", ["-1", ".nan", "-.inf"])
def test_the_callers_speed_must_be_a_real_pace(speed: str) -> None:
    text = f"stages:\n  - type: caller\n    lines: [hello]\n    speed: {speed}\n"
    with pytest.raises(ConfigError, match=r"option 'speed': must be >= 0"):
        parse_config(text, "c.yaml")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        str(exc).encode("utf-8", "backslashreplace")


def test_a_lone_surrogate_is_refused_by_the_value_check_too() -> None:
    from pipeflow.yamlsource import _check_unicode

    with pytest.raises(ConfigError, match=r"^f\.yaml:3:9: the string holds '\\ud800'"):
        _check_unicode("ab\ud800", "f.yaml:3:9")
