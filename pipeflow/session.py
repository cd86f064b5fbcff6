"""Sessions: one running conversation over a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeflow.pipeline import PipelineContext

if TYPE_CHECKING:
    from pipeflow.config import PipelineConfig

__all__ = ["prepare_context"]


def prepare_context(config: PipelineConfig, session_id: str = "") -> PipelineContext:
    """A fresh context for one run of ``config``: agent, userdata, output folder.

    The agent's ``setup(userdata, output_dir)`` hook runs here, before any
    stage starts, so tools find what it prepared (a repository, an order...).
    """
    from pipeflow.agent import Agent

    agent = Agent.from_config(config.agent) if config.agent is not None else None
    context = PipelineContext(name=config.name, session_id=session_id, agent=agent)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    context.services["output_dir"] = str(output_dir)
    if agent is not None:
        context.userdata = agent.new_userdata()
        if agent.setup is not None:
            agent.setup(context.userdata, str(output_dir))
    return context
