"""Load: 50 concurrent calls over HTTP on loopback, each with a real model session.

Every call starts, asks the local Realtime server a question and waits for the
spoken answer (a tool call runs on the way), reads its record and ends. The test
asserts zero errors within a time bound and reports the p99 request latency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np

from pipeflow.server import GatewayOptions, create_app
from tests.gateway_util import CALL_YAML, FAST, serving

CALLS = 50
TIME_LIMIT_S = 60.0


async def test_fifty_concurrent_calls_with_zero_errors(tmp_path: Path, capsys) -> None:
    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(tmp_path),
                                                overrides=FAST, max_calls=CALLS))
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []

    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        # One client (one keep-alive connection) per caller, as with real phones: a single
        # pool of 100 connections costs the shared event loop a scan of it per request.
        # They are made before the clock starts (each builds an SSL context).
        callers = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(CALLS)]

        async def one_call(index: int) -> None:
            call = f"load-{index}"
            caller = callers[index]

            async def request(kind: str, method: str, path: str, **kwargs) -> httpx.Response:
                started = time.perf_counter()
                response = await caller.request(method, path, **kwargs)
                latencies.setdefault(kind, []).append(time.perf_counter() - started)
                return response

            try:
                start = await request("start", "POST", f"/api/calls/{call}/start")
                assert start.status_code == 201, start.text
                turn = await request("text", "POST", f"/api/calls/{call}/text",
                                     json={"q": "How much is a pizza?", "wait": True})
                assert turn.status_code == 200 and "$10.00" in turn.json()["reply"], turn.text
                record = await request("get", "GET", f"/api/calls/{call}")
                assert record.json()["tool_calls"][0]["name"] == "get_product_info"
                end = await request("end", "POST", f"/api/calls/{call}/end")
                assert end.status_code == 200 and end.json()["state"] == "ended", end.text
            except Exception as exc:  # counted, so one failure does not hide the others
                errors.append(f"{call}: {type(exc).__name__}: {exc}")
            finally:
                await caller.aclose()

        began = time.perf_counter()
        async with asyncio.timeout(TIME_LIMIT_S):
            await asyncio.gather(*(one_call(i) for i in range(CALLS)))
        elapsed = time.perf_counter() - began
        listing = (await client.get("/api/calls")).json()

    assert errors == []
    assert listing["live"] == 0 and len(listing["calls"]) == CALLS
    every = np.array([x for values in latencies.values() for x in values])
    assert every.size == CALLS * 4
    lines = [f"{CALLS} concurrent calls, {every.size} requests in {elapsed:.1f} s, 0 errors;"
             f" p99 request latency {np.percentile(every, 99) * 1000:.0f} ms"]
    for kind, values in latencies.items():
        lines.append(f"  {kind:>5}: p50 {np.percentile(values, 50) * 1000:6.0f} ms   "
                     f"p99 {np.percentile(values, 99) * 1000:6.0f} ms")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
