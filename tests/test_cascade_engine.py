"""The conversation engine as the cascade drives it: a request refused before it began."""

from __future__ import annotations

from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.events import ModelError, ResponseBegan, ResponseEnded, StartResponse
from pipeflow.frames import ErrorFrame, Say, TextInput


def starts(engine: ConversationEngine) -> list[StartResponse]:
    return [c for c in engine.commands_to_send() if isinstance(c, StartResponse)]


def test_a_request_that_failed_before_it_began_still_starts_the_queued_ones() -> None:
    engine = ConversationEngine(EngineOptions(name="llm"))
    engine.start(0.0)
    engine.receive_frame(TextInput(text="first"), 0.0)
    (first,) = starts(engine)
    engine.receive_frame(Say(text="queued one"), 0.1)  # asked while the first is pending
    engine.receive_frame(TextInput(text="queued two"), 0.2)
    assert starts(engine) == []
    # The provider refuses the first request (a 401, a 429...): it never begins.
    engine.receive_event(ModelError(message="refused", code="http_429",
                                    request_id=first.request_id), 0.3)
    errors = [f for f in engine.frames_to_emit() if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["http_429"]
    (second,) = starts(engine)  # the queue goes on, one at a time
    assert second.say == "queued one" and second.request_id != first.request_id
    engine.receive_event(ResponseBegan(response_id="r2"), 0.4)
    engine.receive_event(ResponseEnded(response_id="r2"), 0.5)
    (third,) = starts(engine)
    assert third.say is None
    engine.receive_event(ModelError(message="refused", code="http_500",
                                    request_id=third.request_id), 0.6)
    assert starts(engine) == [] and engine.idle


def test_an_error_for_another_request_starts_nothing() -> None:
    engine = ConversationEngine(EngineOptions(name="llm"))
    engine.start(0.0)
    engine.receive_frame(TextInput(text="first"), 0.0)
    starts(engine)
    engine.receive_frame(TextInput(text="second"), 0.1)
    engine.receive_event(ModelError(message="late", request_id="pf_response_99"), 0.2)
    assert starts(engine) == []
    assert not engine.idle
