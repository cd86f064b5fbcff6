"""WorkerOptions: file < environment < flags, reference keys, clear errors, hidden secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.errors import ConfigError
from pipeflow.worker.options import WorkerOptions, load_options, option_sources


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    options = load_options(env={})
    assert options == WorkerOptions()
    assert options.queue_url == "memory://" and options.max_jobs == 10


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    file = write(tmp_path, "w.yaml", "agent_name: from-file\nmax_jobs: 2\ndrain_timeout: 5\n")
    env = {"PIPEFLOW_MAX_JOBS": "4", "PIPEFLOW_AGENT_NAME": "from-env"}
    options = load_options(file, env=env, flags={"agent_name": "from-flag", "max_jobs": None})
    assert options.agent_name == "from-flag"  # flag beats env and file
    assert options.max_jobs == 4  # env beats file; a None flag was not given
    assert options.drain_timeout == 5.0  # only the file set it
    sources = option_sources(file, env=env, flags={"agent_name": "x"})
    assert sources["max_jobs"][1] == "environment variable PIPEFLOW_MAX_JOBS"
    assert sources["drain_timeout"][1] == f"{file}: key 'drain_timeout'"


def test_reference_keys_in_a_json_file(tmp_path: Path) -> None:
    reference = {
        "agent_name": "voice_assistant",
        "server_url": "ws://localhost:7880",
        "api_key": "key-123",
        "api_secret": "secret-456",
        "max_jobs": 5,
        "log_level": "warn",
        "timeout": 300000,
    }
    options = load_options(write(tmp_path, "ref.json", json.dumps(reference)), env={})
    assert options.agent_name == "voice_assistant"
    assert options.server_url == "ws://localhost:7880"
    assert options.max_jobs == 5
    assert options.log_level == "warning"
    assert options.job_timeout == 300.0  # milliseconds in the reference, seconds here
    assert options.secrets == {"api_key": "key-123", "api_secret": "secret-456"}


def test_reference_environment_names_lose_to_pipeflow_names() -> None:
    env = {
        "LIVEKIT_URL": "ws://ref:7880",
        "LIVEKIT_API_KEY": "ref-key",
        "REDIS_URL": "redis://ref:6379/0",
        "PIPEFLOW_QUEUE_URL": "redis://ours:6379/1",
    }
    options = load_options(env=env)
    assert options.server_url == "ws://ref:7880"
    assert options.api_key == "ref-key"
    assert options.queue_url == "redis://ours:6379/1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_jobs: 0\n", r"w.yaml: key 'max_jobs': expected int >= 1, got 0"),
        ("max_jobs: ten\n", r"w.yaml: key 'max_jobs': expected int, got 'ten'"),
        ("load_threshold: 1.5\n", r"key 'load_threshold': expected float <= 1.0, got 1.5"),
        ("log_level: loud\n", r"key 'log_level': expected one of debug, .*, got 'loud'"),
        ("max_job: 3\n", r"w.yaml: unknown option 'max_job' \(did you mean 'max_jobs'\?\)"),
        ("- a\n- b\n", r"w.yaml: a worker config file must be a mapping"),
        ("max_jobs: [3\n", r"w.yaml:2:1: invalid YAML"),
        ("timeout: -5\n", r"key 'timeout': expected float >= 0"),
        ("queue_url: amqp://q\n", r"w.yaml: key 'queue_url': unsupported queue URL scheme 'amqp'"),
    ],
)
def test_bad_file_values_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_options(write(tmp_path, "w.yaml", text), env={})


def test_bad_env_and_flag_values_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable PIPEFLOW_JOB_TIMEOUT: expected"):
        load_options(env={"PIPEFLOW_JOB_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="--health-port: expected int <= 65535, got '70000'"):
        load_options(env={}, flags={"health_port": "70000"})
    with pytest.raises(ConfigError, match="worker config file not found"):
        load_options(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match=r"ref.json:1:\d+: invalid JSON"):
        load_options(write(tmp_path, "ref.json", "{max_jobs: 1}"), env={})


def test_health_port_can_be_turned_off() -> None:
    assert load_options(env={}, flags={"health_port": "off"}).health_port is None
    assert load_options(env={"PIPEFLOW_HEALTH_PORT": "0"}).health_port == 0


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    file = write(tmp_path, "w.yaml", "api_key: sk-live-abc\napi_secret: hush\n")
    options = load_options(file, env={"PIPEFLOW_QUEUE_URL": "redis://user:pa55@db:6379/0"})
    for text in (repr(options), str(options), json.dumps(options.redacted())):
        assert "sk-live-abc" not in text and "hush" not in text and "pa55" not in text
    assert "redis://user:***@db:6379/0" in repr(options)
    with pytest.raises(ConfigError) as info:
        load_options(write(tmp_path, "bad.yaml", "api_key: [not, a, string]\n"), env={})
    assert "not" not in str(info.value).split("got", 1)[1]
    with pytest.raises(ConfigError, match="key 'queue_url'") as info:
        load_options(write(tmp_path, "q.yaml", "queue_url: amqp://bob:pa55@mq\n"), env={})
    assert "pa55" not in str(info.value) and "bob:***@mq" in str(info.value)


@given(
    file_value=st.one_of(st.none(), st.integers(1, 50)),
    env_value=st.one_of(st.none(), st.integers(1, 50)),
    flag_value=st.one_of(st.none(), st.integers(1, 50)),
)
def test_the_latest_source_that_sets_a_value_wins(
    tmp_path_factory: pytest.TempPathFactory,
    file_value: int | None,
    env_value: int | None,
    flag_value: int | None,
) -> None:
    folder = tmp_path_factory.mktemp("opts")
    file = None
    if file_value is not None:
        file = write(folder, "w.yaml", f"max_jobs: {file_value}\n")
    env = {} if env_value is None else {"PIPEFLOW_MAX_JOBS": str(env_value)}
    options = load_options(file, env=env, flags={"max_jobs": flag_value})
    expected = next((v for v in (flag_value, env_value, file_value) if v is not None), 10)
    assert options.max_jobs == expected
