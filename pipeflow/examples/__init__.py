"""Examples that ship with pipeflow, so the README's code runs from any folder.

``pipeflow.examples.weather`` has the example tools (``get_weather``,
``add_numbers``, ``calculate``, ``search_web``); ``DEMO_SCRIPT`` is the local Realtime
server's script that calls them (``script: pipeflow:demo`` in a pipeline file).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_SCRIPT", "SCRIPTS"]

SCRIPTS = Path(__file__).resolve().parent
"""The folder of the shipped scripts: ``pipeflow:NAME`` names ``SCRIPTS / NAME.yaml``."""

DEMO_SCRIPT = SCRIPTS / "demo.yaml"
"""The script of the weather-and-sums example agent."""
