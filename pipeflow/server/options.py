"""Options of the call gateway (``pipeflow serve``).

Every limit the gateway enforces lives here, so the command line, tests and
embedding code set them in one place. The bearer token comes from the
options, else from the ``PIPEFLOW_GATEWAY_TOKEN`` environment variable; it is
never part of a repr.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

from pipeflow.errors import ConfigError

__all__ = ["TOKEN_ENV", "GatewayOptions"]

TOKEN_ENV = "PIPEFLOW_GATEWAY_TOKEN"
"""Environment variable holding the gateway's bearer token."""


class GatewayOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the gateway listens, whom it lets in and how much it takes."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 for every interface)."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    """TCP port to listen on (0 picks a free one)."""
    token: str | None = None
    """Bearer token every API, WebSocket and Twilio request must carry; empty:
    PIPEFLOW_GATEWAY_TOKEN, else no authentication."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    """Largest request body accepted (larger ones get 413)."""
    max_calls: Annotated[int, msgspec.Meta(ge=1)] = 100
    """Calls live at the same time; one more gets 503 with Retry-After."""
    retry_after_s: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Seconds a client is told to wait when the gateway is full."""
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """A call with no request, audio or agent output for this long is ended
    (its transcript, tool calls and order are kept)."""
    reap_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How often idle calls are looked for."""
    keep_finished: Annotated[int, msgspec.Meta(ge=0)] = 1000
    """Finished calls kept in memory for GET (older ones stay on disk only)."""
    public_url: str | None = None
    """Base URL phone systems reach this gateway at (https://host), used in
    TwiML; empty: taken from the request's Host header."""
    output_dir: str | None = None
    """Folder for call recordings (one sub-folder per call id); empty: the
    pipeline file's output_dir."""
    overrides: list[str] = msgspec.field(default_factory=list)
    """STAGE.OPTION=VALUE overrides applied to every call's pipeline."""
    agent_audio_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    """Seconds of agent audio kept per call for GET .../audio (older audio is
    dropped first)."""
    start_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    """How long starting a call waits for the model session."""
    close_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """How long ending a call waits for the agent to finish before cancelling."""

    def __post_init__(self) -> None:
        if self.public_url is not None and not self.public_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"gateway option 'public_url' must start with http:// or https://, "
                f"got {self.public_url!r}."
            )

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name == 'token' and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"GatewayOptions({fields})"

    def auth_token(self) -> str | None:
        """The token requests must carry: this option, else ``PIPEFLOW_GATEWAY_TOKEN``."""
        return self.token or os.environ.get(TOKEN_ENV) or None
