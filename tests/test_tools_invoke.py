"""Running one call: validation, results, errors for the model, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Annotated, Any

import msgspec
import pytest

from pipeflow.frames import ToolCall, ToolResult
from pipeflow.tools import FunctionCall, RunContext, ToolError, ToolSet, build_tool, invoke
from pipelines.example_tools import add_numbers, get_weather, search_web


class Line(msgspec.Struct, kw_only=True):
    sku: str
    qty: Annotated[int, msgspec.Meta(ge=1)] = 1


def order(lines: list[Line], note: str = "") -> dict[str, Any]:
    """Place an order."""
    return {"skus": [line.sku for line in lines], "total_qty": sum(x.qty for x in lines)}


def crash(x: int) -> int:
    """Always fails."""
    raise ValueError(f"cannot handle {x}")


def refuse(item: str) -> str:
    """Fails on purpose, for the model."""
    raise ToolError(f"{item} is out of stock; offer the blue one instead.")


def unencodable() -> object:
    """Returns something with no JSON form."""
    return object()


def positional(a: int, ctx: RunContext, /, b: int = 2) -> int:
    """Positional-only parameters, the context between them."""
    assert isinstance(ctx, RunContext)
    return a * b


def remember(item: str, ctx: RunContext[dict[str, Any]], seen: list[str] = []) -> str:  # noqa: B006
    """Writes userdata and logs through the context."""
    seen.append(item)
    ctx.userdata.setdefault("items", []).append(item)
    ctx.log_info("remembered %s", item)
    ctx.log_warning("careful")
    ctx.log_error("oops")
    return f"{ctx.call_id}:{ctx.function_call.name}:{len(seen)}"


async def raises_own_timeout() -> str:
    """A tool whose own I/O times out (not the dispatcher's limit)."""
    raise TimeoutError("upstream API timed out")


TOOLS = ToolSet(
    [add_numbers, get_weather, search_web, order, crash, refuse, unencodable, positional,
     remember, raises_own_timeout]
)


def call(name: str, arguments: Any = "{}", call_id: str = "c1") -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(call_id=call_id, name=name, arguments=text)


def context(c: ToolCall, userdata: Any = None) -> RunContext[Any]:
    return RunContext(
        call_id=c.call_id,
        function_call=FunctionCall(name=c.name, arguments=c.arguments),
        userdata=userdata,
    )


async def run(name: str, arguments: Any = "{}", tools: ToolSet = TOOLS, **kw: Any) -> ToolResult:
    c = call(name, arguments)
    return await invoke(tools, c, context(c, kw.pop("userdata", None)), **kw)


async def test_sync_tool_result_is_json() -> None:
    result = await run("add_numbers", {"a": 2, "b": 0.5})
    assert result == ToolResult(call_id="c1", name="add_numbers", output="2.5")


async def test_string_result_passes_as_is() -> None:
    result = await run("get_weather", {"location": "Paris", "unit": "fahrenheit"})
    assert not result.is_error
    assert result.output.startswith("Weather in Paris: ") and result.output.endswith("°F")


async def test_nested_struct_arguments_are_decoded() -> None:
    result = await run("order", {"lines": [{"sku": "a1"}, {"sku": "b2", "qty": 3}]})
    assert json.loads(result.output) == {"skus": ["a1", "b2"], "total_qty": 4}


async def test_numbers_sent_as_strings_are_accepted() -> None:
    result = await run("add_numbers", {"a": "1", "b": "2"})
    assert result.output == "3"  # a whole sum comes back whole
    result = await run("add_numbers", {"a": "1.5", "b": "2"})
    assert result.output == "3.5"


@pytest.mark.parametrize(
    ("name", "arguments", "fragments"),
    [
        ("nope", "{}", ["Unknown tool 'nope'", "Available tools: add_numbers, get_weather"]),
        ("add_numbers", '{"a": 1,', ["'add_numbers'", "not valid JSON", "a (number, required)"]),
        ("add_numbers", "[1, 2]", ["must be a JSON object, not an array. Expected"]),
        ("add_numbers", {"a": 1}, ["missing required parameter `b`. Expected parameters: a ("]),
        ("add_numbers", {"a": 1, "b": "x"}, ["parameter 'b'", "Expected `float`, got `str`"]),
        ("add_numbers", {"a": 1, "b": 2, "c": 3}, ["unknown parameter `c`"]),
        ("order", {"lines": [{"sku": "a", "qty": 0}]}, ["'lines[0].qty'", ">= 1"]),
        (
            "get_weather",
            {"location": "Oslo", "unit": "kelvin"},
            ["parameter 'unit'", 'unit (one of "celsius", "fahrenheit")'],
        ),
        ("search_web", {"query": "x", "max_results": 11}, ["<= 10"]),
    ],
)
async def test_bad_calls_become_error_results(
    name: str, arguments: Any, fragments: list[str]
) -> None:
    result = await run(name, arguments)
    assert result.is_error and result.call_id == "c1" and result.name == name
    for fragment in fragments:
        assert fragment in result.output


async def test_empty_arguments_mean_no_arguments() -> None:
    result = await run("unencodable", "")
    assert result.is_error and "cannot be sent as JSON" in result.output


async def test_exception_becomes_error_result(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "pipeflow.tools"):
        result = await run("crash", {"x": 7})
    assert result.is_error
    assert result.output == "Tool 'crash' failed: ValueError: cannot handle 7"
    assert "crash" in caplog.text


async def test_tool_error_message_is_seen_as_is() -> None:
    result = await run("refuse", {"item": "red mug"})
    assert result.is_error
    assert result.output == "red mug is out of stock; offer the blue one instead."


async def test_a_tools_own_timeout_error_is_a_failure_not_a_timeout() -> None:
    result = await run("raises_own_timeout", timeout_s=10)
    assert result.is_error and "TimeoutError: upstream API timed out" in result.output


async def test_positional_only_parameters_and_context() -> None:
    assert (await run("positional", {"a": 4, "b": 3})).output == "12"
    assert (await run("positional", {"a": 4})).output == "8"


async def test_run_context_userdata_call_id_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    userdata: dict[str, Any] = {}
    with caplog.at_level(logging.INFO, "pipeflow.tools"):
        first = await run("remember", {"item": "tea"}, userdata=userdata)
        second = await run("remember", {"item": "cake"}, userdata=userdata)
    assert first.output == "c1:remember:1"
    assert second.output == "c1:remember:1"  # the mutable default is fresh for each call
    assert userdata == {"items": ["tea", "cake"]}
    records = [r for r in caplog.records if r.name == "pipeflow.tools"]
    assert [r.levelname for r in records[:3]] == ["INFO", "WARNING", "ERROR"]
    assert records[0].getMessage() == "[remember c1] remembered tea"
    assert records[0].tool == "remember" and records[0].call_id == "c1"  # type: ignore[attr-defined]


async def test_search_logs_through_its_context(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "pipeflow.tools"):
        result = await run("search_web", {"query": "espresso", "max_results": 2})
    assert json.loads(result.output) == [
        "Result 1: information about espresso",
        "Result 2: more details on espresso",
    ]
    assert "[search_web c1] searching the web for 'espresso'" in caplog.text


# --- timeouts ----------------------------------------------------------------------


async def test_timeout_default_and_per_tool() -> None:
    never = asyncio.Event()

    async def hang() -> str:
        """Never returns."""
        await never.wait()
        return "done"

    tools = ToolSet([hang, build_tool(hang, name="hang_briefly", timeout_s=0.01)])
    result = await run("hang", tools=tools, timeout_s=0.01)
    assert result.is_error
    assert result.output.startswith("Tool 'hang' did not finish within 0.01 s")
    # the tool's own limit wins over the dispatcher's default (None: no limit)
    result = await run("hang_briefly", tools=tools, timeout_s=None)
    assert result.is_error and "within 0.01 s" in result.output


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def slow() -> str:
        """Waits forever."""
        started.set()
        await asyncio.Event().wait()
        return ""

    task = asyncio.create_task(run("slow", tools=ToolSet([slow])))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- concurrency ---------------------------------------------------------------------


async def test_two_async_calls_run_concurrently() -> None:
    """Each tool waits for the other to start: run one after the other, both would time out."""
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def tool_a() -> str:
        """A."""
        a_started.set()
        await b_started.wait()
        return "a"

    async def tool_b() -> str:
        """B."""
        b_started.set()
        await a_started.wait()
        return "b"

    tools = ToolSet([tool_a, tool_b])
    results = await asyncio.gather(
        *(invoke(tools, c, context(c), timeout_s=5) for c in (call("tool_a"), call("tool_b")))
    )
    assert [r.output for r in results] == ["a", "b"]
    assert not any(r.is_error for r in results)


async def test_two_sync_calls_run_in_threads_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def left() -> str:
        """Meets right."""
        barrier.wait()
        return "left"

    def right() -> str:
        """Meets left."""
        barrier.wait()
        return "right"

    tools = ToolSet([left, right])
    results = await asyncio.gather(
        *(invoke(tools, c, context(c)) for c in (call("left"), call("right")))
    )
    assert [r.output for r in results] == ["left", "right"]
