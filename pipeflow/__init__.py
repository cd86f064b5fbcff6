"""pipeflow: real-time voice agents as pipelines of async stages."""

from pipeflow.errors import ConfigError, PipeflowError
from pipeflow.frames import Frame
from pipeflow.pipeline import Pipeline, PipelineContext, RunResult
from pipeflow.stage import Frames, NoOptions, Stage, StageContext, stage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentSession",
    "ConfigError",
    "Frame",
    "Frames",
    "NoOptions",
    "PipeflowError",
    "Pipeline",
    "PipelineContext",
    "RunResult",
    "Stage",
    "StageContext",
    "__version__",
    "stage",
]


def __getattr__(name: str) -> object:
    # Agent and AgentSession pull in tools and the event machinery: load on use.
    if name == "Agent":
        from pipeflow.agent import Agent

        return Agent
    if name == "AgentSession":
        from pipeflow.session import AgentSession

        return AgentSession
    raise AttributeError(f"module 'pipeflow' has no attribute {name!r}")
