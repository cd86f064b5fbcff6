"""Function tools: typed Python functions the model can call.

    from pipeflow.tools import RunContext, tool

    @tool
    async def get_weather(location: Annotated[str, "City name"]) -> str:
        \"\"\"Get the current weather for a location.\"\"\"
        return "sunny, 21 °C"

``@tool`` builds the JSON schema from the signature and docstring,
``ToolSet`` groups tools per agent and renders them in OpenAI format,
``invoke`` runs one call with validation, timeout and error capture, and the
``tools`` stage dispatches the model's calls in a pipeline.
"""

from pipeflow.tools.context import FunctionCall, RunContext, ToolError
from pipeflow.tools.decorator import tool
from pipeflow.tools.function import FunctionTool, build_tool
from pipeflow.tools.invoke import ArgumentsError, decode_arguments, encode_output, invoke
from pipeflow.tools.toolset import ToolSet, default_registry

__all__ = [
    "ArgumentsError",
    "FunctionCall",
    "FunctionTool",
    "RunContext",
    "ToolError",
    "ToolSet",
    "build_tool",
    "decode_arguments",
    "default_registry",
    "encode_output",
    "invoke",
    "tool",
]
