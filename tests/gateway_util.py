"""Helpers for the gateway tests: a real uvicorn server on 127.0.0.1 and caller audio."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import uvicorn

from pipeflow.commands.serve import websocket_impl
from pipelines.orderline.caller import (  # the soak's caller says the same
    CALLER_LINES,
    PHONE_BAND_ADDRESS,
    PHONE_BAND_LINES,
    PHONE_BAND_NUMBER,
)

ROOT = Path(__file__).resolve().parent.parent
CALL_YAML = ROOT / "pipelines" / "call.yaml"
FAST = ["model.speed=0", "model.first_audio_delay_ms=0"]
"""Overrides that make the local Realtime server answer at once."""

__all__ = ["CALLER_LINES", "CALL_YAML", "FAST", "PHONE_BAND_ADDRESS", "PHONE_BAND_LINES",
           "PHONE_BAND_NUMBER", "ROOT", "caller_samples", "free_port", "serving"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app: object, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 in this loop; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                            ws=websocket_impl(), lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def caller_samples(rate: int, lines: tuple[str, ...] = CALLER_LINES, gap_s: float = 1.2,
                   lead_s: float = 0.5, tail_s: float = 1.5) -> np.ndarray:
    """Speech for ``lines`` with ``gap_s`` of silence between them (int16 at ``rate``)."""
    from tests.speech import speech_track

    track = speech_track(lines, pauses=(gap_s,) * (len(lines) - 1), sample_rate=rate,
                         lead=lead_s, tail=tail_s)
    return track.samples
