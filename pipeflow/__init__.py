"""pipeflow: real-time voice agents as pipelines of async stages."""

from pipeflow.errors import ConfigError, PipeflowError
from pipeflow.frames import Frame
from pipeflow.pipeline import Pipeline, PipelineContext, RunResult
from pipeflow.stage import Frames, NoOptions, Stage, StageContext, stage

__version__ = "0.1.0"

__all__ = [
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
