"""Example tools: weather, arithmetic and a search that logs through its RunContext.

Use them from YAML (``tools: [pipeflow.examples.weather]``) or from Python
(``from pipeflow.examples.weather import get_weather``). Print their schemas
with ``pipeflow tools pipeflow.examples.weather``.

The answers are made up but deterministic, so tests and demos can rely on them.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Literal

import msgspec

from pipeflow.tools import RunContext, ToolError, tool

_CONDITIONS = ("sunny", "cloudy", "rainy", "snowy", "partly cloudy")


@tool
def get_weather(
    location: Annotated[str, "City and country, e.g. 'Paris, France'"],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
) -> str:
    """Get the current weather for a location."""
    place = location.strip()
    if not place:
        raise ToolError("Ask the caller which city they mean: the location was empty.")
    seed = zlib.crc32(place.lower().encode())
    celsius = 10 + seed % 20
    condition = _CONDITIONS[seed % len(_CONDITIONS)]
    if unit == "fahrenheit":
        return f"Weather in {place}: {condition}, {round(celsius * 9 / 5 + 32)} °F"
    return f"Weather in {place}: {condition}, {celsius} °C"


@tool
def add_numbers(a: float, b: float) -> float:
    """Calculate the sum of two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return _plain(a + b)


@tool
def calculate(a: float, operation: Literal["plus", "minus", "times", "divided by"],
              b: float) -> float:
    """Calculate a plus, minus, times or divided by b.

    Args:
        a: the first number.
        operation: what to do with the two numbers.
        b: the second number.
    """
    if operation == "plus":
        return _plain(a + b)
    if operation == "minus":
        return _plain(a - b)
    if operation == "times":
        return _plain(a * b)
    if b == 0:
        raise ToolError("Dividing by zero has no answer; tell the caller so.")
    return _plain(round(a / b, 6))


def _plain(value: float) -> float:
    """A whole number as an int (16, not 16.0), so it is said the way a person says it."""
    return int(value) if float(value).is_integer() else value


@tool(timeout_s=5.0)
async def search_web(
    query: str,
    context: RunContext,
    max_results: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3,
) -> list[str]:
    """Search for information on the web.

    Args:
        query: what to look for.
        max_results: how many results to return.
    """
    context.log_info("searching the web for %r", query)
    results = [
        f"Result 1: information about {query}",
        f"Result 2: more details on {query}",
        f"Result 3: latest news about {query}",
    ]
    return results[:max_results]
