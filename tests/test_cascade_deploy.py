"""``pipelines/call-cascade.yaml`` run unchanged by the worker and by the call gateway.

The worker takes it as a job's entry from its queue; the gateway serves it to
a fake Twilio caller whose speech streams in as mu-law media; ``pipeflow run``
runs it with all three stages over HTTP to a local server. Each stores the
same order as ``pipelines/call.yaml``.

The over-HTTP call runs in processes of its own (the server, the CLI), started
with this module and running while the worker's and the gateway's calls run
here: the three calls take about as long as the longest two, not as all three.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeflow.worker import Worker, WorkerOptions
from pipeflow.worker.queues.base import Job
from pipeflow.worker.queues.memory import MemoryQueue
from tests.speech import need_tts

ROOT = Path(__file__).resolve().parent.parent
CASCADE_YAML = ROOT / "pipelines" / "call-cascade.yaml"
# The caller's waits count its own (3x) stream time: 40 s / 30 s of wall clock.
PATIENT = {"caller.speed": 3, "wav_sink.realtime": False, "caller.wait_for_greeting_s": 120,
           "caller.max_wait_s": 90}
"""3x real time; the caller waits for the greeting to be played (event-driven) however
long a loaded machine takes to start the models, instead of 8 s of stream time."""


class HttpRun:
    """The over-HTTP call in the background: a local server and ``pipeflow run``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "ORDERLINE_DB")}
        env["LOCAL_KEY"] = "sk-local"
        script = ROOT / "pipelines" / "orderline" / "script.yaml"
        self.server_log = out / "server.log"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "pipeflow.cli", "realtime-server", "--port", "0",
             "--script", str(script), "--key", "sk-local"],
            cwd=ROOT, env=env, stdout=self.server_log.open("w"), stderr=subprocess.STDOUT)
        url = self._server_url()
        sets = [f"{k}={v}" for k, v in PATIENT.items()]
        for stage in ("stt", "model", "tts"):
            sets += [f"{stage}.base_url={url}", f"{stage}.api_key_env=LOCAL_KEY"]
        self.log = out / "run.log"
        self.call = subprocess.Popen(
            [sys.executable, "-m", "pipeflow.cli", "run", str(CASCADE_YAML), "-o", str(out),
             *[arg for s in sets for arg in ("--set", s)]],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def _server_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"base_url: (http://\S+/v1)", self.server_log.read_text())
            if found:
                return found.group(1)
            if self.server.poll() is not None:
                raise AssertionError("the local server ended: " + self.server_log.read_text())
            time.sleep(0.05)
        raise AssertionError("the local server did not start: " + self.server_log.read_text())

    def output(self) -> str:
        return self.log.read_text()[-3000:] + "\n" + self.server_log.read_text()[-2000:]

    def close(self) -> None:
        for proc in (self.call, self.server):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "ORDERLINE_DB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module", autouse=True)
def http_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpRun]:
    """Started before this module's first test; its test, the last, waits for it."""
    need_tts()
    run = HttpRun(tmp_path_factory.mktemp("cascade-http"))
    try:
        yield run
    finally:
        run.close()


async def stored(path: Path) -> list:  # type: ignore[type-arg]
    from pipelines.orderline.storage import SqliteOrderRepository

    return await SqliteOrderRepository(path).list()


async def test_the_worker_runs_the_cascade_call_from_its_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_tts()
    monkeypatch.setenv("PIPEFLOW_OUTPUT", str(tmp_path))
    queue = MemoryQueue()
    job = await queue.submit(Job(entry=str(CASCADE_YAML), params=dict(PATIENT)))
    worker = Worker(WorkerOptions(max_jobs=1), queue, poll_interval=0.05)
    await asyncio.wait_for(worker.run(until_idle=True), 240)
    status = await queue.status(job.id)
    assert status is not None and status.state == "completed", status
    orders = await stored(tmp_path / job.id / "orders.sqlite3")
    assert len(orders) == 1
    assert orders[0].items_text() == "2 pizzas, 1 salad, 1 ice cream"
    assert orders[0].phone == "5551234567" and "Main Street" in orders[0].address


async def test_the_gateway_serves_the_cascade_call_to_a_twilio_caller(tmp_path: Path) -> None:
    need_tts()
    from pipeflow.audio.g711 import samples_to_ulaw
    from pipeflow.server import GatewayOptions, create_app
    from pipeflow.stages.caller import synthesize_apart
    from tests.gateway_util import PHONE_BAND_ADDRESS, PHONE_BAND_LINES, PHONE_BAND_NUMBER, serving
    from tests.test_gateway_twilio import (
        CHUNK,
        SID,
        _post_voice,
        _read_and_echo_marks,
        connect,
        media_message,
        start_message,
    )

    # The lines spoken by an espeak-ng of their own (the same audio every run), each
    # silence longer than the end of turn's longest wait (1.5 s) on stream time.
    silence = np.zeros(8000 * 2, np.int16)
    spoken = synthesize_apart(list(PHONE_BAND_LINES), 8000, "en-us", 175)
    ulaw = samples_to_ulaw(np.concatenate([x for line in spoken for x in (line, silence)]))
    app = create_app(CASCADE_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path)))
    received: list[dict] = []  # type: ignore[type-arg]
    async with serving(app) as base:
        await asyncio.to_thread(_post_voice, base)
        async with connect(base.replace("http", "ws") + "/twilio/media") as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(start_message(call_id="CA-cascade-1"))
            reader = asyncio.create_task(_read_and_echo_marks(ws, received))
            for index in range(0, len(ulaw), CHUNK):  # 20 ms each, 8x real time
                await ws.send(media_message(ulaw[index : index + CHUNK], index // CHUNK))
                if index // CHUNK % 8 == 7:
                    await asyncio.sleep(0.02)
            call = app.state.calls.get("CA-cascade-1")
            await call.session.wait_for(
                lambda f: getattr(f, "name", "") == "place_order" and hasattr(f, "output"),
                timeout=60, after=0)
            await ws.send(json.dumps({"event": "stop", "streamSid": SID}))
            await asyncio.wait_for(reader, 30)
        await call.wait_ended()
    orders = await stored(tmp_path / "CA-cascade-1" / "orders.sqlite3")
    assert len(orders) == 1
    assert orders[0].items_text() == "2 pizzas, 1 salad, 1 ice cream"
    assert orders[0].phone == PHONE_BAND_NUMBER and orders[0].address == PHONE_BAND_ADDRESS
    assert {"media", "mark"} <= {m["event"] for m in received}


def test_the_cascade_call_over_http_to_the_local_server(http_run: HttpRun) -> None:
    """All three stages pointed at one local server (chat, transcriptions, speech):
    the same order, through the HTTP clients a real provider gets."""
    import sqlite3

    try:
        code = http_run.call.wait(240)
    except subprocess.TimeoutExpired:
        raise AssertionError("the call over HTTP did not end in 240 s: "
                             + http_run.output()) from None
    assert code == 0, http_run.output()
    out = http_run.out
    rows = sqlite3.connect(out / "orders.sqlite3").execute(
        "select phone, address, lines from orders").fetchall()
    assert len(rows) == 1, http_run.output()
    phone, address, lines = rows[0]
    assert phone == "5551234567" and address == "12 Main Street, Springfield"
    items = {line["name"]: line["quantity"] for line in json.loads(lines)}
    assert items == {"pizza": 2, "salad": 1, "ice cream": 1}
    frames = (out / "frames.jsonl").read_text()
    assert '"type":"error"' not in frames
