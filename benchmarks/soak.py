"""Soak and leak runs behind docs/reliability.md (``make soak``).

Two runs, each printing one JSON line of figures (and a readable summary):

- ``leak``: N sequential ``AgentSession`` s of pipelines/call.yaml, then N
  sequential calls through the gateway's HTTP API, all in this process.
  Memory (RSS), tasks and open descriptors are read after a warm-up and at
  the end; the goal is under 5 MB of growth and nothing left behind.
- ``calls``: ``pipeflow serve`` in its own process on loopback, and
  ``--concurrent`` callers on its WebSocket (the first calls ``--stagger``
  seconds apart), each sending synthesised caller
  speech paced at real time in 20 ms frames (silence between lines, as a
  phone line streams) and reading the agent's audio, one call after another
  for ``--minutes`` (a call started by then goes on to its end). Like a
  person, a caller speaks each line of the order
  (``pipelines.orderline.caller``) once the agent's answer to the one before
  has played, so every call should place an order; the orders stored in the
  calls' folders are counted. ``/healthz`` is asked every second: how long
  the gateway's event loop makes a request wait. The agent audio arrives as it
  plays on the call's playout clock; a chunk's lateness is its arrival
  after the time its run of audio says it was due (first chunk of the run +
  the audio before it). Errors are error frames, refused requests, lines
  not answered within 30 s and sockets closed before the call ended.

    .venv/bin/python -m benchmarks.soak leak --sessions 1000 --calls 1000
    .venv/bin/python -m benchmarks.soak calls --minutes 10 --concurrent 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipelines.orderline.caller import CALLER_LINES

ROOT = Path(__file__).resolve().parent.parent
CALL_YAML = ROOT / "pipelines" / "call.yaml"
FAST = ["model.speed=0", "model.first_audio_delay_ms=0"]
SESSION_FAST = [*FAST, "wav_sink.realtime=false"]  # agent audio counted as played at once
FRAME_MS = 20
RUN_GAP_S = 0.25  # agent audio this far apart starts a new run (a new answer)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _state() -> dict[str, float]:
    gc.collect()
    return {"rss_mb": _rss() / 1e6, "tasks": len(asyncio.all_tasks()), "fds": _fds()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- leak ----------------------------------------------------------------------------


async def _sessions(count: int, warm_up: int, out: Path) -> dict[str, Any]:
    from pipeflow.session import AgentSession

    before: dict[str, float] = {}
    began = time.perf_counter()
    for i in range(count):
        session = AgentSession.from_file(CALL_YAML, overrides=SESSION_FAST, session_id=f"s{i}",
                                         output_dir=str(out / "sessions"))
        async with session:
            reply = await session.ask("How much is a pizza?")
            if "$10.00" not in reply:
                raise AssertionError(f"session {i}: unexpected reply {reply!r}")
        if i == warm_up - 1:
            before = _state()
    after = _state()
    return {"run": "sessions", "count": count, "warm_up": warm_up, "before": before,
            "after": after, "seconds": round(time.perf_counter() - began, 1)}


async def _gateway_calls(count: int, warm_up: int, out: Path) -> dict[str, Any]:
    import uvicorn

    from pipeflow.server import GatewayOptions, create_app

    port = _free_port()
    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(out / "calls"),
                                                overrides=FAST))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    before: dict[str, float] = {}
    began = time.perf_counter()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(count):
                call = f"c{i}"
                for path, body in ((f"/api/calls/{call}/start", None),
                                   (f"/api/calls/{call}/text",
                                    {"q": "How much is a pizza?", "wait": True}),
                                   (f"/api/calls/{call}/end", None)):
                    response = await client.post(path, json=body)
                    if response.status_code >= 300:
                        raise AssertionError(f"{path}: {response.status_code} {response.text}")
                if i == warm_up - 1:
                    before = _state()
            after = _state()
    finally:
        server.should_exit = True
        await task
    return {"run": "gateway_calls", "count": count, "warm_up": warm_up, "before": before,
            "after": after, "seconds": round(time.perf_counter() - began, 1)}


async def leak(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.output)
    results = []
    if args.sessions:
        results.append(await _sessions(args.sessions, args.warm_up, out))
    if args.calls:
        results.append(await _gateway_calls(args.calls, args.warm_up, out))
    for r in results:
        b, a = r["before"], r["after"]
        r["growth_mb"] = round(a["rss_mb"] - b["rss_mb"], 2)
        print(f"{r['count']} sequential {r['run'].replace('_', ' ')}: RSS {b['rss_mb']:.1f} -> "
              f"{a['rss_mb']:.1f} MB after {r['warm_up']} warm-up ({r['growth_mb']:+.2f} MB), "
              f"tasks {b['tasks']} -> {a['tasks']}, fds {b['fds']} -> {a['fds']}, "
              f"{r['seconds']} s", flush=True)
    return results


# -- calls ---------------------------------------------------------------------------


ANSWER_TIMEOUT_S = 30.0  # a line the agent has not answered by then is an error
QUIET_S = 0.8  # the agent's answer has played once its audio has stopped this long


def _caller_lines(rate: int = 16000) -> list[bytes]:
    """Each caller line's speech (PCM16), spoken by an espeak-ng of its own so that
    every call and every run says the same audio."""
    from pipeflow.stages.caller import synthesize_apart

    return [speech.astype(np.int16).tobytes()
            for speech in synthesize_apart(list(CALLER_LINES), rate, "en-us", 175)]


class Tally:
    """What every caller saw."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.errors: list[str] = []
        self.calls = 0
        self.calls_ordered = 0
        self.agent_audio_s = 0.0
        self.tool_calls = 0
        self.unanswered = 0
        self.answer_s: list[float] = []
        """From the end of each line to the first audio of the agent's answer."""


class _Heard:
    """What one caller has heard so far: answers, agent audio, tools, the order."""

    def __init__(self) -> None:
        self.answers = 0
        self.last_audio = 0.0
        self.tools_open = 0
        self.order_id: str | None = None
        self.run_started = 0.0
        """When the latest run of agent audio (an answer) began."""

    def answered_since(self, answers: int, now: float) -> bool:
        """A final agent transcript came after ``answers`` and its audio has played."""
        return (self.answers > answers and self.tools_open == 0
                and now - self.last_audio >= QUIET_S)


async def _one_call(base: str, ws_base: str, call: str, lines: list[bytes],
                    tally: Tally) -> None:
    """One paced call: each line spoken after the agent's answer to the one before
    has played (silence streams meanwhile, as on a phone line), then hang up."""
    from websockets.asyncio.client import connect

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = await client.post(f"/api/calls/{call}/start", json={"sample_rate": 16000})
        if started.status_code != 201:
            tally.errors.append(f"{call}: start {started.status_code} {started.text[:200]}")
            return
        ended = asyncio.Event()
        heard = _Heard()
        async with connect(f"{ws_base}/api/calls/{call}/stream?sample_rate=16000",
                           max_size=2**22) as ws:

            async def read() -> None:
                run_start = run_audio = last = None
                async for message in ws:
                    now = time.monotonic()
                    if isinstance(message, bytes):
                        seconds = len(message) / 2 / 24000
                        if last is None or now - last > RUN_GAP_S + seconds:
                            run_start, run_audio = now, 0.0
                            heard.run_started = now
                        else:
                            tally.lateness.append(max(0.0, now - (run_start + run_audio)))
                        run_audio += seconds
                        last = heard.last_audio = now
                        tally.agent_audio_s += seconds
                        continue
                    event = json.loads(message)
                    kind = event.get("type")
                    if kind == "error" or (kind == "error_frame") or event.get("fatal"):
                        tally.errors.append(f"{call}: {message[:200]}")
                    elif kind == "tool_call":
                        tally.tool_calls += 1
                        heard.tools_open += 1
                    elif kind == "tool_result":
                        heard.tools_open = max(0, heard.tools_open - 1)
                    elif kind == "agent":
                        heard.order_id = (event.get("agent") or {}).get("order id") or None
                    elif kind == "transcript" and event.get("role") == "agent" and \
                            event.get("final", True):
                        heard.answers += 1
                    elif kind == "ended":
                        ended.set()
                        return

            reader = asyncio.create_task(read())
            step = 16000 * 2 * FRAME_MS // 1000
            silence = bytes(step)
            t0 = time.monotonic()
            sent = 0

            async def send(frame: bytes) -> None:
                nonlocal sent
                await ws.send(frame)
                sent += 1
                delay = t0 + sent * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

            async def until_answered(answers: int, what: str) -> bool:
                said = time.monotonic()
                deadline = said + ANSWER_TIMEOUT_S
                while not heard.answered_since(answers, time.monotonic()):
                    if reader.done() or time.monotonic() > deadline:
                        if not reader.done():
                            tally.unanswered += 1
                            tally.errors.append(f"{call}: no answer to {what} within "
                                                f"{ANSWER_TIMEOUT_S:g} s")
                        return False
                    await send(silence)
                if heard.run_started > said:
                    tally.answer_s.append(heard.run_started - said)
                return True

            if await until_answered(0, "the call's start (the greeting)"):
                for index, line in enumerate(lines):  # a call started goes on to its end
                    answers = heard.answers
                    for offset in range(0, len(line), step):
                        await send(line[offset:offset + step].ljust(step, b"\0"))
                    if not await until_answered(answers, f"line {index + 1} "
                                                f"({CALLER_LINES[index]!r})"):
                        break
            if heard.order_id:
                tally.calls_ordered += 1
            if not reader.done():
                await ws.send(json.dumps({"type": "end"}))
            try:
                async with asyncio.timeout(30):
                    await ended.wait()
            except TimeoutError:
                tally.errors.append(f"{call}: no 'ended' within 30 s of the end")
            reader.cancel()
    tally.calls += 1


def _orders_stored(out: Path) -> tuple[int, int]:
    """(orders, call folders holding one or more) in the soak's recordings."""
    import sqlite3

    orders = folders = 0
    for db in out.glob("*/orders.sqlite3"):
        with sqlite3.connect(db) as conn:
            count = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        orders += count
        folders += count > 0
    return orders, folders


async def _probe(base: str, done: asyncio.Event, waits: list[float]) -> None:
    """``GET /healthz`` every second: how long the gateway's loop makes a request wait."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while not done.is_set():
            began = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
            waits.append(time.monotonic() - began)
            await asyncio.sleep(1.0)


async def calls(args: argparse.Namespace) -> list[dict[str, Any]]:
    port = _free_port()
    out = Path(args.output) / "soak-calls"
    shutil.rmtree(out, ignore_errors=True)  # orders are counted from these folders
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(Path(args.output) / "soak-serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeflow.cli", "serve", str(CALL_YAML), "--no-auth",
         "--port", str(port), "-o", str(out), "--max-calls", str(args.concurrent * 2)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    tally = Tally()
    began = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            for _ in range(600):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        lines = await asyncio.to_thread(_caller_lines)
        until = time.monotonic() + args.minutes * 60
        waits: list[float] = []
        done = asyncio.Event()
        probe = asyncio.create_task(_probe(base, done, waits))

        async def caller(index: int) -> None:
            # Callers ring one after another, not all in the same 20 ms: 8 first turns
            # decoded at once would measure the start-up, not the steady state.
            await asyncio.sleep(index * args.stagger)
            n = 0
            while time.monotonic() < until:
                try:
                    await _one_call(base, ws_base, f"soak-{index}-{n}", lines, tally)
                except Exception as exc:  # counted: one failure must not hide the rest
                    tally.errors.append(f"soak-{index}-{n}: {type(exc).__name__}: {exc}")
                n += 1

        await asyncio.gather(*(caller(i) for i in range(args.concurrent)))
        done.set()
        await probe
    finally:
        server.terminate()
        code = server.wait(60)
        log.close()
    late = np.array(tally.lateness or [0.0]) * 1000
    health = np.array(waits or [0.0]) * 1000
    answer = np.array(tally.answer_s or [0.0])
    orders, ordered_calls = _orders_stored(out)
    result = {"run": "soak_calls", "minutes": args.minutes, "concurrent": args.concurrent,
              "stagger_s": args.stagger,
              "calls": tally.calls, "orders_stored": orders, "calls_with_an_order": ordered_calls,
              "calls_told_an_order_id": tally.calls_ordered, "unanswered": tally.unanswered,
              "agent_audio_s": round(tally.agent_audio_s, 1),
              "chunks": len(tally.lateness), "tool_calls": tally.tool_calls,
              "lateness_ms": {"p50": round(float(np.percentile(late, 50)), 1),
                              "p99": round(float(np.percentile(late, 99)), 1),
                              "max": round(float(late.max()), 1)},
              "answer_s": {"count": len(tally.answer_s),
                           "p50": round(float(np.percentile(answer, 50)), 2),
                           "p99": round(float(np.percentile(answer, 99)), 2),
                           "max": round(float(answer.max()), 2)},
              "healthz_ms": {"count": len(waits), "p50": round(float(np.percentile(health, 50)), 1),
                             "p99": round(float(np.percentile(health, 99)), 1),
                             "max": round(float(health.max()), 1)},
              "errors": len(tally.errors), "first_errors": tally.errors[:5],
              "server_exit": code, "seconds": round(time.monotonic() - began, 1)}
    print(f"{args.minutes:g} min soak, {args.concurrent} concurrent paced calls: "
          f"{tally.calls} calls, {orders} orders stored ({ordered_calls} calls with an order), "
          f"{tally.tool_calls} tool calls, {tally.agent_audio_s:.0f} s of agent audio in "
          f"{len(tally.lateness)} chunks, lateness p50 {result['lateness_ms']['p50']} ms, "
          f"p99 {result['lateness_ms']['p99']} ms, max {result['lateness_ms']['max']} ms; "
          f"answers began p50 {result['answer_s']['p50']} s, p99 {result['answer_s']['p99']} s "
          f"after the line; /healthz p99 {result['healthz_ms']['p99']} ms, "
          f"max {result['healthz_ms']['max']} ms; "
          f"{len(tally.errors)} errors; gateway exit {code}", flush=True)
    return [result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.environ.get("SOAK_OUT", "out/soak"),
                        help="folder for recordings and the gateway's log (out/soak)")
    sub = parser.add_subparsers(dest="run", required=True)
    p = sub.add_parser("leak", help="sequential sessions and gateway calls in one process")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--warm-up", type=int, default=100)
    p = sub.add_parser("calls", help="concurrent paced calls through the gateway")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--stagger", type=float, default=5.0,
                   help="seconds between the callers' first calls (5)")
    args = parser.parse_args(argv)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    results = asyncio.run(leak(args) if args.run == "leak" else calls(args))
    for r in results:
        print(json.dumps(r))
    if args.run == "leak":
        return 0 if all(r["growth_mb"] < 5 and r["after"]["tasks"] <= r["before"]["tasks"]
                        and r["after"]["fds"] <= r["before"]["fds"] for r in results) else 1
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
