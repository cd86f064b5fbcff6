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

ROOT = Path(__file__).resolve().parent.parent
CALL_YAML = ROOT / "pipelines" / "call.yaml"
FAST = ["model.speed=0", "model.first_audio_delay_ms=0"]
"""Overrides that make the local Realtime server answer at once."""

CALLER_LINES = (
    "How much is a pizza?",
    "Two pizzas and one salad, please.",
    "And one ice cream.",
    "No, that is all.",
    "Five five five, one two three, four five six seven.",
    "Twelve Main Street, Springfield.",
    "Yes, please place the order.",
)
"""What the caller says, one line per script turn of pipelines/orderline/script.yaml."""

PHONE_BAND_NUMBER = "5552124389"
PHONE_BAND_ADDRESS = "42 Oak Avenue, Riverside"
PHONE_BAND_LINES = tuple(
    {"Five five five, one two three, four five six seven.":
         "Five five five, two one two, four three eight nine.",
     "Twelve Main Street, Springfield.": "Forty two Oak Avenue, Riverside."}.get(line, line)
    for line in CALLER_LINES)
"""``CALLER_LINES`` for calls at 8 kHz (Twilio): the offline recogniser, a 16 kHz model,
hears "six" and "seven" through the phone band as other digits (the band cuts their
"s"; docs/asr.md measures it: 3 of 40 spoken numbers right at 8 kHz) and mishears
"Twelve Main Street" there, so these calls give a number and an address it hears and
assert that exactly these are stored. They test the phone line, not the recogniser."""


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
