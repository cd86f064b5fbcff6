"""The command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

import pipeflow
from pipeflow.cli import main

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "data" / "broken"


def pipeflow_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_version() -> None:
    proc = pipeflow_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"pipeflow {pipeflow.__version__}"


def test_validate_broken_files_prints_file_line_messages_and_exits_1() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in BROKEN.glob("*.yaml"))
    proc = pipeflow_cli("validate", *files)
    assert proc.returncode == 1
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(files)
    assert "Traceback" not in proc.stdout + proc.stderr
    expected = [
        "tests/data/broken/misspelled_option.yaml:4:5: stage 1 (log): unknown option 'levle' "
        "(did you mean 'level'?)",
        "tests/data/broken/unknown_stage.yaml:4:5: stage 2 (lgo): unknown stage type 'lgo' "
        "(did you mean 'log'?)",
        "tests/data/broken/wrong_type.yaml:4:5: stage 1 (log), option 'skip': expected array, "
        "got int",
        "tests/data/broken/bad_yaml.yaml:4:4: invalid YAML",
    ]
    for text in expected:
        assert any(text in line for line in lines), text


def test_validate_good_file_exits_0(tmp_path: Path) -> None:
    file = tmp_path / "ok.yaml"
    file.write_text("name: ok\nstages:\n  - type: passthrough\n")
    proc = pipeflow_cli("validate", str(file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout


def test_run_reports_config_errors_without_traceback() -> None:
    proc = pipeflow_cli("run", "tests/data/broken/misspelled_option.yaml")
    assert proc.returncode == 2
    assert "did you mean 'level'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stages_lists_stages_with_options() -> None:
    proc = pipeflow_cli("stages")
    assert proc.returncode == 0
    for name in ("passthrough", "log", "callbacks"):
        assert name in proc.stdout
    assert "webhook_retries" in proc.stdout


def test_stages_markdown_and_unknown_stage() -> None:
    proc = pipeflow_cli("stages", "--markdown")
    assert proc.returncode == 0 and "## `log`" in proc.stdout
    proc = pipeflow_cli("stages", "lgo")
    assert proc.returncode == 2 and "did you mean 'log'" in proc.stderr


def test_run_user_stage_from_yaml_with_summary(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    proc = pipeflow_cli(
        "run",
        "tests/data/userstages/pipeline.yaml",
        "--set",
        "shout.times=3",
        env={"COLLECT_PATH": str(out)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text() == "HELLO!!!"
    assert "frames per stage" in proc.stdout
    assert "status" in proc.stdout and "ok" in proc.stdout


def test_run_reports_stage_failure(tmp_path: Path) -> None:
    file = tmp_path / "fail.yaml"
    (tmp_path / "failing.py").write_text(
        "from pipeflow import stage\n"
        "@stage()\n"
        "async def boom(frames):\n"
        "    raise RuntimeError('kaput')\n"
        "    yield\n"
    )
    file.write_text("name: f\nstages:\n  - type: failing:boom\n    id: boomer\n")
    proc = pipeflow_cli("run", str(file))
    assert proc.returncode == 1
    assert "boomer" in proc.stdout and "kaput" in proc.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "run" in capsys.readouterr().out


def test_validate_names_a_bad_set_and_its_file() -> None:
    proc = pipeflow_cli(
        "validate",
        "tests/data/userstages/pipeline.yaml",
        "--set",
        "shout.tims=3",
        env={"COLLECT_PATH": "seen.txt"},
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        "error tests/data/userstages/pipeline.yaml: --set 'shout.tims=3': "
    ), proc.stdout
    assert "did you mean 'times'" in proc.stdout


@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "stopped: interrupted"),
    (signal.SIGTERM, 143, "stopped: SIGTERM"),
])
def test_run_stopped_by_a_signal_shuts_down_and_prints_the_summary(
    tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    file = tmp_path / "long.yaml"
    file.write_text(
        "name: long\nstages:\n  - type: tone\n    duration_ms: 60000\n"
        "  - type: wav_sink\n    path: long.wav\n    source: all\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "run", "-q", str(file), "-o", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
        # A shell without job control starts background commands with SIGINT
        # ignored, and Python keeps an ignored SIGINT: give the run Ctrl-C back.
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    assert "running" in proc.stdout.readline()  # the pipeline has started
    wav = tmp_path / "long.wav"
    deadline = time.monotonic() + 30
    while not wav.exists() and time.monotonic() < deadline:  # audio is flowing
        time.sleep(0.05)
    proc.send_signal(sig)
    try:
        out, errors = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # the fault handler prints every thread's stack
        out, errors = proc.communicate()
        pytest.fail(f"the run did not stop within 30 s of {sig.name}:\n{errors[-6000:]}")
    assert proc.returncode == code, out + errors
    assert "Traceback" not in out + errors
    assert "stopped" in out and "frames per stage" in out
    assert said in errors
    with wave.open(str(wav)) as played:  # the sink closed its file properly
        assert 0 < played.getnframes() < 60 * played.getframerate()


HINT = "pip install 'pipeflow[sounddevice]'"


def test_messages_with_square_brackets_print_as_written(tmp_path: Path) -> None:
    (tmp_path / "hinting.py").write_text(
        "import msgspec\n"
        "from pipeflow import ConfigError, stage\n"
        f"HINT = {HINT!r}\n"
        "class Opts(msgspec.Struct, kw_only=True):\n"
        "    at_build: bool = False\n"
        "    def __post_init__(self):\n"
        "        if self.at_build:\n"
        "            raise ConfigError('needs the extra: ' + HINT)\n"
        "@stage()\n"
        "async def needs_extra(frames, options: Opts):\n"
        "    raise ConfigError('needs the extra: ' + HINT)\n"
        "    yield\n"
    )
    file = tmp_path / "hint.yaml"
    file.write_text("name: h[1]\nstages:\n  - type: hinting:needs_extra\n")
    proc = pipeflow_cli("run", str(file))
    assert proc.returncode == 1
    assert proc.stdout.count(HINT) == 2, proc.stdout  # the live line and the summary
    assert "pipeflow run: h[1]" in proc.stdout
    proc = pipeflow_cli("run", str(file), "--set", "0.at_build=true")
    assert proc.returncode == 2
    assert HINT in proc.stderr, proc.stderr
    proc = pipeflow_cli("validate", str(file), "--set", "0.at_build=true")
    assert proc.returncode == 1 and HINT in proc.stdout, proc.stdout


def test_reporter_error_line_keeps_square_brackets() -> None:
    from rich.console import Console

    from pipeflow.console import RunReporter
    from pipeflow.frames import ErrorFrame

    console = Console(record=True, width=200)
    reporter = RunReporter(console)
    reporter.on_frame(ErrorFrame(stage="speaker", message=f"needs {HINT}", fatal=True))
    assert HINT in console.export_text()


def test_run_without_a_source_says_what_to_do(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("name: a\nstages:\n  - type: realtime\n  - type: tools\n")
    proc = pipeflow_cli("run", str(file))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"pipeflow chat {file}" in proc.stderr
    assert "put a source stage first" in proc.stderr and "microphone" in proc.stderr
    # A first stage that declares nothing may make frames itself: it runs.
    (tmp_path / "gen.py").write_text(
        "from pipeflow import stage\n"
        "from pipeflow.frames import TextInput\n"
        "@stage()\n"
        "async def hello(frames):\n"
        "    yield TextInput(text='hi')\n"
    )
    (tmp_path / "own.yaml").write_text("name: o\nstages:\n  - type: gen:hello\n  - type: log\n")
    proc = pipeflow_cli("run", str(tmp_path / "own.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chat_plays_a_script_given_instead_of_a_pipeline(tmp_path: Path) -> None:
    lines = "What is 7 plus 9?\nseven plus nine plus ten\n5 divided by 0\nweather in Madrid\n"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "chat", "pipelines/scripts/demo.yaml", "-o",
         str(tmp_path)], input=lines, capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "COLUMNS": "300", "OPENAI_API_KEY": "sk-not-used"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert 'tool add_numbers({"a":7,"b":9})' in out and "7 plus 9 is 16." in out
    assert 'didn\'t understand "plus ten"' in out and "is 26" not in out
    assert "5 divided by zero has no answer" in out and "tell the caller" not in out
    assert 'get_weather({"location":"Madrid"})' in out


def test_chat_names_what_a_script_without_tools_calls() -> None:
    proc = pipeflow_cli("chat", "pipelines/orderline/script.yaml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "the script calls get_product_info" in proc.stderr and "--tools" in proc.stderr


def test_run_and_validate_say_a_script_is_not_a_pipeline() -> None:
    for command in ("run", "validate"):
        proc = pipeflow_cli(command, "pipelines/scripts/demo.yaml")
        text = proc.stdout + proc.stderr
        assert proc.returncode in (1, 2) and "Traceback" not in text
        assert "this is a Realtime script" in text and "unknown field" not in text
        assert "pipeflow chat pipelines/scripts/demo.yaml" in text


def test_validate_warns_of_script_calls_with_no_tools_stage(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("name: p\nagent:\n  tools: [pipeflow.examples.weather]\nstages:\n"
                    "  - type: push\n  - type: realtime\n    script: pipeflow:demo\n")
    proc = pipeflow_cli("validate", str(file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" in proc.stdout and "no tools stage" in proc.stdout
    assert "calls get_weather, add_numbers, calculate" in proc.stdout
    file.write_text(file.read_text() + "  - type: tools\n")
    proc = pipeflow_cli("validate", str(file))
    assert "warning" not in proc.stdout, proc.stdout


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
