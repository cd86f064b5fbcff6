"""The call gateway's HTTP API and call WebSocket, through Starlette's TestClient.

These tests use a pipeline with no model (push -> callbacks -> null sink ->
jsonl), so they exercise the gateway itself: ids, limits, errors,
authentication, the event stream and the WebSocket protocol. The model's
side is covered by the Twilio, browser and load tests.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.calls import CALL_ID

LIGHT = Path(__file__).parent / "data" / "gateway" / "light.yaml"
PCM_20MS = b"\x01\x00" * 320


@pytest.fixture
def client(tmp_path: Path):
    app = create_app(LIGHT, GatewayOptions(no_auth=True, output_dir=str(tmp_path), max_calls=3,
                                           max_body_bytes=4096, retry_after_s=7))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == response.status_code
    return body["error"]["message"]


def test_a_call_from_start_to_end_keeps_its_record(client: TestClient, tmp_path: Path) -> None:
    started = client.post("/api/calls/order-1/start", json={"sample_rate": 16000})
    assert started.status_code == 201
    assert started.json()["state"] == "active"

    assert client.post("/api/calls/order-1/text", json={"q": "two pizzas"}).status_code == 202
    audio = client.post("/api/calls/order-1/audio?sample_rate=16000", content=PCM_20MS,
                        headers={"content-type": "application/octet-stream"})
    assert audio.status_code == 202
    assert audio.json() == {"accepted_bytes": 640, "sample_rate": 16000, "duration_ms": 20}
    as_json = client.post("/api/calls/order-1/audio",
                          json={"pcm_b64": base64.b64encode(PCM_20MS).decode(),
                                "sample_rate": 8000})
    assert as_json.json()["duration_ms"] == 40
    assert client.post("/api/calls/order-1/commit").status_code == 202

    ended = client.post("/api/calls/order-1/end")
    assert ended.status_code == 200
    record = ended.json()
    assert record["state"] == "ended" and record["end_reason"] == "ended"
    assert record["transcript"] == "user: two pizzas"
    assert [t["text"] for t in record["turns"]] == ["two pizzas"]

    again = client.get("/api/calls/order-1").json()
    assert again["transcript"] == "user: two pizzas" and again["state"] == "ended"
    stored = json.loads((tmp_path / "order-1" / "call.json").read_text())
    assert stored["transcript"] == "user: two pizzas"
    frames = (tmp_path / "order-1" / "frames.jsonl").read_text()
    assert '"text":"two pizzas"' in frames  # the file sink wrote into the call's folder

    late = client.post("/api/calls/order-1/text", json={"q": "hello?"})
    assert late.status_code == 409
    assert "ended" in error_of(late)


def test_starting_an_existing_call_is_a_conflict(client: TestClient) -> None:
    assert client.post("/api/calls/twice/start").status_code == 201
    second = client.post("/api/calls/twice/start")
    assert second.status_code == 409
    assert "already exists" in error_of(second)
    client.post("/api/calls/twice/end")
    assert client.post("/api/calls/twice/start").status_code == 409  # its record is kept


def test_unknown_calls_are_404_on_every_route(client: TestClient) -> None:
    for method, path in [("get", ""), ("post", "/audio"), ("post", "/commit"),
                         ("post", "/cancel"), ("post", "/end"), ("get", "/audio"),
                         ("get", "/events")]:
        response = getattr(client, method)(f"/api/calls/nobody{path}")
        assert response.status_code == 404, path
        assert "no call 'nobody'" in error_of(response)
    assert client.post("/api/calls/nobody/text", json={"q": "hi"}).status_code == 404


@pytest.mark.parametrize("bad_id", ["a.b", "..", "a%2F..%2Fetc", "x" * 65, "caf%C3%A9", "%20"])
def test_malformed_call_ids_are_refused(client: TestClient, bad_id: str,
                                        tmp_path: Path) -> None:
    response = client.post(f"/api/calls/{bad_id}/start")
    assert response.status_code in (400, 404)
    if response.status_code == 400:
        assert "is not valid" in error_of(response)
    assert list(tmp_path.iterdir()) == []  # nothing was created anywhere


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=70))
def test_only_safe_ids_ever_reach_the_disk(client: TestClient, text: str) -> None:
    from pipeflow.server.calls import CallError, check_call_id

    try:
        check_call_id(text)
    except CallError as exc:
        assert exc.status == 400
        assert not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text)
    else:
        assert CALL_ID.fullmatch(text) and "/" not in text and ".." not in text


def test_bad_bodies_get_400_with_a_sentence(client: TestClient) -> None:
    client.post("/api/calls/bodies/start")
    cases = [
        ("/audio", {"content": b"\x00" * 3}, "odd number"),
        ("/audio", {"content": b""}, "empty"),
        ("/audio", {"json": {"pcm_b64": "***"}}, "base64"),
        ("/audio", {"json": {"pcm": "AAAA"}}, "pcm"),
        ("/audio?sample_rate=fast", {"content": PCM_20MS}, "sample rate"),
        ("/audio?sample_rate=0", {"content": PCM_20MS}, "sample rate"),
        # the same range for the query parameter and for JSON bodies
        ("/audio?sample_rate=384000", {"content": PCM_20MS}, "8000 to 192000 hz"),
        ("/audio", {"json": {"pcm_b64": "AAAA", "sample_rate": 384000}}, "192000"),
        ("/text", {"content": b"{not json"}, "not valid"),
        ("/text", {"json": {"q": ""}}, "q"),
        ("/text", {"json": {"text": "hi"}}, "q"),
        ("/text", {"json": ["q"]}, "object"),
    ]
    for path, kwargs, words in cases:
        if "json" in kwargs:
            response = client.post(f"/api/calls/bodies{path}", json=kwargs["json"])
        else:
            response = client.post(f"/api/calls/bodies{path}", content=kwargs["content"],
                                   headers={"content-type": "application/octet-stream"})
        assert response.status_code == 400, (path, kwargs, response.text)
        assert words in error_of(response).lower(), (path, response.text)
    start = client.post("/api/calls/other/start", json={"sample_rate": "high"})
    assert start.status_code == 400


def test_bodies_over_the_limit_get_413(client: TestClient) -> None:
    client.post("/api/calls/big/start")
    response = client.post("/api/calls/big/audio", content=b"\x00" * 5000)
    assert response.status_code == 413
    assert "over the limit of 4096 bytes" in error_of(response)

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(5):
            yield b"\x00" * 1000

    streamed = client.post("/api/calls/big/audio", content=chunks())
    assert streamed.status_code == 413


def test_the_call_limit_answers_503_with_retry_after(client: TestClient) -> None:
    for index in range(3):
        assert client.post(f"/api/calls/c{index}/start").status_code == 201
    full = client.post("/api/calls/c3/start")
    assert full.status_code == 503
    assert full.headers["retry-after"] == "7"
    assert "limit of 3 live calls" in error_of(full)
    client.post("/api/calls/c0/end")
    assert client.post("/api/calls/c3/start").status_code == 201
    listing = client.get("/api/calls").json()
    assert listing["live"] == 3
    assert {c["id"]: c["state"] for c in listing["calls"]}["c0"] == "ended"


def test_token_is_required_when_configured(tmp_path: Path) -> None:
    app = create_app(LIGHT, GatewayOptions(no_auth=True, output_dir=str(tmp_path), token="s3cret"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        refused = client.post("/api/calls/a/start")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get("/api/calls", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/api/calls/a/start", headers=good).status_code == 201
        assert client.get("/api/calls/a?token=s3cret").status_code == 200
        basic = base64.b64encode(b"twilio:s3cret").decode()
        assert client.post("/twilio/voice", headers={"Authorization": f"Basic {basic}"},
                           data={"CallSid": "CA1"}).status_code == 200
        assert client.post("/twilio/voice").status_code == 401
        assert client.get("/").status_code == 200  # the page itself is public
        assert client.get("/openapi.json").status_code == 200
        with pytest.raises(WebSocketDisconnect) as refused_ws, \
                client.websocket_connect("ws://127.0.0.1/api/calls/a/stream") as ws:
            ws.receive_json()
        assert refused_ws.value.code == 4401
        with client.websocket_connect("ws://127.0.0.1/api/calls/a/stream?token=s3cret") as ws:
            assert ws.receive_json()["type"] == "call"


def test_events_stream_as_server_sent_events(client: TestClient) -> None:
    client.post("/api/calls/sse/start")
    client.post("/api/calls/sse/text", json={"q": "hello"})
    with client.stream("GET", "/api/calls/sse/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: call"
        assert json.loads(next(lines).removeprefix("data: "))["id"] == "sse"
        client.post("/api/calls/sse/text", json={"q": "again"})
        events = []
        for line in lines:
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if line.startswith("data: ") and events[-1] == "text_input":
                assert json.loads(line.removeprefix("data: "))["text"] == "again"
                client.post("/api/calls/sse/end")
            if events and events[-1] == "end":
                break
    assert events[0] == "text_input" and events[-1] == "end"
    finished = client.get("/api/calls/sse/events")  # an ended call: its summary, then end
    assert finished.text.startswith("event: call\n") and "event: end" in finished.text


def test_agent_audio_of_an_ended_call_is_a_wav(client: TestClient) -> None:
    client.post("/api/calls/wav/start")
    client.post("/api/calls/wav/end")
    response = client.get("/api/calls/wav/audio")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"


def test_call_websocket_protocol(client: TestClient) -> None:
    client.post("/api/calls/ws1/start")
    with client.websocket_connect("ws://127.0.0.1/api/calls/ws1/stream?sample_rate=16000") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "call" and hello["call"]["id"] == "ws1"
        ws.send_bytes(PCM_20MS)
        ws.send_text(json.dumps({"type": "text", "q": "a pizza"}))
        assert ws.receive_json() == {"type": "text_input", "text": "a pizza", "role": "user"}
        ws.send_bytes(b"\x00" * 3)
        assert "even number" in ws.receive_json()["message"]
        ws.send_text("{}")
        assert ws.receive_json()["type"] == "error"
        ws.send_text(json.dumps({"type": "config", "sample_rate": 8000}))
        ws.send_text(json.dumps({"type": "end"}))
        last = ws.receive_json()
        while last["type"] != "ended":
            last = ws.receive_json()
        assert last["call"]["state"] == "ended"
        assert last["call"]["transcript"] == "user: a pizza"


def test_websocket_refusals_close_with_4000_plus_status(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as unknown, \
            client.websocket_connect("ws://127.0.0.1/api/calls/ghost/stream") as ws:
        ws.receive_json()
    assert unknown.value.code == 4404
    client.post("/api/calls/done/start")
    client.post("/api/calls/done/end")
    with pytest.raises(WebSocketDisconnect) as ended, \
            client.websocket_connect("ws://127.0.0.1/api/calls/done/stream") as ws:
        ws.receive_json()
    assert ended.value.code == 4409
    plain = client.get("/api/calls/done/stream")
    assert plain.status_code == 426


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 404
    wrong = client.delete("/api/calls/x")
    assert wrong.status_code == 405
    assert "DELETE" in error_of(wrong)


def test_twiml_connects_the_call_to_the_media_stream(tmp_path: Path) -> None:
    options = GatewayOptions(no_auth=True, output_dir=str(tmp_path), public_url="https://calls.example.com")
    with TestClient(create_app(LIGHT, options), base_url="http://127.0.0.1") as client:
        response = client.post("/twilio/voice", data={"CallSid": "CA42", "From": "+15550001"})
    assert response.headers["content-type"].startswith("application/xml")
    assert '<Stream url="wss://calls.example.com/twilio/media">' in response.text
    assert '<Parameter name="call_id" value="CA42"/>' in response.text
    assert '<Parameter name="from" value="+15550001"/>' in response.text


def test_the_page_and_its_script_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert "AudioWorklet" in script.text and "/stream" in script.text
    assert client.get("/healthz").json() == {"status": "ok", "live": 0, "max_calls": 3}
