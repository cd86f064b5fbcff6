"""``pipeflow validate`` reports every mistake of a file, each at its line and column,
and model slots are checked against what the transport serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeflow import Agent
from pipeflow.config import parse_config
from pipeflow.errors import ConfigError, ConfigErrors

MANY = """\
name: many
agent:
  instructions: hi
  voise: alloy
  llm: anthropic/claude-sonnet
  tts: {voice: elevenlabs/rachel}
  tools:
    - pipeflow.examples.weather:get_weather
    - nosuch_mod_xyz:thing
    - pipeflow.examples.weather:get_wether
  callbacks:
    tool_caled: pipeflow.examples.weather:add_numbers
stages:
  - type: tone
    frequncy: 440
    sample_rate: -3
  - type: resampel
  - type: wav_sink
    realtime: maybe
  - type: log
    id: a
  - type: log
    id: a
"""

EXPECTED = [
    ("4:3", "unknown field 'voise' (did you mean 'voice'?)"),
    ("5:3", "agent.llm: 'anthropic/claude-sonnet' asks for provider 'anthropic'"),
    ("6:9", "agent.tts: 'elevenlabs/rachel' asks for provider 'elevenlabs'"),
    ("9:7", "agent.tools[1]: tool reference 'nosuch_mod_xyz:thing': no module named"),
    ("10:7", "agent.tools[2]: tool reference 'pipeflow.examples.weather:get_wether'"),
    ("12:5", "agent.callbacks.tool_caled: unknown event 'tool_caled'"),
    ("15:5", "stage 1 (tone): unknown option 'frequncy' (did you mean 'frequency'?)"),
    ("16:5", "stage 1 (tone), option 'sample_rate': must be >= 1, got -3"),
    ("17:5", "stage 2 (resampel): unknown stage type 'resampel'"),
    ("18:5", "stage 3 (wav_sink): missing required option 'path'"),
    ("19:5", "stage 3 (wav_sink), option 'realtime': expected bool, got str"),
    ("22:5", "stage id 'a' is used twice"),
]


def test_parse_reports_every_error_in_file_order() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(MANY, "many.yaml")
    errors = info.value.errors
    assert len(errors) == len(EXPECTED), "\n".join(map(str, errors))
    for error, (where, text) in zip(errors, EXPECTED, strict=True):
        assert error.location == f"many.yaml:{where}", str(error)
        assert text in str(error)


def test_validate_prints_every_error_with_file_line_column(tmp_path: Path) -> None:
    (tmp_path / "many.yaml").write_text(MANY)
    proc = subprocess.run([sys.executable, "-m", "pipeflow.cli", "validate", "many.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"error many.yaml:{where}" for where, _ in EXPECTED
    ], proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_one_error_is_still_a_plain_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("stages:\n  - type: tone\n    frequncy: 3\n", "one.yaml")
    assert not isinstance(info.value, ConfigErrors)
    assert info.value.location == "one.yaml:3:5"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"llm": "anthropic/claude-sonnet"}, "supported Realtime models: gpt-realtime"),
    ({"llm": "gpt-4o"}, "'gpt-4o' is not a Realtime model"),
    ({"tts": "elevenlabs/rachel"}, "supported Realtime voices: alloy"),
    ({"tts": {"voice": "rachel"}}, "supported: alloy, ash"),
    ({"stt": "deepgram/nova-3"}, "supported transcription models: gpt-4o-mini-transcribe"),
])
def test_python_agent_slots_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Agent("hi", **kwargs)  # type: ignore[arg-type]


def test_supported_slot_names_pass_with_or_without_the_provider() -> None:
    agent = Agent("hi", llm="openai/gpt-realtime-2025-08-28", tts="openai/marin",
                  stt="whisper-1")
    assert (agent.model, agent.voice, agent.transcription_model) == (
        "gpt-realtime-2025-08-28", "marin", "whisper-1")


def test_run_refuses_a_slot_the_transport_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "agent:\n  tts: elevenlabs/rachel\nstages:\n  - type: tone\n    duration_ms: 20\n"
        "  - type: realtime\n"
    )
    proc = subprocess.run([sys.executable, "-m", "pipeflow.cli", "run", "a.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "a.yaml:2:3: agent.tts: 'elevenlabs/rachel'" in proc.stderr


def test_raw_model_and_voice_fields_refuse_another_provider(tmp_path: Path) -> None:

    from pipeflow import Agent
    from pipeflow.config import load_config
    from pipeflow.errors import ConfigError

    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nagent:\n  instructions: hi\n  model: anthropic/claude-sonnet\n"
        "  voice: elevenlabs/rachel\nstages:\n  - type: realtime\n"
        "    model: anthropic/claude-sonnet\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:4:3: agent.model: 'anthropic/claude-sonnet' asks for provider" in message
    assert f"{path}:5:3: agent.voice: 'elevenlabs/rachel'" in message
    assert f"{path}:7:5: stage 1 (realtime): option 'model': 'anthropic/claude-sonnet'" in message
    assert "supported Realtime models: gpt-realtime" in message
    with pytest.raises(ConfigError, match=r"agent\.model: 'anthropic/x' asks for provider"):
        Agent("hi", model="anthropic/x")
    # A name passed through as is (a dated model, a deployment, a compatible server's) is fine.
    assert Agent("hi", model="my-deployment", voice="openai/marin").model == "my-deployment"
