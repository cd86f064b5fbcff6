"""Example tools: weather, arithmetic and a search that logs through its RunContext.

They ship with pipeflow as ``pipeflow.examples.weather`` (so code outside this
repository imports them too); this module keeps the older name
``pipelines.example_tools:get_weather`` working for files in the repository.
"""

from __future__ import annotations

from pipeflow.examples.weather import add_numbers, get_weather, search_web

__all__ = ["add_numbers", "get_weather", "search_web"]
