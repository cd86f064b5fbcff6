"""The reference library's names work wherever pipeflow's are documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeflow import Agent
from pipeflow.cli import build_parser
from pipeflow.commands.worker import _options
from pipeflow.errors import ConfigError
from pipeflow.job import JobContext
from pipeflow.seednames import SEED_NAMES, markdown_table
from pipeflow.worker import WorkerOptions
from pipeflow.worker.options import load_options

ROOT = Path(__file__).resolve().parents[1]


async def entrypoint(ctx: JobContext) -> str:
    return ctx.job_id


def test_worker_options_take_the_reference_keyword_arguments() -> None:
    options = WorkerOptions(entry_point=entrypoint, max_concurrent_jobs=5, timeout=90_000,
                            graceful_shutdown_timeout=5000, port=0, host="0.0.0.0")
    assert options.entry == "tests.test_seednames:entrypoint"
    assert (options.max_jobs, options.job_timeout, options.drain_timeout) == (5, 90.0, 5.0)
    assert (options.health_port, options.health_host) == (0, "0.0.0.0")
    assert WorkerOptions(entry=entrypoint).entry == "tests.test_seednames:entrypoint"


def test_keyword_arguments_and_file_keys_read_the_same_table(tmp_path: Path) -> None:
    keys = {"entry_point": "tests.worker_jobs:echo", "max_concurrent_jobs": 5, "timeout": 2500}
    path = tmp_path / "worker.json"
    path.write_text(json.dumps(keys))
    assert load_options(path, env={}) == WorkerOptions(**keys)


def test_a_name_given_under_both_spellings_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'max_jobs' is given twice"):
        WorkerOptions(max_jobs=3, max_concurrent_jobs=5)
    with pytest.raises(ConfigError, match="lambda or a nested function"):
        WorkerOptions(entry_point=lambda ctx: None)


def test_agent_takes_agent_id() -> None:
    agent = Agent("hi", agent_id="orderline")
    assert agent.name == agent.agent_id == "orderline"
    with pytest.raises(TypeError, match="unexpected keyword argument 'agentid'"):
        Agent("hi", agentid="x")  # type: ignore[call-arg]


def test_job_context_get_info() -> None:
    ctx = JobContext("job-1", {"n": 1}, {"worker": "w1", "attempt": 2},
                     secrets={"api_key": "sk-secret"})
    ctx.add_participant("+15550001")
    info = ctx.get_info()
    assert info["job_id"] == "job-1" and info["params"] == {"n": 1}
    assert (info["worker"], info["attempt"], info["participants"]) == ("w1", 2, ["+15550001"])
    assert "sk-secret" not in repr(info)


def test_reference_cli_flags_parse(tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    path.write_text(json.dumps({"max_concurrent_jobs": 4}))
    parser = build_parser()
    args = parser.parse_args(["start", "--production", "--server-url", "wss://m.example/rt",
                              "--config-file", str(path)])
    options = _options(args)
    assert (options.server_url, options.max_jobs) == ("wss://m.example/rt", 4)
    args = parser.parse_args(["dev", "--hot-reload", "--config-file", str(path)])
    assert args.hot_reload and _options(args).max_jobs == 4
    for command in ("submit", "status", "cancel", "health"):
        extra = ["JOB"] if command in ("status", "cancel") else []
        assert parser.parse_args([command, *extra, "--config-file", str(path)]).config == str(path)


def test_migrating_doc_prints_the_table() -> None:
    doc = (ROOT / "docs" / "migrating.md").read_text()
    assert markdown_table() in doc
    assert len(SEED_NAMES) == len(re.findall(r"^\| [a-zA-Z, ]+ \| `", doc, re.M))


def test_migrating_doc_python_example_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "migrating.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["__main__:entrypoint", "5", "orderline"]


def test_agent_section_takes_agent_id(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("agent:\n  agent_id: orderline\nstages:\n  - type: tone\n")
    assert Agent.from_file(path).name == "orderline"
    path.write_text("agent:\n  agent_id: 3\nstages:\n  - type: tone\n")
    with pytest.raises(ConfigError, match=r"a.yaml:2:3: .*'agent.name': expected str"):
        Agent.from_file(path)
