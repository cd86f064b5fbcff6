"""@tool registration, its errors, tool sets, references and the agent's tools."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeflow.agent import Agent
from pipeflow.errors import ConfigError
from pipeflow.tools import FunctionTool, RunContext, ToolSet, build_tool, default_registry, tool
from pipelines import example_tools
from pipelines.example_tools import add_numbers, get_weather, search_web


class Order(dict[str, Any]):
    """Userdata type for RunContext[Order] annotations."""


def test_decorated_function_stays_callable() -> None:
    assert isinstance(add_numbers, FunctionTool)
    assert add_numbers(2, 3) == 5
    assert add_numbers.__name__ == "add_numbers"
    assert add_numbers.__doc__ is not None and "sum" in add_numbers.__doc__
    assert not add_numbers.is_async and search_web.is_async
    assert search_web.timeout_s == 5.0


def test_tool_record_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        add_numbers.name = "other"  # type: ignore[misc]


def test_decorator_options_and_registry() -> None:
    private = ToolSet()

    @tool(name="lookup-price", description="Price of a product.", timeout_s=2, registry=private)
    async def price(sku: str) -> float:
        """Ignored: the description option wins."""
        return 1.0

    assert private.names() == ["lookup-price"]
    assert "lookup-price" not in default_registry
    assert price.description == "Price of a product."
    assert price.timeout_s == 2

    @tool
    def registered_globally(x: int) -> int:
        """Echo."""
        return x

    assert default_registry.get("registered_globally") is registered_globally


def test_run_context_parameter_by_type() -> None:
    def with_generic(item: str, ctx: RunContext[Order]) -> str:
        return item

    made = build_tool(with_generic)
    assert made.context_param == "ctx"
    assert list(made.parameters["properties"]) == ["item"]


# --- registration errors name the function and the parameter --------------------


def untyped(a: int, b) -> int:  # type: ignore[no-untyped-def]
    return a


def star_args(*numbers: int) -> int:
    return 0


def star_kwargs(**options: str) -> int:
    return 0


class Opaque:
    pass


def opaque(thing: Opaque) -> int:
    return 0


def anything(value: Any) -> int:
    return 0


def two_contexts(a: RunContext, b: RunContext) -> int:
    return 0


def bad_forward_ref(x: Missing) -> int:  # type: ignore[name-defined]  # noqa: F821
    return 0


async def generator(x: int):  # type: ignore[no-untyped-def]
    yield x


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (untyped, ["test_tools_registry:untyped", "parameter 'b'", "no type annotation"]),
        (star_args, ["star_args", "'*numbers'", "not allowed"]),
        (star_kwargs, ["star_kwargs", "'**options'"]),
        (opaque, ["opaque", "parameter 'thing'", "unsupported type", "Opaque"]),
        (anything, ["anything", "parameter 'value'", "Any"]),
        (two_contexts, ["two_contexts", "parameter 'b'", "only one"]),
        (bad_forward_ref, ["bad_forward_ref", "Missing"]),
        (generator, ["generator", "generator cannot be a tool"]),
    ],
)
def test_bad_tools_fail_at_registration(fn: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        tool(fn)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert fn.__name__ not in default_registry


def test_methods_are_bound_before_they_become_tools() -> None:
    class Shop:
        def price(self, sku: str) -> float:
            """Price of a product."""
            return 1.5

    assert ToolSet([Shop().price])["price"].parameters["required"] == ["sku"]
    with pytest.raises(ConfigError, match="parameter 'self': @tool on a method is not supported"):
        tool(Shop.price)


def test_bad_names_and_timeouts() -> None:
    def ok(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="name 'has space' is not allowed"):
        build_tool(ok, name="has space")
    with pytest.raises(ConfigError, match="timeout_s must be a positive"):
        build_tool(ok, timeout_s=0)
    with pytest.raises(ConfigError, match="needs a function"):
        build_tool(Opaque)  # type: ignore[arg-type]


# --- tool sets ---------------------------------------------------------------------


def test_toolset_basics() -> None:
    def local_helper(text: str) -> str:
        """Shout."""
        return text.upper()

    tools = ToolSet([get_weather, add_numbers, local_helper])
    assert tools.names() == ["get_weather", "add_numbers", "local_helper"]
    assert len(tools) == 3 and "add_numbers" in tools and "nope" not in tools
    assert tools["local_helper"].description == "Shout."
    assert tools.get("nope") is None
    assert [t.name for t in tools] == tools.names()
    assert "local_helper" not in default_registry  # plain functions stay private
    assert [s["name"] for s in tools.to_openai_format("realtime")] == tools.names()
    assert [s["function"]["name"] for s in tools.to_openai_format("chat")] == tools.names()
    with pytest.raises(ConfigError, match="unknown tool schema shape 'responses'"):
        tools.to_openai_format("responses")
    tools.remove("local_helper")
    assert tools.names() == ["get_weather", "add_numbers"]


def test_toolset_refuses_two_tools_with_one_name() -> None:
    def add_numbers(a: int) -> int:  # same name, another function
        return a

    with pytest.raises(ConfigError, match="two tools are named 'add_numbers'"):
        ToolSet([example_tools.add_numbers, add_numbers])
    assert len(ToolSet([get_weather, get_weather])) == 1


def test_from_refs_module_and_function() -> None:
    assert ToolSet.from_refs(["pipeflow.examples.weather"]).names() == [
        "get_weather",
        "add_numbers",
        "calculate",
        "search_web",
    ]
    one = ToolSet.from_refs(["pipelines.example_tools:add_numbers"])
    assert one.names() == ["add_numbers"] and one["add_numbers"] is add_numbers


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        ("pipelines.example_tools:get_wether", "did you mean 'get_weather'"),
        ("pipeflow.examples.weather:_CONDITIONS", "is tuple, not a tool"),
        ("json", "defines no @tool"),
        ("pipelines.example_tools:", "must look like"),
    ],
)
def test_from_refs_errors(ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ToolSet.from_refs([ref])


def test_from_refs_reports_a_bad_tool_inside_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_tools_mod.py").write_text(
        textwrap.dedent(
            """
            from pipeflow.tools import tool

            @tool
            def lookup(sku) -> str:
                return sku
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_tools_mod", raising=False)
    with pytest.raises(ConfigError) as info:
        ToolSet.from_refs(["broken_tools_mod"])
    assert "broken_tools_mod:lookup" in str(info.value)
    assert "parameter 'sku'" in str(info.value)


def test_agent_tools_and_schemas() -> None:
    agent = Agent("Answer questions.", tools=[get_weather, add_numbers])
    assert isinstance(agent.tools, ToolSet)
    assert agent.tools.names() == ["get_weather", "add_numbers"]
    chat = agent.tool_schemas("chat")
    assert chat[0] == {"type": "function", "function": {
        "name": "get_weather",
        "description": get_weather.description,
        "parameters": dict(get_weather.parameters),
    }}
