"""The stage registry: short names, references and the ``pipeflow.stages`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pipeflow.config import parse_config
from pipeflow.errors import ConfigError
from pipeflow.frames import Frame, TextInput
from pipeflow.pipeline import Pipeline
from pipeflow.registry import registry

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from pipeflow import Stage
from pipeflow.frames import TextInput


class Shout(Stage):
    """Upper-cases text (a plug-in stage: no short name of its own)."""

    async def process(self, frames):
        async for frame in frames:
            if isinstance(frame, TextInput):
                frame = TextInput(text=frame.text.upper())
            yield frame


not_a_stage = 42
'''


def install_plugin(folder: Path) -> None:
    """A fake installed distribution publishing three entry points in ``pipeflow.stages``."""
    (folder / "plugstages.py").write_text(PLUGIN)
    info = folder / "plugstages-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugstages\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pipeflow.stages]\n"
        "shout = plugstages:Shout\n"
        "notastage = plugstages:not_a_stage\n"
        "broken = plugstages_missing_module:Thing\n"
    )


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("plugstages", None)


async def test_entry_point_stage_resolves_and_runs_from_yaml(plugin: Path) -> None:
    assert "shout" in registry.names()
    config = parse_config("stages:\n  - type: shout\n", "p.yaml")
    assert config.stages[0].cls.__name__ == "Shout"
    seen: list[object] = []
    result = await Pipeline.from_config(config).run(_texts("hi"), on_frame=seen.append)
    assert result.ok and seen == [TextInput(text="HI")]


async def _texts(*texts: str) -> AsyncIterator[Frame]:
    for text in texts:
        yield TextInput(text=text)


def test_entry_point_that_is_not_a_stage_is_named(plugin: Path) -> None:
    with pytest.raises(ConfigError, match=r"entry point 'plugstages:not_a_stage'.*not a stage"):
        registry.resolve("notastage")


def test_broken_entry_point_is_a_config_error_naming_it(plugin: Path) -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve("broken")
    message = str(info.value)
    assert "'plugstages_missing_module:Thing'" in message
    assert "package 'plugstages'" in message and "cannot be loaded" in message
    with pytest.raises(ConfigError, match=r"p\.yaml:2:5: stage 1 \(broken\)"):
        parse_config("stages:\n  - type: broken\n", "p.yaml")


def test_all_collects_broken_plugins_when_asked(plugin: Path) -> None:
    errors: list[ConfigError] = []
    stages = registry.all(errors)
    assert "shout" in stages and "wav" in stages
    assert "broken" not in stages and len(errors) == 2  # broken + notastage
    with pytest.raises(ConfigError):
        registry.all()


def test_pipeflow_stages_lists_plugins_and_reports_broken_ones(tmp_path: Path) -> None:
    install_plugin(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeflow.cli", "stages"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(tmp_path)},
        timeout=120,
    )
    assert proc.returncode == 1
    assert "shout" in proc.stdout and "resample" in proc.stdout
    assert "'plugstages_missing_module:Thing'" in proc.stderr
    assert "Traceback" not in proc.stderr
