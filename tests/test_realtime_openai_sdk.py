"""Interoperability: the official openai SDK talks to the local Realtime server.

The client code below is what docs/realtime.md shows; pointed at the real
API (no ``websocket_base_url``, a real key) it runs unchanged.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pipeflow.realtime.server import LocalRealtimeServer
from tests.realtime_fixtures import *  # noqa: F403
from tests.realtime_fixtures import StartServer

openai = pytest.importorskip("openai", reason="the openai SDK (a dev dependency) is not installed")

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def get_weather(location: str) -> dict[str, Any]:
    return {"city": location, "temperature": 21}


async def run_turn(connection: Any, seen: list[str]) -> tuple[bytes, str, list[Any]]:
    """Read one response: its audio, its transcript and its function calls."""
    audio, transcript, calls = bytearray(), "", []
    async for event in connection:
        seen.append(event.type)
        if event.type in ("response.output_audio.delta", "response.audio.delta"):
            audio += base64.b64decode(event.delta)
        elif event.type in ("response.output_audio_transcript.done",
                            "response.audio_transcript.done"):
            transcript += event.transcript
        elif event.type == "response.function_call_arguments.done":
            calls.append(event)
        elif event.type == "error":
            raise AssertionError(f"server error: {event.error.message}")
        elif event.type == "response.done":
            assert event.response.status == "completed"
            return bytes(audio), transcript, calls
    raise AssertionError("the connection closed before response.done")


async def test_ga_text_turn_with_streamed_audio_and_a_function_call_round_trip(
    start_realtime_server: StartServer,
) -> None:
    server: LocalRealtimeServer = await start_realtime_server(api_key="sk-local-test")
    client = openai.AsyncOpenAI(api_key="sk-local-test", websocket_base_url=server.base_url)
    seen: list[str] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(session={
            "type": "realtime",
            "instructions": "You are a weather assistant.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000},
                          "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
            },
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
        })
        await connection.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What's the weather in Paris?"}],
        })
        await connection.response.create()
        audio, transcript, calls = await run_turn(connection, seen)
        assert transcript == "Let me check."
        assert len(audio) > 24000  # more than half a second of 24 kHz PCM16 speech
        [call] = calls
        assert call.name == "get_weather"
        output = get_weather(**json.loads(call.arguments))
        await connection.conversation.item.create(item={
            "type": "function_call_output", "call_id": call.call_id,
            "output": json.dumps(output),
        })
        await connection.response.create()
        audio, transcript, calls = await run_turn(connection, seen)
        assert transcript == "It is 21 degrees in Paris."
        assert audio and not calls
    assert seen[:2] == ["session.created", "session.updated"]
    assert "response.output_audio_transcript.delta" in seen
    session = server.sessions[0]
    assert session.config.instructions == "You are a weather assistant."
    assert [t["name"] for t in session.config.tools] == ["get_weather"]


async def test_a_wrong_key_is_refused_like_the_real_api(
    start_realtime_server: StartServer,
) -> None:
    server = await start_realtime_server(api_key="sk-right")
    client = openai.AsyncOpenAI(api_key="sk-wrong", websocket_base_url=server.base_url)
    with pytest.raises(Exception, match="401"):
        async with client.realtime.connect(model="gpt-realtime"):
            pass
    assert server.refused == 1 and not server.sessions


async def test_beta_sdk_client_gets_beta_event_names(realtime_server: LocalRealtimeServer) -> None:
    client = openai.AsyncOpenAI(api_key="unused", websocket_base_url=realtime_server.base_url)
    seen: list[str] = []
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as connection:
        await connection.session.update(session={
            "modalities": ["audio", "text"], "input_audio_format": "pcm16",
            "output_audio_format": "pcm16", "turn_detection": None,
        })
        await connection.response.create()
        audio, transcript, _ = await run_turn(connection, seen)
    assert transcript == "Hello from the test server."  # the greeting: no user input yet
    assert audio
    assert "response.audio.delta" in seen and "response.output_audio.delta" not in seen
    assert "conversation.item.created" in seen and "conversation.item.added" not in seen
    assert realtime_server.sessions[0].shape == "beta"
