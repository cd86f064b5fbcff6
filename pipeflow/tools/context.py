"""What a running tool can reach: ``RunContext``, and ``ToolError`` for the model.

A tool asks for a ``RunContext`` by annotating one parameter with it; the
parameter is filled in at call time and never appears in the schema::

    @tool
    async def place_order(item: str, ctx: RunContext[Order]) -> str:
        ctx.userdata.items.append(item)
        ctx.log_info("added %s", item)
        return "added"
"""

from __future__ import annotations

import logging
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["FunctionCall", "RunContext", "ToolError"]

UserData = TypeVar("UserData")

log = logging.getLogger("pipeflow.tools")


class ToolError(Exception):
    """Raise from a tool to tell the model what went wrong.

    The message goes to the model as is (no exception type, no traceback), so
    write it for the model: what failed and what to do instead.
    """


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    """The call the model asked for."""

    name: str
    """The tool's name."""
    arguments: str = "{}"
    """The arguments as the model sent them: raw JSON text."""


class RunContext(Generic[UserData]):
    """Per-call context injected into a tool that asks for it by type.

    Attributes:
        session: the running session (``ctx.pipeline.session``), or None.
        session_id: the pipeline's session id.
        call_id: the model's id of this call.
        function_call: the tool name and raw arguments.
        userdata: per-session state shared by every tool of the session.
        logger: the logger the ``log_*`` methods write to.
    """

    def __init__(
        self,
        *,
        call_id: str = "",
        function_call: FunctionCall | None = None,
        userdata: UserData | None = None,
        session: Any = None,
        session_id: str = "",
        logger: logging.Logger | None = None,
    ) -> None:
        self.session = session
        self.session_id = session_id
        self.call_id = call_id
        self.function_call = function_call or FunctionCall(name="")
        self.userdata: UserData = userdata if userdata is not None else {}  # type: ignore[assignment]
        self.logger = logger or log

    @property
    def tool_name(self) -> str:
        """The name of the tool being run."""
        return self.function_call.name

    def _log(self, level: int, message: str, args: tuple[Any, ...]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        text = message % args if args else message
        extra = {"tool": self.tool_name, "call_id": self.call_id, "session_id": self.session_id}
        self.logger.log(level, "[%s %s] %s", self.tool_name, self.call_id, text, extra=extra)

    def log_info(self, message: str, *args: Any) -> None:
        """Log at INFO, tagged with the tool name and call id (``%`` args as in logging)."""
        self._log(logging.INFO, message, args)

    def log_warning(self, message: str, *args: Any) -> None:
        """Log at WARNING, tagged with the tool name and call id."""
        self._log(logging.WARNING, message, args)

    def log_error(self, message: str, *args: Any) -> None:
        """Log at ERROR, tagged with the tool name and call id."""
        self._log(logging.ERROR, message, args)

    def __repr__(self) -> str:
        return f"RunContext(tool={self.tool_name!r}, call_id={self.call_id!r})"
