"""The ``tools`` stage in a pipeline, behind a fake transport; the ``pipeflow tools`` command."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from pipeflow.agent import Agent
from pipeflow.cli import main
from pipeflow.config import parse_config
from pipeflow.errors import ConfigError
from pipeflow.examples.weather import calculate
from pipeflow.frames import EndOfStream, Frame, Interrupt, ToolCall, ToolResult
from pipeflow.pipeline import Pipeline, PipelineContext
from pipeflow.stage import Frames, Stage
from pipeflow.stages.tools import ToolDispatch
from pipeflow.tools import RunContext, ToolSet, tool
from pipelines.example_tools import add_numbers, get_weather, search_web


class FakeTransport(Stage):
    """Stands in for the realtime transport: sends calls, collects the results sent back."""

    accepts = (ToolResult,)

    def __init__(self, frames: Iterable[Frame], expect: int = 0) -> None:
        super().__init__()
        self.frames = list(frames)
        self.expect = expect
        self.received: list[ToolResult] = []

    async def process(self, frames: Frames) -> Frames:
        for frame in self.frames:
            yield frame
        if self.expect:
            async for frame in frames:  # upstream end, then results from later stages
                if isinstance(frame, ToolResult):
                    self.received.append(frame)
                    if len(self.received) == self.expect:
                        break
        yield EndOfStream()


def calls(*specs: tuple[str, Any]) -> list[ToolCall]:
    return [
        ToolCall(call_id=f"call_{i}", name=name, arguments=args if isinstance(args, str)
                 else json.dumps(args))
        for i, (name, args) in enumerate(specs)
    ]


async def run(
    transport: FakeTransport, dispatch: ToolDispatch, context: PipelineContext | None = None
) -> list[Frame]:
    pipeline = Pipeline([transport, dispatch], context=context)
    return [frame async for frame in pipeline.stream()]


async def test_round_trip_with_concurrent_calls() -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def lookup_price(sku: str) -> float:
        """Waits until the stock lookup started too."""
        a_started.set()
        await b_started.wait()
        return 4.5

    async def lookup_stock(sku: str) -> int:
        """Waits until the price lookup started too."""
        b_started.set()
        await a_started.wait()
        return 12

    agent = Agent(tools=[lookup_price, lookup_stock])
    sent = calls(("lookup_price", {"sku": "mug"}), ("lookup_stock", {"sku": "mug"}))
    transport = FakeTransport(sent, expect=2)
    out = await run(transport, ToolDispatch(timeout_s=5), PipelineContext(agent=agent))

    # both finished although each waited for the other: they ran side by side
    by_id = {r.call_id: r for r in transport.received}
    assert by_id == {
        "call_0": ToolResult(call_id="call_0", name="lookup_price", output="4.5"),
        "call_1": ToolResult(call_id="call_1", name="lookup_stock", output="12"),
    }
    assert out[:2] == sent
    assert sorted(out[2:4], key=lambda r: r.call_id) == [by_id["call_0"], by_id["call_1"]]
    assert isinstance(out[-1], EndOfStream) and len(out) == 5


async def test_callbacks_get_tool_called_and_tool_result_events() -> None:
    from pipeflow.stages.callbacks import Callbacks

    events: list[tuple[str, str]] = []
    agent = Agent(tools=[add_numbers], callbacks={
        "tool_called": lambda e: events.append((e.name, e.frame.name)),
        "tool_result": lambda e: events.append((e.name, e.frame.output)),
    })
    transport = FakeTransport(calls(("add_numbers", {"a": 2, "b": 2})), expect=1)
    pipeline = Pipeline([transport, ToolDispatch(), Callbacks()],
                        context=PipelineContext(agent=agent))
    result = await pipeline.run()
    assert result.ok
    assert events == [("tool_called", "add_numbers"), ("tool_result", "4")]  # a whole sum: 4


async def test_session_goes_on_after_bad_calls() -> None:
    sent = calls(
        ("no_such_tool", {}), ("add_numbers", '{"a": 1'), ("add_numbers", {"a": 1, "b": 2})
    )
    transport = FakeTransport(sent, expect=3)
    await run(transport, ToolDispatch(), PipelineContext(agent=Agent(tools=[add_numbers])))
    by_id = {r.call_id: r for r in transport.received}
    assert by_id["call_0"].is_error and "Unknown tool 'no_such_tool'" in by_id["call_0"].output
    assert by_id["call_1"].is_error and "not valid JSON" in by_id["call_1"].output
    assert not by_id["call_2"].is_error and by_id["call_2"].output == "3"


async def test_end_of_stream_waits_for_running_calls() -> None:
    # The transport ends right after the call: the end is held until the result is out.
    transport = FakeTransport([*calls(("search_web", {"query": "tea"})), EndOfStream()])
    out = await run(transport, ToolDispatch(), PipelineContext(agent=Agent(tools=[search_web])))
    assert [type(f) for f in out] == [ToolCall, ToolResult, EndOfStream]
    assert json.loads(out[1].output)[0] == "Result 1: information about tea"


async def test_drain_timeout_cancels_unfinished_calls(caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def stuck() -> str:
        """Never finishes."""
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return ""

    transport = FakeTransport([*calls(("stuck", {})), EndOfStream()])
    dispatch = ToolDispatch(drain_timeout_s=0.01, timeout_s=None)
    with caplog.at_level(logging.WARNING):
        out = await run(transport, dispatch, PipelineContext(agent=Agent(tools=[stuck])))
    assert [type(f) for f in out] == [ToolCall, EndOfStream]
    assert cancelled.is_set()
    assert "cancelling unfinished tool call tool:stuck" in caplog.text


async def test_timeouts_become_error_results() -> None:
    async def slow() -> str:
        """Too slow."""
        await asyncio.Event().wait()
        return ""

    transport = FakeTransport(calls(("slow", {})), expect=1)
    await run(transport, ToolDispatch(timeout_s=0.01), PipelineContext(agent=Agent(tools=[slow])))
    assert transport.received[0].is_error
    assert "did not finish within 0.01 s" in transport.received[0].output


@pytest.mark.parametrize(("limit", "expected"), [
    (1, ["start a", "end a", "start b", "end b"]),
    (2, ["start a", "start b", "end a", "end b"]),
])
async def test_max_concurrent_bounds_running_calls(limit: int, expected: list[str]) -> None:
    events: list[str] = []

    async def step(name: str) -> str:
        """Records its start and end, yielding to the loop in between."""
        events.append(f"start {name}")
        for _ in range(3):
            await asyncio.sleep(0)
        events.append(f"end {name}")
        return name

    transport = FakeTransport(calls(("step", {"name": "a"}), ("step", {"name": "b"})), expect=2)
    context = PipelineContext(agent=Agent(tools=[step]))
    await run(transport, ToolDispatch(max_concurrent=limit), context)
    assert events == expected


async def test_run_context_carries_session_and_userdata() -> None:
    seen: dict[str, Any] = {}

    def add_to_order(item: str, ctx: RunContext[dict[str, Any]]) -> str:
        """Adds an item to the caller's order."""
        ctx.userdata.setdefault("items", []).append(item)
        seen.update(session=ctx.session, session_id=ctx.session_id, call_id=ctx.call_id,
                    call=ctx.function_call)
        return "added"

    session = object()
    context = PipelineContext(
        session_id="s-1", agent=Agent(tools=[add_to_order]), session=session  # type: ignore[arg-type]
    )
    transport = FakeTransport(calls(("add_to_order", {"item": "tea"})), expect=1)
    await run(transport, ToolDispatch(), context)
    assert context.userdata == {"items": ["tea"]}
    assert seen["session"] is session and seen["session_id"] == "s-1"
    assert seen["call_id"] == "call_0"
    assert seen["call"].name == "add_to_order"
    assert json.loads(seen["call"].arguments) == {"item": "tea"}


async def test_other_frames_pass_through_in_order() -> None:
    frames = [Interrupt(), *calls(("add_numbers", {"a": 1, "b": 1}))]
    transport = FakeTransport(frames, expect=1)
    out = await run(transport, ToolDispatch(tools=["pipelines.example_tools:add_numbers"]))
    assert out[:2] == frames
    assert out[2] == ToolResult(call_id="call_0", name="add_numbers", output="2")


async def test_tool_sources_options_then_agent_then_global_registry() -> None:
    @tool
    def only_global(x: int) -> int:
        """Registered in the global registry only."""
        return x

    sent = calls(("only_global", {"x": 1}))
    transport = FakeTransport(sent, expect=1)
    await run(transport, ToolDispatch())  # no agent: the global registry
    assert transport.received[0].output == "1"

    transport = FakeTransport(sent, expect=1)
    await run(transport, ToolDispatch(), PipelineContext(agent=Agent(tools=[get_weather])))
    assert transport.received[0].is_error and "Available tools: get_weather." in (
        transport.received[0].output
    )

    assert ToolDispatch(tools=["pipeflow.examples.weather"]).toolset is not None


def test_bad_options_fail_when_built() -> None:
    with pytest.raises(ConfigError, match="no module named 'missing_tools_mod'"):
        ToolDispatch(tools=["missing_tools_mod"])
    # The same words as a pipeline file's error: options are checked one way.
    with pytest.raises(ConfigError, match="stage tools, option 'max_concurrent': must be >= 1"):
        ToolDispatch(max_concurrent=0)
    with pytest.raises(ConfigError, match="max_concurrent"):
        parse_config("stages:\n  - type: tools\n    max_concurrent: 0\n", "call.yaml")


AGENT_YAML = """
name: weather-line
agent:
  instructions: You answer questions about the weather and do sums.
  tools: [pipelines.example_tools:get_weather, pipelines.example_tools:add_numbers]
stages:
  - type: tools
    timeout_s: 10
"""


def test_agent_from_yaml_has_the_tools() -> None:
    config = parse_config(AGENT_YAML, "weather.yaml")
    assert config.agent is not None
    agent = Agent.from_config(config.agent)
    assert agent.tools.names() == ["get_weather", "add_numbers"]
    assert agent.tool_schemas() == ToolSet([get_weather, add_numbers]).to_openai_format()
    assert config.stages[0].options.timeout_s == 10


# --- pipeflow tools MODULE -------------------------------------------------------


def test_command_prints_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "pipeflow/examples/weather.py"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ToolSet([get_weather, add_numbers, calculate, search_web]).to_openai_format(
        "realtime")

    assert main(["tools", "pipelines.example_tools:add_numbers", "--format", "chat"]) == 0
    assert json.loads(capsys.readouterr().out) == [add_numbers.to_openai_format("chat")]


def test_command_errors_are_clear_messages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "pipelines/no_such_file.py"]) == 2
    assert "tool module file not found: pipelines/no_such_file.py" in capsys.readouterr().err
    assert main(["tools", "json"]) == 2
    assert "module 'json' defines no @tool" in capsys.readouterr().err
