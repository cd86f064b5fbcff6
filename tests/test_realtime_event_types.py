"""The event types pipeflow decodes against those the openai SDK defines.

Every server event type of the SDK (GA and beta) is either decoded into a
struct by ``pipeflow.realtime.events`` or listed in ``IGNORED_SERVER`` with
the reason pipeflow leaves it alone (it then arrives as ``UnknownEvent``,
passed on, never dropped). A new event type in a future SDK fails
``test_every_sdk_server_event_is_decoded_or_deliberately_ignored`` until it
is decoded or listed here, instead of being a silent gap. The same for
client events, which the local server decodes.
"""

from __future__ import annotations

import pytest

from pipeflow.errors import ProtocolError
from pipeflow.realtime import events as ev
from tests.realtime_sdk import event_types

IGNORED_SERVER: dict[str, str] = {
    "conversation.created": "beta: the conversation's id right after session.created; one "
                            "conversation per connection, nothing in it to act on",
    "conversation.item.retrieved": "the answer to conversation.item.retrieve, never sent",
    "conversation.item.input_audio_transcription.segment": "diarized transcription segments; "
                                                           "the completed transcript is used",
    "input_audio_buffer.dtmf_event_received": "SIP calls only; pipeflow speaks WebSocket",
    "input_audio_buffer.timeout_triggered": "needs turn_detection.idle_timeout_ms, never set",
    "output_audio_buffer.started": "WebRTC/SIP only",
    "output_audio_buffer.stopped": "WebRTC/SIP only",
    "output_audio_buffer.cleared": "WebRTC/SIP only",
    "mcp_list_tools.in_progress": "MCP tools; pipeflow's tools are functions",
    "mcp_list_tools.completed": "MCP tools",
    "mcp_list_tools.failed": "MCP tools",
    "response.mcp_call.in_progress": "MCP tools",
    "response.mcp_call.completed": "MCP tools",
    "response.mcp_call.failed": "MCP tools",
    "response.mcp_call_arguments.delta": "MCP tools",
    "response.mcp_call_arguments.done": "MCP tools",
}
"""SDK server events pipeflow does not decode, and why."""

NOT_SENT_CLIENT: dict[str, str] = {
    "conversation.item.retrieve": "pipeflow keeps its own transcript of the conversation",
    "output_audio_buffer.clear": "WebRTC/SIP only",
}
"""SDK client events pipeflow never sends (and the local server refuses)."""

EXTENSIONS_CLIENT = {"input_text.append"}
"""Client events the local server accepts that the SDK does not define (aliases)."""

SDK_SERVER = event_types("ga", "server") | event_types("beta", "server")
SDK_CLIENT = event_types("ga", "client") | event_types("beta", "client")


def test_every_sdk_server_event_is_decoded_or_deliberately_ignored() -> None:
    decoded = set(ev.SERVER_EVENT_TYPES)
    assert not decoded & IGNORED_SERVER.keys(), "decoded and listed as ignored"
    gaps = SDK_SERVER - decoded - IGNORED_SERVER.keys()
    assert not gaps, f"SDK server events neither decoded nor listed as ignored: {sorted(gaps)}"


def test_pipeflow_decodes_no_server_event_the_sdk_does_not_define() -> None:
    assert not set(ev.SERVER_EVENT_TYPES) - SDK_SERVER
    assert not IGNORED_SERVER.keys() - SDK_SERVER, "ignored entries the SDK no longer has"


def test_client_events_match_the_sdk_but_for_the_listed_ones() -> None:
    ours = set(ev.CLIENT_EVENT_TYPES)
    assert ours - SDK_CLIENT == EXTENSIONS_CLIENT
    assert SDK_CLIENT - ours == NOT_SENT_CLIENT.keys()


@pytest.mark.parametrize("kind", sorted(IGNORED_SERVER))
def test_an_ignored_event_arrives_whole_as_unknown(kind: str) -> None:
    event = ev.decode_server_event(f'{{"type": "{kind}", "event_id": "e1"}}')
    assert isinstance(event, ev.UnknownEvent) and event.data["event_id"] == "e1"


def test_private_struct_bases_are_no_event_types() -> None:
    assert "_Delta" not in ev.SERVER_EVENT_TYPES
    assert isinstance(ev.decode_server_event('{"type": "_Delta"}'), ev.UnknownEvent)
    with pytest.raises(ProtocolError, match="unknown client event type"):
        ev.decode_client_event('{"type": "ClientEvent"}')
