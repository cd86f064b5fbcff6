"""ModelThread: an offline model's blocking calls in a thread of its own, one hop each way."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from pipeflow.cascade.worker import ModelThread


async def test_calls_run_in_order_in_the_thread_and_come_back_on_the_loop() -> None:
    worker = ModelThread("pipeflow-test")
    seen: list[tuple[int, str]] = []

    def work(n: int, *, pause: float = 0.0) -> int:
        time.sleep(pause)
        seen.append((n, threading.current_thread().name))
        return n * 10

    loop_ticks = 0

    async def ticking() -> None:
        nonlocal loop_ticks
        while True:
            await asyncio.sleep(0.001)
            loop_ticks += 1

    ticker = asyncio.create_task(ticking())
    results = await asyncio.gather(worker.call(work, 1, pause=0.05), worker.call(work, 2))
    ticker.cancel()
    assert results == [10, 20]
    assert seen == [(1, "pipeflow-test"), (2, "pipeflow-test")]  # one thread, in order
    assert loop_ticks >= 10  # the loop ran while the call blocked its thread
    worker.close()


async def test_an_error_is_raised_in_the_caller_and_a_cancelled_wait_is_harmless() -> None:
    worker = ModelThread("pipeflow-test")

    def fail() -> None:
        raise ValueError("no voice named 'xx'")

    with pytest.raises(ValueError, match="no voice named"):
        await worker.call(fail)
    waiting = worker.call(time.sleep, 0.05)
    waiting.cancel()  # a barge-in stops waiting; the thread finishes the call and goes on
    assert await worker.call(len, "abc") == 3
    worker.close()
    assert await ModelThread("pipeflow-test").call(sum, [1, 2]) == 3


async def test_close_stops_the_thread_and_a_later_call_starts_another() -> None:
    worker = ModelThread("pipeflow-closing")
    await worker.call(int)
    worker.close()
    for _ in range(100):
        if not any(t.name == "pipeflow-closing" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)
    assert not any(t.name == "pipeflow-closing" for t in threading.enumerate())
    assert await worker.call(int, "7") == 7
    worker.close()


async def test_a_process_serving_calls_decodes_the_cascade_in_child_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker switches process decoding on: the stt stage then decodes as the local
    server does, in a child process, so pocketsphinx holds no GIL of the calls' process."""
    from pipeflow.asr import process
    from pipeflow.cascade.audio import OfflineTranscriber
    from pipeflow.stages.stt import SpeechToText
    from tests.speech import need_tts, spoken

    need_tts()
    script = tmp_path / "script.yaml"
    script.write_text('transcriber:\n  sentences: ["how much is a pizza", "one salad please"]\n'
                      'turns:\n  - match: [pizza]\n    steps: [{say: "Ten dollars."}]\n')
    monkeypatch.setitem(process._switch, "on", True)
    client = SpeechToText(script=str(script))._make_client()
    assert isinstance(client, OfflineTranscriber)
    recogniser = client.recogniser
    assert isinstance(recogniser, process.ProcessTranscriber)
    try:
        pcm = spoken("one salad please", 16000).astype("<i2").tobytes()
        assert await client.transcribe(pcm, 16000) == "one salad please"
        assert recogniser.pids and os.getpid() not in recogniser.pids
    finally:
        await client.aclose()
        recogniser.close()
        process.shared_process_transcriber.cache_clear()
