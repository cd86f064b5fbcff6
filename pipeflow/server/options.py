"""Options of the call gateway (``pipeflow serve``).

Every limit the gateway enforces lives here, so the command line, tests and
embedding code set them in one place. The bearer token comes from the
options, else from the ``PIPEFLOW_GATEWAY_TOKEN`` environment variable; it is
never part of a repr.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import msgspec

from pipeflow.errors import ConfigError

__all__ = ["TOKEN_ENV", "TWILIO_TOKEN_ENV", "GatewayOptions", "is_loopback"]

TOKEN_ENV = "PIPEFLOW_GATEWAY_TOKEN"
"""Environment variable holding the gateway's bearer token."""
TWILIO_TOKEN_ENV = "TWILIO_AUTH_TOKEN"
"""Environment variable holding the Twilio account's auth token (Twilio's convention)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, without port) only reaches this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewayOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the gateway listens, whom it lets in and how much it takes."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 for every interface)."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    """TCP port to listen on (0 picks a free one)."""
    token: str | None = None
    """Bearer token every API, WebSocket and Twilio request must carry; empty:
    PIPEFLOW_GATEWAY_TOKEN. Without either the gateway refuses to start unless
    ``no_auth`` is set."""
    no_auth: bool = False
    """Serve without a token (local development): allowed on a loopback host only."""
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    """Origins (https://app.example.com) besides the gateway's own whose pages
    may open its WebSockets and POST to it; a browser from any other origin is
    refused (403)."""
    twilio_auth_token: str | None = None
    """Twilio account auth token checking X-Twilio-Signature on the voice
    webhook; empty: TWILIO_AUTH_TOKEN, else signatures are not checked."""
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A request whose head or body stalls this long is dropped (a half-sent
    request holds no connection)."""
    media_start_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A Twilio media socket that sends no ``start`` within this many seconds is closed."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    """Largest request body accepted (larger ones get 413)."""
    max_calls: Annotated[int, msgspec.Meta(ge=1)] = 100
    """Calls live at the same time; one more gets 503 with Retry-After."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Connections open at the same time (calls' WebSockets and event streams
    included); one more is answered 503 and closed at once. Lowered to what
    the process's file descriptor limit allows."""
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
    TwiML; empty: only a loopback Host (local testing) gets TwiML, since a
    Host header is whatever the client says."""
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
    record_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """A live call's ``call.json`` is rewritten after each turn and tool call, at most
    once per this many seconds (0: every time), so a gateway killed outright loses
    at most its calls' last moments."""

    def __post_init__(self) -> None:
        if self.public_url is not None and not self.public_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"gateway option 'public_url' must start with http:// or https://, "
                f"got {self.public_url!r}."
            )
        for origin in self.allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin:
                raise ConfigError(f"gateway option 'allowed_origins': {origin!r} is not an "
                                  "origin like https://app.example.com (no path).")

    def check_auth(self) -> None:
        """Refuse to serve unauthenticated except on loopback with ``no_auth``.

        Raises:
            ConfigError: no token and no ``no_auth``, or ``no_auth`` on a host
                other machines can reach.
        """
        if self.auth_token() is not None:
            return
        if not self.no_auth:
            raise ConfigError(
                "the gateway needs a token: pass --token or set PIPEFLOW_GATEWAY_TOKEN "
                "(or --no-auth for local development on 127.0.0.1)."
            )
        if not is_loopback(self.host):
            raise ConfigError(
                f"--no-auth is only for a loopback host (127.0.0.1, ::1, localhost); "
                f"host {self.host!r} is reachable from other machines: give a token."
            )

    def twilio_token(self) -> str | None:
        """The Twilio auth token signatures are checked with: this option, else the env."""
        return self.twilio_auth_token or os.environ.get(TWILIO_TOKEN_ENV) or None

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name in ('token', 'twilio_auth_token') and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"GatewayOptions({fields})"

    def auth_token(self) -> str | None:
        """The token requests must carry: this option, else ``PIPEFLOW_GATEWAY_TOKEN``."""
        return self.token or os.environ.get(TOKEN_ENV) or None
