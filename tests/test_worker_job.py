"""JobContext: participants, background tasks, shutdown hooks, pipelines."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pipeflow.errors import ConfigError
from pipeflow.frames import Metric
from pipeflow.job import JobContext, params_to_overrides


def test_participants_add_list_remove() -> None:
    ctx = JobContext("j1")
    caller = ctx.add_participant("+34600000000", name="Ana", metadata={"lang": "es"})
    ctx.add_participant("agent", kind="agent")
    assert [p.identity for p in ctx.participants] == ["+34600000000", "agent"]
    assert ctx.participant("+34600000000") == caller
    assert caller.metadata == {"lang": "es"} and caller.joined_at > 0
    assert ctx.remove_participant("+34600000000") == caller
    assert ctx.remove_participant("+34600000000") is None
    assert [p.identity for p in ctx.participants] == ["agent"]


def test_participant_mistakes_are_config_errors() -> None:
    ctx = JobContext("j1")
    ctx.add_participant("a")
    with pytest.raises(ConfigError, match="'a' has already joined"):
        ctx.add_participant("a")
    with pytest.raises(ConfigError, match="non-empty identity"):
        ctx.add_participant("")


async def test_shutdown_cancels_and_awaits_tasks_then_runs_hooks_in_reverse() -> None:
    ctx = JobContext("j2")
    order: list[str] = []
    started = asyncio.Event()

    async def background() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            order.append("task cleaned up")

    async def async_hook(reason: str) -> None:
        order.append(f"async hook ({reason})")

    ctx.start_task(background(), name="bg")
    ctx.add_shutdown_hook(lambda: order.append("first hook"))
    ctx.add_shutdown_hook(async_hook)
    await started.wait()
    assert len(ctx.tasks) == 1
    await ctx.shutdown("completed")
    assert order == ["task cleaned up", "async hook (completed)", "first hook"]
    assert ctx.tasks == [] and ctx.shutting_down and ctx.shutdown_reason == "completed"


async def test_failing_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = JobContext("j3")
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("hook broke")

    ctx.add_shutdown_hook(lambda: ran.append("earlier"))
    ctx.add_shutdown_hook(broken)
    with caplog.at_level(logging.ERROR, logger="pipeflow.job"):
        await ctx.shutdown("failed")
    assert ran == ["earlier"]
    assert "hook broke" in caplog.text and "[j3]" in caplog.text


async def test_shutdown_twice_runs_hooks_once_and_blocks_new_tasks() -> None:
    ctx = JobContext("j4")
    calls: list[str] = []
    ctx.add_shutdown_hook(calls.append)
    await asyncio.gather(ctx.shutdown("cancelled"), ctx.shutdown("again"))
    assert calls == ["cancelled"]

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="shutting down"):
        ctx.start_task(nothing())


async def test_background_task_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = JobContext("j5")

    async def crash() -> None:
        raise ValueError("bad thing")

    with caplog.at_level(logging.ERROR, logger="pipeflow.job"):
        task = ctx.start_task(crash(), name="crasher")
        await asyncio.gather(task, return_exceptions=True)
        await ctx.shutdown()
    assert "crasher failed: bad thing" in caplog.text


def test_hook_must_be_callable() -> None:
    with pytest.raises(TypeError):
        JobContext("j").add_shutdown_hook("not callable")  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr() -> None:
    ctx = JobContext("j6", secrets={"api_key": "sk-very-secret"})
    assert "sk-very-secret" not in repr(ctx)
    assert ctx.secrets["api_key"] == "sk-very-secret"


def test_params_to_overrides_keeps_types_as_json() -> None:
    assert params_to_overrides({"tone.frequency": 300, "sink__path": "yes"}) == [
        "tone.frequency=300",
        'sink.path="yes"',
    ]
    with pytest.raises(ConfigError, match="'caller' is not a pipeline override"):
        params_to_overrides({"caller": "+1"})
    with pytest.raises(ConfigError, match="cannot be written as JSON"):
        params_to_overrides({"a.b": object()})


def test_metric_frames_become_latency_samples() -> None:
    samples: list[tuple[str, float]] = []
    ctx = JobContext("j7", on_metric=lambda name, value: samples.append((name, value)))
    ctx._on_frame(Metric(stage="sink", name="frame_lateness", value=12.0, unit="ms"))
    ctx._on_frame(Metric(stage="sink", name="frames", value=3.0))
    ctx._on_frame(Metric(stage="x", name="first_audio_latency", value=0.25, unit="s"))
    assert samples == [("frame_lateness", pytest.approx(0.012)), ("first_audio_latency", 0.25)]


TONE = """\
name: tone-job
output_dir: {out}
stages:
  - type: tone
    duration_ms: 100
    speed: 0
  - type: passthrough
"""


async def test_run_pipeline_applies_params_as_overrides(tmp_path: Path) -> None:
    path = tmp_path / "tone.yaml"
    path.write_text(TONE.format(out=tmp_path / "out"))
    ctx = JobContext("job-a", params={"tone.duration_ms": 200, "caller": "+1"})
    result = await ctx.run_pipeline(path)
    assert result.ok
    assert result.frames_by_type["AudioFrame"] == 10  # 200 ms of 20 ms frames
    result = await JobContext("job-b").run_pipeline(path, tone__duration_ms=60)
    assert result.frames_by_type["AudioFrame"] == 3
    assert (tmp_path / "out" / "job-a").is_dir()


async def test_run_pipeline_reports_bad_override(tmp_path: Path) -> None:
    path = tmp_path / "tone.yaml"
    path.write_text(TONE.format(out=tmp_path / "out"))
    with pytest.raises(ConfigError, match="no stage 'tones'"):
        await JobContext("job-c").run_pipeline(path, **{"tones.duration_ms": 5})
