"""Decoding never holds the event loop of a process serving calls.

pocketsphinx holds the GIL while it decodes, so in a thread a long turn of
noise froze the gateway: eight 1 MB POSTs and a commit took ``/healthz`` to
52 s and every other call lost its model. The gateway decodes in child
processes (``pipeflow.asr.process``) and a turn buffers at most
``max_turn_audio_s`` of audio (``ServerOptions``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from pipeflow.asr.options import TranscriberOptions
from pipeflow.asr.process import ProcessTranscriber
from pipeflow.errors import LocalError
from pipeflow.realtime.server_session import ServerOptions, ServerSession
from pipeflow.server import GatewayOptions, create_app
from tests.gateway_util import CALL_YAML, FAST, serving

pytest.importorskip("pocketsphinx")

OPTIONS = TranscriberOptions(sentences=("how much is a pizza", "two pizzas please"))
NOISE_POSTS = 8
BODY = 1_000_000  # under the gateway's 1 MiB body limit


def noise(n_bytes: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-12000, 12000, n_bytes // 2, dtype=np.int16).tobytes()


def test_a_process_transcriber_hears_what_the_thread_one_hears() -> None:
    from pipeflow.asr.options import build_transcriber
    from tests.speech import speech_track

    pcm = speech_track(("how much is a pizza",), pauses=(), sample_rate=16000).samples.tobytes()
    in_thread = build_transcriber(OPTIONS).transcribe(pcm, 16000)
    decoder = ProcessTranscriber(OPTIONS, processes=1)
    try:
        assert decoder.transcribe(pcm, 16000) == in_thread
        assert "pizza" in in_thread
        # Keyword arguments reach the wrapped transcriber (this one knows no 'bogus').
        with pytest.raises(LocalError, match="bogus"):
            decoder.transcribe(pcm, 16000, bogus=1)
        # Bad input is refused with the transcriber's own error.
        with pytest.raises(ValueError, match="transcriber input"):
            decoder.transcribe(b"\x00", 16000)
    finally:
        decoder.close()


def test_a_dead_decoding_process_is_replaced() -> None:
    decoder = ProcessTranscriber(OPTIONS, processes=1)
    try:
        decoder.warm()
        (pid,) = decoder.pids
        os.kill(pid, 9)
        with pytest.raises(LocalError, match="died"):
            decoder.transcribe(noise(3200), 16000)
        assert decoder.transcribe(noise(3200), 16000) == decoder.transcribe(noise(3200), 16000)
    finally:
        decoder.close()


def test_one_turn_buffers_at_most_max_turn_audio_s() -> None:
    session = ServerSession(options=ServerOptions(max_turn_audio_s=1.0))
    session.start(0.0)
    session.receive_data(b'{"type":"session.update","session":{"type":"realtime",'
                         b'"audio":{"input":{"turn_detection":null}}}}', 0.0)
    second = base64.b64encode(noise(48000)).decode()  # 1 s at 24 kHz
    for _ in range(3):
        session.receive_data(msgspec.json.encode(
            {"type": "input_audio_buffer.append", "audio": second}), 0.1)
    session.receive_data(b'{"type":"input_audio_buffer.commit"}', 0.2)
    sent = [msgspec.json.decode(x) for x in session.data_to_send(10.0, 1000)]
    errors = [e["error"] for e in sent if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["input_audio_buffer_too_large"]  # once per turn
    assert "1 s" in errors[0]["message"]
    assert any(e["type"] == "input_audio_buffer.committed" for e in sent)
    # the next turn starts empty and may hold its own second again
    session.receive_data(msgspec.json.encode(
        {"type": "input_audio_buffer.append", "audio": second}), 11.0)
    assert not [e for e in map(msgspec.json.decode, session.data_to_send(12.0, 1000))
                if e["type"] == "error"]


async def test_noise_turns_do_not_freeze_healthz_or_other_calls(tmp_path: Path, capsys) -> None:
    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                                                overrides=FAST))
    pings: list[float] = []
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        for call in ("noisy", "quiet"):
            assert (await client.post(f"/api/calls/{call}/start")).status_code == 201
        stop = asyncio.Event()

        async def ping() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=60) as pinger:
                last = time.perf_counter()
                while not stop.is_set():
                    assert (await pinger.get("/healthz")).status_code == 200
                    now = time.perf_counter()
                    pings.append(now - last)  # the request and the pause before it
                    await asyncio.sleep(0.05)
                    last = now

        pinger = asyncio.create_task(ping())
        began = time.perf_counter()
        for i in range(NOISE_POSTS):
            sent = await client.post("/api/calls/noisy/audio?sample_rate=16000",
                                     content=noise(BODY, i),
                                     headers={"content-type": "application/octet-stream"})
            assert sent.status_code == 202, sent.text
        assert (await client.post("/api/calls/noisy/commit")).status_code == 202
        # Another call keeps talking to its model while the noise is decoded.
        asked = time.perf_counter()
        async with httpx.AsyncClient(base_url=base, timeout=60) as other:
            answer = await other.post("/api/calls/quiet/text",
                                      json={"q": "How much is a pizza?", "wait": True})
        answered = time.perf_counter() - asked
        assert answer.status_code == 200 and "$10.00" in answer.json()["reply"], answer.text
        await asyncio.sleep(3.0)  # the decode of the capped turn runs meanwhile
        stop.set()
        await pinger
        elapsed = time.perf_counter() - began
        noisy = (await client.get("/api/calls/noisy")).json()
        for call in ("noisy", "quiet"):
            await client.post(f"/api/calls/{call}/end")

    worst = max(pings)
    with capsys.disabled():
        print(f"\n{NOISE_POSTS} noise POSTs of {BODY} bytes + commit: {len(pings)} /healthz "
              f"in {elapsed:.1f} s, gap between answers p50 {np.percentile(pings, 50) * 1000:.0f}"
              f" ms, max {worst * 1000:.0f} ms; the other call answered in {answered:.2f} s")
    assert noisy["state"] == "active"
    frames = (tmp_path / "noisy" / "frames.jsonl").read_text()
    assert "input_audio_buffer_too_large" in frames  # the caller's side is told, once
    assert worst < 2.0, f"/healthz went unanswered {worst:.1f} s while the noise was decoded"
    assert answered < 5.0, f"the other call's answer took {answered:.1f} s"
