"""Faults the local Realtime server can inject, so clients' error paths are tested.

Each fault fires a limited number of times over a server's life
(``times``; shared by all its connections), so a client that reconnects
after an injected close meets a healthy server on its next connection.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["Close", "FaultBudget", "Faults"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Faults to inject (all off by default)."""

    close_after_deltas: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Close the connection after this many audio deltas of a response."""
    close_code: Annotated[int, msgspec.Meta(ge=1000, le=4999)] = 1011
    """WebSocket close code of that close."""
    abort: bool = False
    """Drop the TCP connection with no close frame instead of closing it."""
    error_after_deltas: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Send an error event after this many audio deltas (the response goes on)."""
    stall_after_deltas: _Count | None = None
    """Stop a response after this many audio deltas and never finish it
    (0: right after response.created)."""
    reject: list[str] = msgspec.field(default_factory=list)
    """Client event types answered with an error event instead of being handled."""
    error_code: str = "server_error"
    """Code of injected error events."""
    error_message: str = "The server had an error while processing your request (injected fault)."
    """Message of injected error events."""
    refuse_connections: _Count = 0
    """Refuse this many connection attempts with HTTP 503 first."""
    times: _Count = 1
    """How many times each fault fires over the server's life (0: every time)."""


class FaultBudget:
    """How many more times each fault may fire; shared by a server's sessions.

    Args:
        faults: the faults and their ``times``.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.fired: dict[str, int] = {}

    def fire(self, name: str) -> bool:
        """Count one firing of fault ``name``; False when it has fired ``times`` already."""
        count = self.fired.get(name, 0)
        if self.faults.times and count >= self.faults.times:
            return False
        self.fired[name] = count + 1
        return True


class Close(msgspec.Struct, kw_only=True):
    """The connection must close now (a fault); nothing more is sent."""

    code: int = 1011
    reason: str = ""
    abort: bool = False
