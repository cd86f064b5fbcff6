"""The browser page in real headless Chromium, with a fake microphone fed from a WAV.

Chromium plays a caller recording (espeak-ng speech of an order) as its
microphone; the page streams it over the call WebSocket, plays the agent's
answers and shows the transcript, tool calls and order. The test asserts
what the page shows and the order stored in the call's SQLite database.
Needs Debian's chromium at /usr/bin/chromium (``make browser``); skipped
without it, except in CI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeflow.server import GatewayOptions, create_app
from tests.conftest import IN_CI
from tests.gateway_util import CALL_YAML, FAST, caller_samples, serving
from tests.speech import need_tts, write_wav

CHROMIUM = "/usr/bin/chromium"
CALL_ID = "browser-1"


def need_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = f"Chromium is not installed at {CHROMIUM} (run 'make browser')"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


async def test_a_browser_call_takes_an_order(tmp_path: Path) -> None:
    need_chromium()
    need_tts()
    from playwright.async_api import async_playwright

    wav = write_wav(tmp_path / "caller.wav", caller_samples(16000, gap_s=2.0, lead_s=1.0,
                                                            tail_s=2.0), 16000)
    out = tmp_path / "calls"
    app = create_app(CALL_YAML, GatewayOptions(no_auth=True, output_dir=str(out), overrides=FAST))
    async with serving(app) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
            ],
        )
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            reports: list[int] = []  # the page's played reports (what it played)
            page.on("websocket", lambda ws: ws.on("framesent", lambda payload: reports.append(
                json.loads(payload)["samples"]) if isinstance(payload, str)
                and '"played"' in payload else None))
            await page.goto(f"{base}/?call={CALL_ID}&aec=0")
            await page.click("#start")
            await page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('live')")
            await page.wait_for_function(
                "document.getElementById('agent').textContent.includes('order id: ORD-')",
                timeout=240_000)  # the whole call; a loaded machine takes longer
            # The order shows as placed when the tool answers; the goodbye comes after it.
            await page.wait_for_function(
                "document.getElementById('transcript').textContent"
                ".includes('Thank you for calling the corner shop')")
            transcript = await page.inner_text("#transcript")
            tools = await page.inner_text("#tools")
            agent_panel = await page.inner_text("#agent")
            await page.click("#hangup")
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'ended'")
        finally:
            await browser.close()
    assert problems == []
    assert reports and reports == sorted(reports) and reports[-1] > 24000  # > 1 s played
    assert transcript.startswith("Agent: Hello, and thank you for calling")
    assert "You: how much is a pizza" in transcript  # what the offline recogniser heard
    assert "Agent: Pizza: $10.00" in transcript
    assert "Thank you for calling the corner shop" in transcript
    assert "place_order({})" in tools and "add_to_order" in tools
    # The page shows the agent's summary hook (the order line's stored order).
    assert "items: 2 pizzas, 1 salad, 1 ice cream" in agent_panel
    assert "phone: 5551234567" in agent_panel

    from pipelines.orderline.storage import SqliteOrderRepository

    stored = await SqliteOrderRepository(out / CALL_ID / "orders.sqlite3").list()
    assert [o.items_text() for o in stored] == ["2 pizzas, 1 salad, 1 ice cream"]
    record = json.loads((out / CALL_ID / "call.json").read_text())
    assert record["agent"]["order id"] == stored[0].order_id
    assert record["turns"][0]["role"] == "agent"  # the greeting
    heard = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert len(heard) == 7  # one committed turn per spoken line of the WAV
