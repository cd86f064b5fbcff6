"""The model is told exactly the tools the tools stage dispatches."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipeflow.agent import Agent
from pipeflow.context import PipelineContext
from pipeflow.frames import EndOfStream, Frame, TextInput, ToolResult
from pipeflow.pipeline import Pipeline
from pipeflow.registry import registry
from pipeflow.stages.sinks import NullSink
from pipeflow.stages.tools import ToolDispatch
from pipelines.example_tools import add_numbers
from tests.realtime_fixtures import *  # noqa: F403


async def _ask(text: str) -> AsyncIterator[Frame]:
    yield TextInput(text=text)
    yield EndOfStream()


async def _run(server_url: str, tools: ToolDispatch, agent: Agent | None) -> list[Frame]:
    realtime = registry.resolve("realtime")(url=server_url)
    pipeline = Pipeline([realtime, tools, NullSink(realtime=False)],
                        context=PipelineContext(agent=agent))
    seen: list[Frame] = []
    result = await pipeline.run(_ask("What is the weather in Paris?"), on_frame=seen.append)
    assert result.ok, result.errors
    return seen


async def test_a_tools_stage_without_an_agent_offers_its_tools(realtime_server) -> None:
    seen = await _run(realtime_server.url,
                      ToolDispatch(tools=["pipelines.example_tools:get_weather"]), None)
    [session] = realtime_server.sessions
    assert [t["name"] for t in session.config.tools] == ["get_weather"]
    [result] = [f for f in seen if isinstance(f, ToolResult)]
    assert not result.is_error and "Paris" in result.output


async def test_the_stages_own_tools_win_over_the_agents(realtime_server) -> None:
    agent = Agent(tools=[add_numbers])
    await _run(realtime_server.url,
               ToolDispatch(tools=["pipelines.example_tools:get_weather"]), agent)
    [session] = realtime_server.sessions
    assert [t["name"] for t in session.config.tools] == ["get_weather"]


async def test_with_no_tools_option_the_agents_tools_are_offered_and_run(realtime_server) -> None:
    from pipelines.example_tools import get_weather

    agent = Agent(tools=[get_weather, add_numbers])
    seen = await _run(realtime_server.url, ToolDispatch(), agent)
    [session] = realtime_server.sessions
    assert [t["name"] for t in session.config.tools] == ["get_weather", "add_numbers"]
    assert any(isinstance(f, ToolResult) and not f.is_error for f in seen)
