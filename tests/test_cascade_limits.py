"""The local server's HTTP endpoints refuse hostile bodies with clear errors, never a 500."""

from __future__ import annotations

import io
import wave

import httpx
import pytest

from pipeflow.cascade.audio_server import MAX_UPLOAD_SECONDS, local_api_app
from pipeflow.cascade.server import MAX_JSON_BYTES


class _NoTranscriber:
    def transcribe(self, pcm: bytes, sample_rate: int = 24000, **_: object) -> str:
        raise AssertionError("a refused upload must not be decoded")


def _client() -> httpx.AsyncClient:
    app = local_api_app(transcriber=_NoTranscriber())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/speech"])
async def test_deeply_nested_json_is_a_400_not_a_traceback(path: str) -> None:
    async with _client() as http:
        reply = await http.post(path, content=b"[" * 5000 + b"]" * 5000,
                                headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "nested too deeply" in reply.json()["error"]["message"]


async def test_a_chat_body_over_the_limit_is_refused_before_it_is_read_whole() -> None:
    async with _client() as http:
        reply = await http.post("/v1/chat/completions", content=b" " * (MAX_JSON_BYTES + 1),
                                headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert f"at most {MAX_JSON_BYTES}" in reply.json()["error"]["message"]


async def test_a_speech_request_the_size_of_a_book_is_refused() -> None:
    async with _client() as http:
        reply = await http.post("/v1/audio/speech",
                                json={"model": "x", "input": "a " * 100_000, "voice": "alloy"})
    assert reply.status_code == 413


async def test_an_upload_longer_than_the_cap_is_refused_without_decoding() -> None:
    seconds = int(MAX_UPLOAD_SECONDS) + 5
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 8000 * seconds)
    async with _client() as http:
        reply = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                files={"file": ("long.wav", buffer.getvalue(), "audio/wav")})
    assert reply.status_code == 400
    assert f"{seconds} s long" in reply.json()["error"]["message"]
