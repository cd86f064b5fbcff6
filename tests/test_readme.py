"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeflow.audio.wav import read_wav

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block(after: str, lang: str) -> str:
    """The first ``lang`` code block after the heading ``after``."""
    start = README.index(after)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no {lang} block after {after!r}"
    return match.group(1)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", *args], cwd=cwd, capture_output=True,
        text=True, timeout=120,
    )


def test_readme_yaml_pipeline_runs(tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(block("## A pipeline in YAML", "yaml"))
    assert run_cli("validate", "hello.yaml", cwd=tmp_path).returncode == 0
    proc = run_cli("run", "hello.yaml", "--set", "tone.duration_ms=200", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    audio = read_wav(tmp_path / "out" / "tone.wav")
    assert audio.sample_rate == 24000
    assert abs(len(audio.samples) - 4800) <= 480


def test_readme_custom_stage_runs_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "mystages.py").write_text(block("## A custom stage in ten lines", "python"))
    base = "\n".join(
        line for line in block("## A pipeline in YAML", "yaml").splitlines()
    ).replace("  - type: resample", "  - type: mystages:gain\n    db: 6\n  - type: resample")
    base = base.replace("duration_ms: 1000", "duration_ms: 200\n    amplitude: 0.1")
    (tmp_path / "gain.yaml").write_text(base)
    (tmp_path / "plain.yaml").write_text(base.replace("db: 6", "db: 0"))
    for name in ("gain", "plain"):
        proc = run_cli("run", f"{name}.yaml", "--set", f"wav_sink.path={name}.wav",
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    loud = read_wav(tmp_path / "out" / "gain.wav").samples.astype(float)
    quiet = read_wav(tmp_path / "out" / "plain.wav").samples.astype(float)
    ratio = np.sqrt(np.mean(loud**2) / np.mean(quiet**2))
    assert abs(ratio - 10 ** (6 / 20)) < 0.05


def test_readme_python_embedding_runs(tmp_path: Path) -> None:
    code = block("The same pipeline from Python", "python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "RunResult" in proc.stdout
    assert read_wav(tmp_path / "out" / "tone.wav").sample_rate == 24000


def test_readme_tool_has_a_schema() -> None:
    namespace: dict[str, object] = {}
    exec(block("## A tool in five lines", "python"), namespace)
    tool = namespace["add_numbers"]
    [schema] = __import__("pipeflow.tools", fromlist=["ToolSet"]).ToolSet([tool]).to_openai_format(
        "realtime"
    )
    assert schema["name"] == "add_numbers"
    assert schema["parameters"]["properties"]["a"]["description"] == "first"
    assert tool(2, 3) == 5  # type: ignore[operator]


def test_readme_agent_with_two_tools_in_python_calls_a_tool() -> None:
    code = block("## An agent with two tools", "python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    first, *transcript = proc.stdout.splitlines()
    assert first == "Two plus three is 5.0."
    assert transcript == ["user: What is 2 plus 3?", "agent: Two plus three is 5.0."]


def test_readme_agent_with_two_tools_in_yaml_chats(tmp_path: Path) -> None:
    path = tmp_path / "weather.yaml"
    path.write_text(block("## An agent with two tools", "yaml"))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "chat", str(path), "-o", str(tmp_path)],
        cwd=ROOT, input="What is 2 plus 3?\nWhat is the weather?\n", capture_output=True,
        text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert 'tool add_numbers({"a":2,"b":3})' in out
    assert "agent Two plus three is 5.0." in out
    assert 'tool get_weather({"location":"Paris, France"})' in out
    assert out.index("add_numbers") < out.index("get_weather")
