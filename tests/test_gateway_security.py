"""The gateway's safe defaults: tokens, origins, content types, logs, listings, Twilio."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipeflow.cli import main
from pipeflow.errors import ConfigError, ProtocolError
from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.calls import BRIEF_FIELDS
from pipeflow.server.guard import RedactTokens, twilio_signature
from pipeflow.server.twilio import TwilioMediaTranslator
from tests.test_gateway_twilio import media_message, start_message

LIGHT = Path(__file__).parent / "data" / "gateway" / "light.yaml"
LOCAL = "http://127.0.0.1"


def local(tmp_path: Path, **options: object) -> TestClient:
    app = create_app(LIGHT, GatewayOptions(output_dir=str(tmp_path), **options))  # type: ignore[arg-type]
    return TestClient(app, base_url=LOCAL)


def error_of(response) -> str:
    return response.json()["error"]["message"]


# -- a token unless --no-auth, and --no-auth on loopback only -----------------------------


def test_the_gateway_needs_a_token_or_an_explicit_no_auth(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PIPEFLOW_GATEWAY_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs a token"):
        create_app(LIGHT, GatewayOptions(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="only for a loopback host"):
        create_app(LIGHT, GatewayOptions(output_dir=str(tmp_path), no_auth=True,
                                         host="0.0.0.0"))
    create_app(LIGHT, GatewayOptions(output_dir=str(tmp_path), no_auth=True, host="::1"))
    create_app(LIGHT, GatewayOptions(output_dir=str(tmp_path), token="t", host="0.0.0.0"))


def test_serve_refuses_to_start_open(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PIPEFLOW_GATEWAY_TOKEN", raising=False)
    assert main(["serve", str(LIGHT), "--output", str(tmp_path)]) == 2
    assert "--no-auth" in capsys.readouterr().err
    assert main(["serve", str(LIGHT), "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_without_a_token_only_a_loopback_host_is_served(tmp_path: Path) -> None:
    """A DNS-rebound page (evil.example resolving to 127.0.0.1) is same-origin with
    itself; without a token its Host is what gives it away."""
    with local(tmp_path, no_auth=True) as client:
        assert client.get("/api/calls").status_code == 200
        rebound = client.get("/api/calls", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 403
        assert "loopback" in error_of(rebound)


# -- Origin on WebSockets and POSTs, content types on POSTs ----------------------------


def test_websockets_from_another_origin_are_refused(tmp_path: Path) -> None:
    with local(tmp_path, no_auth=True, allowed_origins=["https://app.example.com"]) as client:
        client.post("/api/calls/o1/start")
        url = "ws://127.0.0.1/api/calls/o1/stream"
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect(url, headers={"Origin": "https://evil.example"}) as ws:
            ws.receive_json()
        assert refused.value.code == 4403
        assert "evil.example" in refused.value.reason
        for origin in ("http://127.0.0.1", "https://app.example.com"):
            with client.websocket_connect(url, headers={"Origin": origin}) as ws:
                assert ws.receive_json()["type"] == "call"
        with client.websocket_connect(url) as ws:  # not a browser: no Origin
            assert ws.receive_json()["type"] == "call"


def test_cross_site_simple_posts_cannot_drive_calls(tmp_path: Path) -> None:
    with local(tmp_path, no_auth=True) as client:
        client.post("/api/calls/p1/start")
        text = client.post("/api/calls/p1/text", content=b'{"q": "hello"}',
                           headers={"Content-Type": "text/plain"})
        assert text.status_code == 415
        assert "text/plain" in error_of(text)
        form = client.post("/api/calls/p1/end", data={"x": "1"})
        assert form.status_code == 415
        foreign = client.post("/api/calls/p1/end", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        assert client.get("/api/calls/p1").json()["state"] == "active"
        same = client.post("/api/calls/p1/end", headers={"Origin": "http://127.0.0.1"})
        assert same.status_code == 200
        assert client.post("/api/calls/p2/start", json={}).status_code == 201


# -- listings and logs ------------------------------------------------------------------


def test_listings_show_no_call_contents(tmp_path: Path) -> None:
    with local(tmp_path, token="t") as client:
        auth = {"Authorization": "Bearer t"}
        client.post("/api/calls/l1/start", headers=auth)
        client.post("/api/calls/l1/text", headers=auth,
                    json={"q": "my number is 555 0100, 12 Main Street"})
        client.post("/api/calls/l1/end", headers=auth)
        listing = client.get("/api/calls", headers=auth).json()["calls"]
        assert [set(call) for call in listing] == [set(BRIEF_FIELDS)]
        assert "Main Street" not in json.dumps(listing)
        assert "Main Street" in client.get("/api/calls/l1", headers=auth).json()["transcript"]


def test_tokens_in_query_strings_are_redacted_from_uvicorn_logs(caplog) -> None:
    logger = logging.getLogger("test.redact")
    logger.addFilter(RedactTokens())
    with caplog.at_level(logging.INFO, logger="test.redact"):  # uvicorn.access's format
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    "/api/calls/a/events?audio=1&token=s3cret-value", "1.1", 200)
        logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000",
                    "/api/calls/a/stream?token=s3cret-value&sample_rate=16000")
    assert "s3cret-value" not in caplog.text
    assert "token=***" in caplog.text and "sample_rate=16000" in caplog.text


# -- Twilio -----------------------------------------------------------------------------


def test_twilio_signature_is_twilios_documented_example() -> None:
    """The worked example of Twilio's "Validating requests" documentation."""
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                            params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_the_voice_webhook_needs_twilios_signature(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "acct-secret")
    public = "https://calls.example.com"
    form = {"CallSid": "CA42", "From": "+15550001"}
    with local(tmp_path, token="t", public_url=public) as client:
        auth = {"Authorization": "Bearer t"}
        unsigned = client.post("/twilio/voice", data=form, headers=auth)
        assert unsigned.status_code == 403
        assert "X-Twilio-Signature" in error_of(unsigned)
        forged = twilio_signature("acct-secret", public + "/twilio/voice", {**form, "To": "x"})
        assert client.post("/twilio/voice", data=form,
                           headers={**auth, "X-Twilio-Signature": forged}).status_code == 403
        good = twilio_signature("acct-secret", public + "/twilio/voice", form)
        signed = client.post("/twilio/voice", data=form,
                             headers={**auth, "X-Twilio-Signature": good})
        assert signed.status_code == 200
        assert 'url="wss://calls.example.com/twilio/media"' in signed.text


def test_twiml_never_points_at_a_forged_host(tmp_path: Path) -> None:
    with local(tmp_path, token="t") as client:
        auth = {"Authorization": "Bearer t"}
        forged = client.post("/twilio/voice", data={"CallSid": "CA1"},
                             headers={**auth, "Host": "attacker.example"})
        assert forged.status_code == 400
        assert "--public-url" in error_of(forged)
        assert "<Stream" not in forged.text
        mine = client.post("/twilio/voice", data={"CallSid": "CA1"}, headers=auth)
        assert 'url="ws://127.0.0.1/twilio/media"' in mine.text


def test_a_media_socket_that_never_starts_is_closed(tmp_path: Path) -> None:
    with local(tmp_path, no_auth=True, media_start_timeout_s=0.3) as client, \
            client.websocket_connect("ws://127.0.0.1/twilio/media") as ws:
        ws.send_text(json.dumps({"event": "connected", "protocol": "Call"}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    assert "start" in closed.value.reason


def test_a_second_start_on_one_socket_is_refused(tmp_path: Path) -> None:
    translator = TwilioMediaTranslator()
    translator.receive(start_message())
    with pytest.raises(ProtocolError, match="second 'start'"):
        translator.receive(start_message())
    with local(tmp_path, no_auth=True) as client:
        with client.websocket_connect("ws://127.0.0.1/twilio/media") as ws:
            ws.send_text(start_message(call_id="first-call"))
            ws.send_text(start_message(call_id="second-call"))
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    ws.receive_text()
        assert closed.value.code == 1008
        calls = {c["id"]: c["state"] for c in client.get("/api/calls").json()["calls"]}
        assert calls == {"first-call": "ended"}


def test_a_huge_media_payload_is_refused(tmp_path: Path) -> None:
    translator = TwilioMediaTranslator()
    translator.receive(start_message())
    assert translator.receive(media_message(b"\xff" * 160))  # Twilio's 20 ms
    with pytest.raises(ProtocolError, match="over the limit"):
        translator.receive(media_message(b"\xff" * 4 * 1024 * 1024))
    with local(tmp_path, no_auth=True) as client:
        with client.websocket_connect("ws://127.0.0.1/twilio/media") as ws:
            ws.send_text(start_message(call_id="huge"))
            ws.send_text(media_message(b"\xff" * 4 * 1024 * 1024))
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    ws.receive_text()
        assert closed.value.code == 1008 and "over the limit" in closed.value.reason
        assert client.get("/api/calls/huge").json()["state"] == "ended"
