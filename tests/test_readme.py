"""The README's examples run as written, from a folder outside the repository.

Every fenced code block of README.md is collected; each has a runner here that
writes it into a temporary folder and runs it from there with no path back to
the repository (no ``PYTHONPATH``, the repository not the working folder), the
way a reader who installed pipeflow would. A new block without a runner fails
``test_every_readme_block_has_a_runner``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio.wav import read_wav

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[tuple[str, str, str]]:
    """Every code block as (heading above it, language, code), in order."""
    blocks = []
    for match in _FENCE.finditer(README):
        headings = re.findall(r"^## (.+)$", README[: match.start()], re.M)
        blocks.append((headings[-1] if headings else "", match.group(1), match.group(2)))
    return blocks


def block(heading: str, lang: str, index: int = 0) -> str:
    """The ``index``-th ``lang`` block under ``## heading``."""
    found = [code for h, lg, code in readme_blocks() if h == heading and lg == lang]
    assert len(found) > index, f"no {lang} block {index} under {heading!r}"
    return found[index]


def outside(tmp_path: Path) -> Path:
    """A working folder that is not inside the repository."""
    assert not tmp_path.resolve().is_relative_to(ROOT), tmp_path
    return tmp_path


def clean_env() -> dict[str, str]:
    """The environment with no way back to the repository and no model key."""
    drop = ("PYTHONPATH", "OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIPEFLOW_")}


def run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=outside(cwd), capture_output=True, text=True, timeout=120,
                          input=stdin, env={**clean_env(), "COLUMNS": "200"})


def run_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pipeflow.cli", *args], cwd, stdin)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    (cwd / "example.py").write_text(code)
    return run([sys.executable, "example.py"], cwd)


# --- one runner per block ------------------------------------------------------


def _two_commands(code: str, tmp_path: Path) -> None:
    # `make demo` / `make test` belong to the checkout: check from outside that
    # both targets exist and do what the README says, without running them.
    targets = [line.split("#")[0].split() for line in code.splitlines() if line.strip()]
    assert targets == [["make", "demo"], ["make", "test"]]
    for _make, target in targets:
        proc = run(["make", "-n", "-C", str(ROOT), target], tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert "pipelines/call.yaml" in run(["make", "-n", "-C", str(ROOT), "demo"], tmp_path).stdout


def _hello_yaml(code: str, tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(code)
    assert run_cli("validate", "hello.yaml", cwd=tmp_path).returncode == 0
    proc = run_cli("run", "hello.yaml", "--set", "tone.duration_ms=200", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    audio = read_wav(tmp_path / "out" / "tone.wav")
    assert audio.sample_rate == 24000
    assert abs(len(audio.samples) - 4800) <= 480


def _hello_commands(code: str, tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(block("A pipeline in YAML", "yaml"))
    outputs = []
    for line in code.splitlines():
        command = shlex.split(line.split("#")[0])
        assert command[0] == ".venv/bin/pipeflow", line
        proc = run_cli(*command[1:], cwd=tmp_path)
        assert proc.returncode == 0, line + "\n" + proc.stdout + proc.stderr
        outputs.append(proc.stdout)
    assert "ok hello.yaml: hello: tone -> resample -> wav_sink" in outputs[0]
    assert read_wav(tmp_path / "out" / "tone.wav").sample_rate == 48000  # the --set applied
    assert "wav_sink" in outputs[2] and "duration_ms" in outputs[2]


def _custom_stage(code: str, tmp_path: Path) -> None:
    (tmp_path / "mystages.py").write_text(code)
    base = block("A pipeline in YAML", "yaml").replace(
        "  - type: resample", "  - type: mystages:gain\n    db: 6\n  - type: resample"
    ).replace("duration_ms: 1000", "duration_ms: 200\n    amplitude: 0.1")
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


def _python_embedding(code: str, tmp_path: Path) -> None:
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RunResult" in proc.stdout
    assert read_wav(tmp_path / "out" / "tone.wav").sample_rate == 24000


def _tool(code: str, tmp_path: Path) -> None:
    check = (
        "\nfrom pipeflow.tools import ToolSet\n"
        "[schema] = ToolSet([add_numbers]).to_openai_format('realtime')\n"
        "print(schema['name'], schema['parameters']['properties']['a']['description'],"
        " add_numbers(2, 3))\n"
    )
    proc = run_python(code + check, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["add_numbers", "first", "5"]
    proc = run_cli("tools", "pipeflow.examples.weather", cwd=tmp_path)  # the command it names
    assert proc.returncode == 0 and "get_weather" in proc.stdout, proc.stderr


def _agent_python(code: str, tmp_path: Path) -> None:
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *transcript = proc.stdout.splitlines()
    assert first == "2 plus 3 is 5."
    assert transcript == ["user: What is 2 plus 3?", "agent: 2 plus 3 is 5."]


def _agent_yaml(code: str, tmp_path: Path) -> None:
    (tmp_path / "weather.yaml").write_text(code)
    assert run_cli("validate", "weather.yaml", cwd=tmp_path).returncode == 0
    proc = run_cli("chat", "weather.yaml", cwd=tmp_path,
                   stdin="What is 2 plus 3?\nWhat is the weather in Rome?\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert 'tool add_numbers({"a":2,"b":3})' in out
    assert "agent 2 plus 3 is 5." in out
    assert 'tool get_weather({"location":"Rome"})' in out  # the city asked about
    assert out.index("add_numbers") < out.index("get_weather")
    # `pipeflow run` on it (no source) says what to do instead of ending silently.
    proc = run_cli("run", "weather.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "pipeflow chat weather.yaml" in proc.stderr and "source" in proc.stderr


RUNNERS: dict[tuple[str, str, int], Callable[[str, Path], None]] = {
    ("The two commands", "sh", 0): _two_commands,
    ("A pipeline in YAML", "yaml", 0): _hello_yaml,
    ("A pipeline in YAML", "sh", 0): _hello_commands,
    ("A custom stage in ten lines", "python", 0): _custom_stage,
    ("A custom stage in ten lines", "python", 1): _python_embedding,
    ("A tool in five lines", "python", 0): _tool,
    ("An agent with two tools", "python", 0): _agent_python,
    ("An agent with two tools", "yaml", 0): _agent_yaml,
}


def _keyed() -> list[tuple[tuple[str, str, int], str]]:
    seen: dict[tuple[str, str], int] = {}
    keyed = []
    for heading, lang, code in readme_blocks():
        n = seen.get((heading, lang), 0)
        seen[(heading, lang)] = n + 1
        keyed.append(((heading, lang, n), code))
    return keyed


def test_every_readme_block_has_a_runner() -> None:
    keys = [key for key, _code in _keyed()]
    missing = [key for key in keys if key not in RUNNERS]
    assert not missing, f"README blocks with no runner in tests/test_readme.py: {missing}"
    assert sorted(RUNNERS) == sorted(keys)  # and no runner for a block that is gone


@pytest.mark.parametrize(("key", "code"), _keyed(), ids=lambda v: "-".join(map(str, v))
                         if isinstance(v, tuple) else "")
def test_readme_block_runs_from_outside_the_repository(
    key: tuple[str, str, int], code: str, tmp_path: Path
) -> None:
    runner = RUNNERS.get(key)
    if runner is None:
        pytest.fail(f"README block {key} has no runner")
    runner(code, tmp_path)
