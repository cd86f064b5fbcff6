"""Event callbacks: names, the bus, the callbacks stage and webhooks."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from pipeflow.agent import Agent
from pipeflow.errors import ConfigError
from pipeflow.events import EVENT_NAMES, Event, EventBus, event_for, make_event
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    ErrorFrame,
    Interrupt,
    ResponseDone,
    SessionStarted,
    SpeechStarted,
    TextInput,
    ToolCall,
    Transcript,
)
from pipeflow.pipeline import PipelineContext
from pipeflow.stages.callbacks import Callbacks
from pipeflow.testing import run_stage

received: list[Event] = []


def record(event: Event) -> None:
    """A callback referenced from YAML-style options in a test."""
    received.append(event)


def test_event_names_for_frames() -> None:
    assert event_for(Transcript(role="user", text="hi")) == "user_transcript"
    assert event_for(Transcript(role="agent", text="hi")) == "agent_transcript"
    assert event_for(Transcript(role="agent", text="h", final=False)) is None
    assert event_for(AudioFrame(pcm=b"", sample_rate=8000)) is None
    assert event_for(Interrupt()) == "interrupted"
    assert event_for(EndOfStream()) == "session_closed"
    assert len(EVENT_NAMES) == 13


def test_unknown_event_name_suggests() -> None:
    bus = EventBus()
    with pytest.raises(ConfigError, match="did you mean 'tool_called'"):
        bus.on("tool_caled", print)


async def test_raising_callback_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def bad(event: Event) -> None:
        raise RuntimeError("callback bug")

    async def good(event: Event) -> None:
        seen.append(event.name)

    bus.on("error", bad)
    bus.on("error", good)
    with caplog.at_level(logging.ERROR):
        failures = await bus.dispatch(make_event("error", ErrorFrame(stage="x", message="m"), "s"))
    assert failures == 1
    assert seen == ["error"]
    assert "for event 'error' raised" in caplog.text


async def test_callbacks_stage_delivers_sync_and_async_callbacks_in_order() -> None:
    seen: list[tuple[str, str]] = []

    async def on_transcript(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append((event.name, event.frame.text))

    def on_tool(event: Event) -> None:
        seen.append((event.name, event.frame.name))

    def broken(event: Event) -> None:
        raise ValueError("nope")

    agent = Agent(
        "hi", callbacks={"user_transcript": on_transcript, "tool_called": [on_tool, broken]}
    )
    context = PipelineContext(agent=agent, session_id="call-1")
    frames = [
        SessionStarted(session_id="call-1"),
        Transcript(role="user", text="one pizza"),
        ToolCall(call_id="c1", name="add_to_order"),
        Transcript(role="user", text="thanks"),
    ]
    result = await run_stage(Callbacks(), frames, context=context)
    assert result.down[: len(frames)] == frames
    assert seen == [
        ("user_transcript", "one pizza"),
        ("tool_called", "add_to_order"),
        ("user_transcript", "thanks"),
    ]


async def test_callbacks_from_module_reference_and_session_closed_once() -> None:
    received.clear()
    stage = Callbacks(callbacks={"session_closed": "tests.test_events:record",
                                 "text_received": ["tests.test_events:record"]})
    await run_stage(stage, [TextInput(text="menu"), EndOfStream()])
    assert [e.name for e in received] == ["text_received", "session_closed"]
    assert received[0].session_id


async def test_bad_callback_reference_is_a_config_error() -> None:
    result = await run_stage(Callbacks(callbacks={"error": "tests.test_events:nothing"}), [])
    assert "has no callback" in result.errors[0].message


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        body = json.loads(self.rfile.read(length))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.bodies.append({"body": body, "auth": self.headers.get("authorization")})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server():  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.bodies = []
    yield server
    server.shutdown()
    server.server_close()


async def test_webhook_posts_events_with_retries(webhook_server) -> None:  # type: ignore[no-untyped-def]
    _Hook.fail_first = 2
    url = f"http://127.0.0.1:{webhook_server.server_address[1]}/events"
    stage = Callbacks(
        webhook=url,
        webhook_events=["user_speech_started", "response_done"],
        webhook_backoff_s=0.01,
        webhook_headers={"Authorization": "Bearer t0k"},
    )
    frames = [SpeechStarted(at=1.5), ResponseDone(response_id="r1"), TextInput(text="x")]
    await run_stage(stage, frames)
    names = [b["body"]["name"] for b in _Hook.bodies]
    assert names == ["user_speech_started", "response_done"]
    assert _Hook.bodies[0]["body"]["frame"] == {"type": "speech_started", "at": 1.5, "item_id": "",
                                                "tentative": False}
    assert _Hook.bodies[0]["auth"] == "Bearer t0k"


async def test_webhook_gives_up_without_stopping_the_stream(caplog) -> None:  # type: ignore[no-untyped-def]
    stage = Callbacks(webhook="http://127.0.0.1:9/never", webhook_retries=1,
                      webhook_backoff_s=0.01, webhook_events=["interrupted"])
    with caplog.at_level(logging.WARNING):
        result = await run_stage(stage, [Interrupt(), TextInput(text="still flowing")])
    assert TextInput(text="still flowing") in result.down
    assert "gave up on event 'interrupted'" in caplog.text
