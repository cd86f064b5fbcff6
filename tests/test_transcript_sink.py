"""The transcript sink writes a readable conversation."""

from __future__ import annotations

from pathlib import Path

from pipeflow.frames import Interrupt, ToolCall, ToolResult, Transcript
from pipeflow.pipeline import PipelineContext
from pipeflow.stages.transcript import TranscriptSink
from pipeflow.testing import run_stage


async def test_transcript_file(tmp_path: Path) -> None:
    context = PipelineContext(output_dir=str(tmp_path))
    frames = [
        Transcript(role="agent", text="Hello, this is the shop."),
        Transcript(role="user", text="one pizza", final=False),
        Transcript(role="user", text="One pizza please."),
        ToolCall(call_id="c", name="add_to_order", arguments='{"product": "pizza"}'),
        ToolResult(call_id="c", output='{"ok": true,\n "message": "Added."}'),
        Interrupt(),
    ]
    result = await run_stage(TranscriptSink(path="t.txt"), frames, context=context)
    assert result.down[: len(frames)] == frames
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "agent: Hello, this is the shop.",
        "caller: One pizza please.",
        'tool call add_to_order({"product": "pizza"})',
        'tool result: {"ok": true, "message": "Added."}',
        "(agent interrupted)",
    ]
    assert context.outputs["transcript"] == str(tmp_path / "t.txt")


async def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = await run_stage(TranscriptSink(path=str(blocker / "t.txt")), [])
    assert "transcript sink cannot write" in result.errors[0].message
